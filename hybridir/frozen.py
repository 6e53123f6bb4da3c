"""Partial fine-tuning: a transformer encoder split into a frozen bottom and a trainable top.

``model.train_layers: K`` trains only the top K transformer layers (and the pooling on top).
The embeddings and the lower N-K layers form the *frozen bottom*: no gradients, and always in
eval mode (no dropout), so that their output for a text is a pure function of its token ids.
That is what lets :class:`FrozenBottom` keep those hidden states in an
:class:`~hybridir.activation_cache.ActivationCache` and skip the bottom entirely the next time
the text is seen: the trainable top then receives the cached states, padded back to the batch.

Exactness: padding positions of the cached batch are zeros instead of the bottom's output for
padding tokens. Those positions are masked out of every attention in the top layers and out of
the pooling, so the embeddings of real tokens are the same function; what differs is only the
floating-point summation order of differently padded matrix products (measured ~1e-6 in fp32
on CPU; tests/test_frozen.py checks 1e-5).

The split works for the BERT-like encoders the presets use (BERT, XLM-RoBERTa: ``embeddings``
plus ``encoder.layer``); other architectures fail with a clear error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers.masking_utils import create_bidirectional_mask

from hybridir.activation_cache import ActivationCache, entry_key

# Settings of the encoder config that change what the bottom computes (besides its weights).
_ARCHITECTURE_KEYS = (
    "model_type", "hidden_size", "num_attention_heads", "intermediate_size", "hidden_act",
    "layer_norm_eps", "position_embedding_type", "pad_token_id", "_attn_implementation",
)  # fmt: skip


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-like encoder, bottom first."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(encoder, "embeddings"):
        raise ValueError(
            f"model.train_layers needs a BERT-like encoder (embeddings + encoder.layer); "
            f"{type(encoder).__name__} has another layout"
        )
    return layers


def run_layers(encoder: nn.Module, hidden: Tensor, attention_mask: Tensor, layers: Sequence[nn.Module]) -> Tensor:
    """Apply ``layers`` to ``hidden`` [n, s, d] with the attention mask the encoder itself builds."""
    mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=attention_mask)
    for layer in layers:
        output = layer(hidden, mask)
        hidden = output[0] if isinstance(output, tuple) else output
    return hidden


def check_train_layers(train_layers: int, total_layers: int, name: str) -> None:
    if not 1 <= train_layers <= total_layers:
        raise ValueError(f"model.train_layers={train_layers}: {name!r} has {total_layers} transformer layers (1 .. {total_layers})")


def _on_device(values: list[Tensor], device: torch.device) -> Tensor:
    """Concatenate per-text states on ``device``.

    Entries read from the cache live in host memory while freshly computed ones live where
    the model runs (a GPU): the host entries are concatenated and copied in ONE transfer
    (pinned, asynchronous on CUDA), then every entry is put back in its row order.
    """
    host = [row for row, value in enumerate(values) if value.device != device]
    if not host:
        return torch.cat(values)
    block = torch.cat([values[row] for row in host])
    if device.type == "cuda":
        block = block.pin_memory()
    moved = block.to(device, non_blocking=True).split([values[row].shape[0] for row in host])
    placed = list(values)
    for row, value in zip(host, moved):
        placed[row] = value
    return torch.cat(placed)


class FrozenBottom:
    """The embeddings and the first ``num_layers`` layers of ``encoder``, frozen.

    It is not a module of its own: its parameters stay in the encoder (and in its saved
    checkpoints); this object only freezes them, runs them, and caches what they produce.
    """

    def __init__(self, encoder: nn.Module, num_layers: int):
        layers = encoder_layers(encoder)
        if not 0 <= num_layers < len(layers):
            raise ValueError(f"a frozen bottom of {num_layers} layers leaves nothing to train in {len(layers)}")
        self.encoder = encoder
        self.num_layers = num_layers
        self.modules: list[nn.Module] = [encoder.embeddings, *layers[:num_layers]]
        for module in self.modules:
            module.requires_grad_(False)
        self.set_eval()
        self._cache_root: Path | None = None
        self._max_bytes = 0
        self._caches: dict[str, ActivationCache] = {}
        self._fingerprint: str | None = None
        # What the frozen layers computed (cache hits excluded), for hybridir.flops: the sum of
        # the padded sequence lengths and of their squares over every call of compute().
        self.computed_tokens = 0
        self.computed_squared = 0

    def set_eval(self) -> None:
        """Frozen modules never use dropout, also while the top trains."""
        for module in self.modules:
            module.eval()

    # ------------------------------------------------------------------ computing
    @torch.no_grad()
    def compute(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The bottom's hidden states [n, s, d] (no autograd, no dropout)."""
        rows, length = int(input_ids.shape[0]), int(input_ids.shape[1])
        self.computed_tokens += rows * length
        self.computed_squared += rows * length * length
        hidden = self.encoder.embeddings(input_ids=input_ids)
        return run_layers(self.encoder, hidden, attention_mask, self.modules[1:])

    def states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Like :meth:`compute`, read from the activation cache where it has the text."""
        if self._cache_root is None:
            return self.compute(input_ids, attention_mask)
        real = attention_mask.bool()
        ids_cpu, real_cpu = input_ids.cpu(), real.cpu()
        keys = [entry_key(ids_cpu[row][real_cpu[row]]) for row in range(len(ids_cpu))]
        cache = self._cache(self._precision(input_ids.device))
        found = cache.get_many(keys)
        missing = [row for row, value in enumerate(found) if value is None]
        if missing:
            rows = torch.tensor(missing, device=input_ids.device)
            sub_mask = attention_mask[rows]
            columns = sub_mask.any(0)  # only as long as the longest missing text
            computed = self.compute(input_ids[rows][:, columns], sub_mask[:, columns])
            sub_real = sub_mask[:, columns].bool()
            values = [computed[j][sub_real[j]] for j in range(len(missing))]
            cache.put_many([keys[row] for row in missing], values)
            for row, value in zip(missing, values):
                found[row] = value
        states = _on_device(found, input_ids.device)
        hidden = torch.zeros(*input_ids.shape, states.shape[-1], dtype=states.dtype, device=input_ids.device)
        # Boolean indexing enumerates rows in order and positions left to right: the same
        # order as the concatenated per-text states.
        hidden[real] = states
        return hidden

    # ------------------------------------------------------------------ caching
    def attach_cache(self, root: str | Path, max_bytes: int) -> None:
        self._cache_root = Path(root).expanduser()
        self._max_bytes = int(max_bytes)
        self._caches = {}

    @property
    def cache_attached(self) -> bool:
        return self._cache_root is not None

    def flush(self) -> None:
        for cache in self._caches.values():
            cache.flush()

    def cache_stats(self) -> dict[str, int]:
        totals = {"hits": 0, "misses": 0, "written": 0, "corrupt": 0}
        for cache in self._caches.values():
            for key, value in cache.stats.items():
                totals[key] += value
        return totals

    def _precision(self, device: torch.device) -> str:
        try:
            autocast = torch.is_autocast_enabled(device.type)
        except RuntimeError:  # a device type autocast does not know (meta) never autocasts
            autocast = False
        if autocast:
            return f"autocast-{torch.get_autocast_dtype(device.type)}".replace("torch.", "")
        return str(self.encoder.embeddings.word_embeddings.weight.dtype).replace("torch.", "")

    def _cache(self, precision: str) -> ActivationCache:
        if precision not in self._caches:
            description = {
                "weights_fingerprint": self.fingerprint(),
                "frozen_layers": self.num_layers,
                "precision": precision,
                "architecture": {k: getattr(self.encoder.config, k, None) for k in _ARCHITECTURE_KEYS},
            }
            namespace = hashlib.blake2b(json.dumps(description, sort_keys=True).encode(), digest_size=12).hexdigest()
            description["model"] = str(getattr(self.encoder.config, "name_or_path", ""))
            self._caches[precision] = ActivationCache(self._cache_root, namespace, description, self._max_bytes)
        return self._caches[precision]

    def fingerprint(self) -> str:
        """A hash of the frozen weights (and buffers): equal exactly when the bottom is."""
        if self._fingerprint is None:
            self._fingerprint = frozen_fingerprint(self.encoder, self.num_layers)
        return self._fingerprint


def frozen_fingerprint(encoder: nn.Module, num_layers: int) -> str:
    """A hash of the embeddings and the first ``num_layers`` layers of ``encoder`` (weights and
    buffers): what a partially fine-tuned model leaves frozen, equal exactly when they are."""
    digest = hashlib.blake2b(digest_size=16)
    for index, module in enumerate([encoder.embeddings, *encoder_layers(encoder)[:num_layers]]):
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            data = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{index}.{name}:{data.dtype}:{tuple(tensor.shape)};".encode())
            digest.update(data.view(torch.uint8).numpy())
    return digest.hexdigest()
