"""Per-query ranking metrics for LAReQA-style evaluation, vectorised over a score matrix.

Every metric is a function of the 1-based ranks of a query's relevant candidates in the
ranking of the WHOLE candidate pool (scores sorted in decreasing order). With
``rel`` = the number of relevant candidates of the query and ``r_1 < r_2 < ... < r_rel``
their ranks:

* ties are ranked pessimistically: a relevant candidate is placed below every
  non-relevant candidate whose score equals its own, so ``r_i = i + #{non-relevant c :
  s_c >= s_i}`` once the relevant candidates are ordered by decreasing score. Relevant
  candidates tied with each other take consecutive positions; their order among
  themselves is left unspecified because no metric here depends on it (each is a
  function of the SET of relevant positions).
* AP        = (1/rel) * sum_i  i / r_i                      (full ranking, never truncated)
* R@k       = |{i : r_i <= k}| / rel
* P@k       = |{i : r_i <= k}| / k
* F1@k      = 2 * P@k * R@k / (P@k + R@k)                    (0 when both are 0)
* nDCG@k    = sum_{r_i <= k} 1/log2(r_i + 1)  /  sum_{j=1}^{min(rel, k)} 1/log2(j + 1)
              (binary gains)
* rank distance = r_rel - r_1 (highest minus lowest rank among the relevant candidates);
              undefined (NaN) for queries with a single relevant candidate.

See docs/metrics.md for how the LAReQA settings aggregate these per-query values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hybridir.evaluation.vocabulary import AP, RANK_DISTANCE

# Elements of the [queries, relevant, candidates] comparison tensor built per chunk:
# ~64 MB of bools, small next to the score matrix and fast on 2 cores.
_COMPARISONS_PER_CHUNK = 64_000_000


@dataclass(frozen=True)
class RelevantRanks:
    """The ranks of each query's relevant candidates.

    ranks:       int64 [n_queries, max_relevant], each row ascending, padded with 0 after
                 the query's last relevant candidate.
    n_relevant:  int64 [n_queries], the number of relevant candidates of each query (>= 1).
    n_candidates: size of the ranked pool.
    """

    ranks: np.ndarray
    n_relevant: np.ndarray
    n_candidates: int

    def __len__(self) -> int:
        return len(self.n_relevant)

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask [n_queries, max_relevant] of the real (non-padding) entries."""
        return np.arange(self.ranks.shape[1])[None, :] < self.n_relevant[:, None]

    @classmethod
    def concatenate(cls, parts: Sequence["RelevantRanks"]) -> "RelevantRanks":
        """Stack the ranks of several query chunks ranked against the same pool."""
        if not parts:
            raise ValueError("no RelevantRanks to concatenate")
        if len({p.n_candidates for p in parts}) != 1:
            raise ValueError("cannot concatenate ranks over candidate pools of different sizes")
        width = max(p.ranks.shape[1] for p in parts)
        ranks = np.concatenate([np.pad(p.ranks, ((0, 0), (0, width - p.ranks.shape[1]))) for p in parts])
        return cls(ranks, np.concatenate([p.n_relevant for p in parts]), parts[0].n_candidates)


