"""Model FLOPs of training, from the architecture and the tokens the layers ran on.

A compute cost that does not depend on the machine or on what else it was doing (wall time
does): the standard dense-transformer estimate (Kaplan et al. 2020, "Scaling laws for neural
language models", section 2.1; the same count as Chinchilla's appendix F without the
embeddings), per encoder layer and per sequence of ``s`` tokens:

* forward: ``2 x P x s`` for the layer's matrix multiplications, ``P = 4 d^2 + 2 d f`` the
  weights of the query / key / value / output projections and of the two feed-forward matrices
  (hidden size ``d``, feed-forward size ``f``; biases, LayerNorm, softmax and GELU are O(d) per
  token and left out), plus ``4 x d x s^2`` for the attention itself (the ``s x s`` scores
  Q K^T and their weighted sum over V, ``2 d s^2`` each);
* backward: ``BACKWARD_FACTOR`` (2) x forward for the layers that train (the gradients with
  respect to the inputs and to the weights, one matrix multiplication each);
* frozen layers run forward only (no gradient), and only where the activation cache
  (:mod:`hybridir.activation_cache`) did not have the text: a cache hit costs nothing;
* the embedding lookup, pooling and the loss (``2 B^2 d`` per step, below 0.1% here) are not counted.

Tokens are the PADDED tokens each tensor holds (texts are padded to the longest of their
batch, :meth:`hybridir.model.BiEncoder.tokenize`): what the layers actually computed, so a
larger batch, padded to a longer longest text, pays for its padding.

The training loop (:func:`hybridir.train.train`) adds these up per step and reports them with
its metrics (``cost/flops``, ``cost/flops_trained``; :data:`FLOPS`, :data:`FLOPS_TRAINED`).
"""

from __future__ import annotations

from dataclasses import dataclass

BACKWARD_FACTOR = 2.0

# The training loop's cost metrics (summed over DDP ranks, cumulative over the run).
FLOPS = "cost/flops"  # every layer that ran in training steps: trained (fwd + bwd), frozen (fwd, cache misses)
FLOPS_TRAINED = "cost/flops_trained"  # the trained layers only: independent of the activation cache's state
CPU_SECONDS = "cost/cpu_s"  # process CPU time of the training steps (hybridir.timing), summed over ranks


@dataclass(frozen=True)
class LayerShape:
    """What one encoder layer's FLOPs depend on: hidden size ``d`` and feed-forward size ``f``."""

    hidden: int
    intermediate: int

    @classmethod
    def of(cls, encoder_config) -> "LayerShape":
        """From a transformers config (BERT / XLM-R: ``hidden_size``, ``intermediate_size``)."""
        return cls(int(encoder_config.hidden_size), int(encoder_config.intermediate_size))

    @property
    def matmul_params(self) -> int:
        """Weights of the layer's matrix multiplications: 4 d^2 (attention) + 2 d f (feed-forward)."""
        return 4 * self.hidden * self.hidden + 2 * self.hidden * self.intermediate

    def forward_flops(self, tokens: float, squared: float) -> float:
        """Forward FLOPs of one layer over sequences with ``tokens`` = sum of their lengths and
        ``squared`` = sum of their squared lengths (both additive over batches)."""
        return 2.0 * self.matmul_params * tokens + 4.0 * self.hidden * squared


def padded_work(input_ids_shape) -> tuple[int, int]:
    """(tokens, squared lengths) of a padded ``[rows, length]`` tensor: rows x length, rows x length^2."""
    rows, length = int(input_ids_shape[0]), int(input_ids_shape[1])
    return rows * length, rows * length * length


@dataclass(frozen=True)
class TrainingFlops:
    """FLOPs of training steps of a model whose top ``trained_layers`` of ``num_layers`` train."""

    shape: LayerShape
    num_layers: int
    trained_layers: int

    def __post_init__(self) -> None:
        if not 1 <= self.trained_layers <= self.num_layers:
            raise ValueError(f"trained_layers={self.trained_layers} must be in 1..num_layers={self.num_layers}")

    @property
    def frozen_layers(self) -> int:
        return self.num_layers - self.trained_layers

    def trained(self, tokens: float, squared: float) -> float:
        """The trained layers over these sequences: forward + backward."""
        return self.trained_layers * (1.0 + BACKWARD_FACTOR) * self.shape.forward_flops(tokens, squared)

    def frozen(self, tokens: float, squared: float) -> float:
        """The frozen layers computed over these sequences (cache misses only): forward."""
        return self.frozen_layers * self.shape.forward_flops(tokens, squared)
