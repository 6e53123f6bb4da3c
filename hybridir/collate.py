"""Turn a batch of :class:`~hybridir.batching.PairRef` into model inputs.

Queries and passages are tokenized separately, each padded only to its own longest text
(dynamic padding): a query batch never pays for the length of the passages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hybridir.batching import PairRef
from hybridir.data.types import ParallelPairs
from hybridir.model import BiEncoder


@dataclass(frozen=True)
class PairBatch:
    """Tokenized queries and passages of one (local) batch; row i of each is pair i."""

    queries: dict[str, Tensor]
    passages: dict[str, Tensor]

    @property
    def num_pairs(self) -> int:
        return int(self.queries["input_ids"].shape[0])

    @property
    def num_tokens(self) -> int:
        """Real (non-padding) tokens of queries and passages together, for tokens/s."""
        return int(self.queries["attention_mask"].sum() + self.passages["attention_mask"].sum())

    def pinned(self, device: torch.device | str) -> "PairBatch":
        """Page-locked host copies when the batch will go to a GPU (done ahead, in the prefetcher)."""
        if torch.device(device).type != "cuda":
            return self
        pin = lambda inputs: {k: v.pin_memory() for k, v in inputs.items()}  # noqa: E731
        return PairBatch(pin(self.queries), pin(self.passages))

    def to(self, device: torch.device | str) -> "PairBatch":
        """The batch on ``device``; towards a GPU through pinned memory, without waiting for the copy."""
        device = torch.device(device)
        pin = device.type == "cuda"
        move = lambda inputs: {k: to_device(v, device, pin) for k, v in inputs.items()}  # noqa: E731
        return PairBatch(move(self.queries), move(self.passages))


def to_device(tensor: Tensor, device: torch.device, pin: bool) -> Tensor:
    """Host -> device copy; pinned source memory lets a CUDA copy run asynchronously."""
    if pin and tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def pair_texts(refs: Sequence[PairRef], pairs: ParallelPairs) -> tuple[list[str], list[str]]:
    """The query and passage texts of ``refs`` (query in ``query_lang``, passage in ``passage_lang``)."""
    try:
        queries = [pairs.queries[ref.query_lang][ref.item] for ref in refs]
        passages = [pairs.passages[ref.passage_lang][ref.item] for ref in refs]
    except (KeyError, IndexError) as exc:
        raise ValueError(f"batch refers to a pair missing from {pairs.name!r}: {exc!r}") from exc
    return queries, passages


def collate_pairs(
    refs: Sequence[PairRef],
    pairs: ParallelPairs,
    model: BiEncoder,
    max_query_length: int | None = None,
    max_passage_length: int | None = None,
) -> PairBatch:
    """Tokenize the pairs of ``refs`` with the model's prefixes and dynamic padding."""
    if not refs:
        raise ValueError("collate_pairs() got an empty batch")
    queries, passages = pair_texts(refs, pairs)
    return PairBatch(
        queries=model.tokenize(queries, "query", max_query_length),
        passages=model.tokenize(passages, "passage", max_passage_length),
    )