def relevance_index(relevant: np.ndarray | torch.Tensor | Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise relevance given as a boolean mask [n_queries, n_candidates] or as one list of
    candidate indices per query into (indices [n_queries, max_relevant] padded with 0,
    valid mask of the same shape)."""
    if isinstance(relevant, (np.ndarray, torch.Tensor)) and relevant.dtype in (np.bool_, torch.bool):
        mask = torch.as_tensor(relevant)
        if mask.ndim != 2:
            raise ValueError(f"relevance mask must be 2-D [queries, candidates], got shape {tuple(mask.shape)}")
        lists = [torch.nonzero(row).flatten().tolist() for row in mask]
    else:
        lists = [list(map(int, row)) for row in relevant]
    width = max((len(row) for row in lists), default=0)
    index = torch.zeros((len(lists), max(width, 1)), dtype=torch.int64)
    valid = torch.zeros_like(index, dtype=torch.bool)
    for i, row in enumerate(lists):
        if len(set(row)) != len(row):
            raise ValueError(f"query {i}: duplicate relevant candidate indices {row}")
        index[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
        valid[i, : len(row)] = True
    return index, valid


def relevant_ranks(
    scores: np.ndarray | torch.Tensor,
    relevant: np.ndarray | torch.Tensor | Sequence[Sequence[int]],
) -> RelevantRanks:
    """Rank of every relevant candidate of every query in the full ranking of ``scores``.

    scores:   [n_queries, n_candidates] similarity scores (higher = better).
    relevant: boolean mask of the same shape, or one list of candidate indices per query.
              Every query needs at least one relevant candidate.

    Ties are pessimistic (see the module docstring). Cost: one comparison of each relevant
    score against its query's row, done in chunks of queries.
    """
    scores = torch.as_tensor(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D [queries, candidates], got shape {tuple(scores.shape)}")
    n_queries, n_candidates = scores.shape
    index, valid = relevance_index(relevant)
    if index.shape[0] != n_queries:
        raise ValueError(f"relevance given for {index.shape[0]} queries but scores have {n_queries}")
    n_relevant = valid.sum(1)
    if n_queries and int(n_relevant.min()) == 0:
        empty = int(torch.nonzero(n_relevant == 0)[0])
        raise ValueError(f"query {empty} has no relevant candidate: ranking metrics are undefined")
    if n_queries and (int(index.max()) >= n_candidates or int(index.min()) < 0):
        raise ValueError(f"relevant candidate index out of range [0, {n_candidates})")

    width = index.shape[1]
    chunk = max(1, _COMPARISONS_PER_CHUNK // max(1, width * n_candidates))
    ranks = torch.zeros((n_queries, width), dtype=torch.int64)
    for start in range(0, n_queries, chunk):
        block = scores[start : start + chunk]
        idx, ok = index[start : start + chunk], valid[start : start + chunk]
        rel_scores = torch.gather(block, 1, idx)
        # candidates (relevant ones included) scoring >= each relevant candidate ...
        # (an int32 sum is ~3x faster than the default int64 one on CPU)
        at_or_above = (block[:, None, :] >= rel_scores[:, :, None]).sum(-1, dtype=torch.int32)
        # ... minus the relevant ones among them leaves the non-relevant ones ranked above it
        relevant_at_or_above = ((rel_scores[:, None, :] >= rel_scores[:, :, None]) & ok[:, None, :]).sum(-1, dtype=torch.int32)
        nonrel_above = (at_or_above - relevant_at_or_above).long()
        # Ordering the relevant candidates by how many non-relevant ones beat them orders them
        # by score; the i-th of them then has i-1 relevant and nonrel_above others before it.
        nonrel_above = torch.where(ok, nonrel_above, torch.iinfo(torch.int64).max)
        nonrel_above, _ = torch.sort(nonrel_above, dim=1)
        position = torch.arange(1, width + 1)[None, :]
        ranks[start : start + chunk] = torch.where(ok, nonrel_above + position, 0)
    return RelevantRanks(ranks.numpy(), n_relevant.numpy().astype(np.int64), n_candidates)


def _hits_at(rr: RelevantRanks, k: int) -> np.ndarray:
    if k < 1:
        raise ValueError(f"cutoff k must be >= 1, got {k}")
    return ((rr.ranks <= k) & rr.valid).sum(1)


def average_precision(rr: RelevantRanks) -> np.ndarray:
    """AP of each query over the full ranking."""
    position = np.arange(1, rr.ranks.shape[1] + 1)[None, :]
    precision_at_hit = np.where(rr.valid, position / np.maximum(rr.ranks, 1), 0.0)
    return precision_at_hit.sum(1) / rr.n_relevant


def recall_at(rr: RelevantRanks, k: int) -> np.ndarray:
    """R@k: fraction of the relevant candidates ranked in the top k."""
    return _hits_at(rr, k) / rr.n_relevant


def precision_at(rr: RelevantRanks, k: int) -> np.ndarray:
    """P@k: fraction of the top k that is relevant."""
    return _hits_at(rr, k) / k


def f1_at(rr: RelevantRanks, k: int) -> np.ndarray:
    """F1@k: harmonic mean of P@k and R@k (0 where both are 0)."""
    p, r = precision_at(rr, k), recall_at(rr, k)
    total = p + r
    return np.divide(2 * p * r, total, out=np.zeros_like(total, dtype=float), where=total > 0)


def ndcg_at(rr: RelevantRanks, k: int = 10) -> np.ndarray:
    """nDCG@k with binary gains and log2 discounts; ideal DCG over min(rel, k) hits."""
    if k < 1:
        raise ValueError(f"cutoff k must be >= 1, got {k}")
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    hit = rr.valid & (rr.ranks <= k)
    dcg = np.where(hit, discount[np.clip(rr.ranks, 1, k) - 1], 0.0).sum(1)
    ideal = np.cumsum(discount)[np.minimum(rr.n_relevant, k) - 1]
    return dcg / ideal


def rank_distance(rr: RelevantRanks) -> np.ndarray:
    """Highest minus lowest rank of each query's relevant candidates; NaN with one relevant."""
    highest = rr.ranks[np.arange(len(rr)), rr.n_relevant - 1]
    distance = (highest - rr.ranks[:, 0]).astype(float)
    distance[rr.n_relevant < 2] = np.nan
    return distance


def per_query_metrics(rr: RelevantRanks, k_values: Sequence[int] = (1, 10), ndcg_k: int = 10) -> dict[str, np.ndarray]:
    """All per-query metrics as named arrays: ap, r@k, p@k, f1@k for each k, ndcg@<ndcg_k>,
    rank_distance (NaN where undefined)."""
    out: dict[str, np.ndarray] = {AP: average_precision(rr)}
    for k in k_values:
        out[f"r@{k}"] = recall_at(rr, k)
        out[f"p@{k}"] = precision_at(rr, k)
        out[f"f1@{k}"] = f1_at(rr, k)
    out[f"ndcg@{ndcg_k}"] = ndcg_at(rr, ndcg_k)
    out[RANK_DISTANCE] = rank_distance(rr)
    return out
