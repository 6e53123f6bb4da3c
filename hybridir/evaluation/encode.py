"""Encode a RetrievalCorpus once per (model, dataset) and keep the embeddings with their ids.

Every distinct query text and every distinct candidate text is encoded exactly once, however
many settings (monolingual, cross-lingual, multilingual) later rank them. Texts are encoded in
order of token length so that each batch pads to nearly its own length, then put back in
their original order.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from hybridir.data.types import RetrievalCorpus
from hybridir.progress import progress_bar

if TYPE_CHECKING:
    from hybridir.model import BiEncoder

log = logging.getLogger(__name__)

_INDEX_FILE = "index.json"


@dataclass(frozen=True)
class EmbeddingTable:
    """Embeddings [n, d] (float32, row i belongs to ids[i])."""

    ids: list[str]
    vectors: np.ndarray

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids but embeddings of shape {self.vectors.shape}")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("duplicate ids in an embedding table")

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class EncodedCorpus:
    """Query and candidate embeddings of a RetrievalCorpus, per language, plus its relevance.

    queries / candidates: lang -> EmbeddingTable; relevant: query_id -> {lang: candidate_id}
    (as in RetrievalCorpus). ``info`` holds provenance: model name, encode time, text counts.
    """

    name: str
    queries: dict[str, EmbeddingTable]
    candidates: dict[str, EmbeddingTable]
    relevant: dict[str, dict[str, str]]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        dims = {t.vectors.shape[1] for t in [*self.queries.values(), *self.candidates.values()]}
        if len(dims) > 1:
            raise ValueError(f"embeddings of different dimensions in one corpus: {sorted(dims)}")

    @property
    def encode_s(self) -> float:
        return float(self.info.get("encode_s", 0.0))

    @classmethod
    def from_arrays(
        cls,
        name: str,
        query_ids: Mapping[str, list[str]],
        query_embeddings: Mapping[str, np.ndarray],
        candidate_ids: Mapping[str, list[str]],
        candidate_embeddings: Mapping[str, np.ndarray],
        relevant: Mapping[str, Mapping[str, str]],
        info: dict | None = None,
    ) -> "EncodedCorpus":
        """Build from plain per-language id lists and embedding arrays (e.g. from another tool)."""
        for kind, ids, arrays in (("query", query_ids, query_embeddings), ("candidate", candidate_ids, candidate_embeddings)):
            if set(ids) != set(arrays):
                raise ValueError(f"{kind} ids and embeddings cover different languages: {sorted(ids)} vs {sorted(arrays)}")
        return cls(
            name=name,
            queries={l: EmbeddingTable(list(query_ids[l]), np.asarray(query_embeddings[l], dtype=np.float32)) for l in query_ids},
            candidates={
                l: EmbeddingTable(list(candidate_ids[l]), np.asarray(candidate_embeddings[l], dtype=np.float32))
                for l in candidate_ids
            },
            relevant={q: dict(r) for q, r in relevant.items()},
            info=dict(info or {}),
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``queries.<lang>.npy``, ``candidates.<lang>.npy`` and ``index.json`` (ids,
        relevance, info) so another tool can re-score the embeddings."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for kind, tables in (("queries", self.queries), ("candidates", self.candidates)):
            for lang, table in tables.items():
                np.save(directory / f"{kind}.{lang}.npy", table.vectors)
        index = {
            "name": self.name,
            "query_ids": {l: t.ids for l, t in self.queries.items()},
            "candidate_ids": {l: t.ids for l, t in self.candidates.items()},
            "relevant": self.relevant,
            "info": self.info,
        }
        (directory / _INDEX_FILE).write_text(json.dumps(index, ensure_ascii=False))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "EncodedCorpus":
        """Read a directory written by :meth:`save`."""
        directory = Path(directory)
        index_path = directory / _INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path} not found: not an EncodedCorpus directory")
        index = json.loads(index_path.read_text())

        def arrays(kind: str, ids: dict[str, list[str]]) -> dict[str, np.ndarray]:
            return {lang: np.load(directory / f"{kind}.{lang}.npy") for lang in ids}

        return cls.from_arrays(
            index["name"],
            index["query_ids"],
            arrays("queries", index["query_ids"]),
            index["candidate_ids"],
            arrays("candidates", index["candidate_ids"]),
            index["relevant"],
            index.get("info"),
        )


def encode_texts(
    model: "BiEncoder",
    texts: list[str],
    kind: Literal["query", "passage"],
    batch_size: int = 64,
    max_length: int | None = None,
) -> np.ndarray:
    """Embed ``texts`` (float32 [n, d], rows in input order) in length-sorted batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not texts:
        raise ValueError(f"no {kind} texts to encode")
    # One tokenizer call for everything: its attention mask gives each text's token length,
    # and its padded ids are sliced per batch below instead of tokenizing twice.
    tokens = model.tokenize(texts, kind, max_length)
    lengths = tokens["attention_mask"].sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    device = next(model.parameters()).device
    pin = device.type == "cuda"
    # Embeddings stay where the model runs, in length order, and come back in ONE copy at the
    # end: no host round trip (and no device sync) per batch.
    by_length: torch.Tensor | None = None
    was_training = model.training
    model.eval()
    n_batches = -(-len(texts) // batch_size)
    started = time.perf_counter()
    bar = progress_bar(total=len(texts), desc=f"encode {'queries' if kind == 'query' else 'passages'}",
                       unit="text")
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                mask = tokens["attention_mask"][rows]
                columns = mask.any(0)  # drop the columns that are padding for every text of the batch
                input_ids = _to_device(tokens["input_ids"][rows][:, columns], device, pin)
                embeddings = model(input_ids, _to_device(mask[:, columns], device, pin)).float()
                if by_length is None:
                    by_length = torch.empty((len(texts), embeddings.shape[1]), dtype=torch.float32, device=embeddings.device)
                by_length[start : start + len(rows)] = embeddings
                bar.update(len(rows))
        out = torch.empty(by_length.shape, dtype=torch.float32)
        out[order] = by_length.cpu()
    finally:
        bar.close()
        model.train(was_training)
    log.debug("%d %s texts in %d batches, %.1f s", len(texts), kind, n_batches, time.perf_counter() - started)
    flush = getattr(model, "flush_activation_cache", None)
    if flush is not None:  # the next evaluation of a model with the same frozen bottom reads these
        flush()
    return out.numpy()


def _to_device(tensor: torch.Tensor, device: torch.device, pin: bool) -> torch.Tensor:
    if pin:  # page-locked: the copy to the GPU runs asynchronously
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=pin)


def _encode_unique(
    model: "BiEncoder",
    by_lang: Mapping[str, Mapping[str, str]],
    kind: Literal["query", "passage"],
    batch_size: int,
    max_length: int | None,
) -> tuple[dict[str, EmbeddingTable], int]:
    """Encode each distinct text of ``by_lang`` (lang -> {id: text}) once; map rows back to ids."""
    unique: dict[str, int] = {}
    for items in by_lang.values():
        for text in items.values():
            unique.setdefault(text, len(unique))
    vectors = encode_texts(model, list(unique), kind, batch_size, max_length)
    tables = {}
    for lang, items in by_lang.items():
        ids = list(items)
        rows = [unique[items[i]] for i in ids]
        tables[lang] = EmbeddingTable(ids, vectors[np.asarray(rows, dtype=np.int64)])
    return tables, len(unique)


def encode_corpus(
    model: "BiEncoder",
    corpus: RetrievalCorpus,
    batch_size: int = 64,
    max_query_length: int | None = None,
    max_passage_length: int | None = None,
    candidate_kind: Literal["query", "passage"] = "passage",
) -> EncodedCorpus:
    """Embed every query (with the model's query prefix) and every candidate (passage prefix)
    of ``corpus`` once. ``max_*_length`` None: the model's own defaults.

    ``candidate_kind="query"`` encodes candidates like queries: for bitext retrieval, where both
    sides are sentences of the same kind (E5 uses "query: " on both sides there)."""
    if candidate_kind not in ("query", "passage"):
        raise ValueError(f"candidate_kind must be 'query' or 'passage', got {candidate_kind!r}")
    start = time.perf_counter()
    queries, n_query_texts = _encode_unique(model, corpus.queries, "query", batch_size, max_query_length)
    candidates, n_candidate_texts = _encode_unique(model, corpus.candidates, candidate_kind, batch_size, max_passage_length)
    encode_s = time.perf_counter() - start
    log.info("encoded %d query and %d candidate texts of %s in %.1f s", n_query_texts, n_candidate_texts, corpus.name, encode_s)
    info = {
        "model": getattr(model, "display_name", type(model).__name__),
        "encode_s": encode_s,
        "n_query_texts": n_query_texts,
        "n_candidate_texts": n_candidate_texts,
        "candidate_kind": candidate_kind,
    }
    return EncodedCorpus(corpus.name, queries, candidates, {q: dict(r) for q, r in corpus.relevant.items()}, info)
