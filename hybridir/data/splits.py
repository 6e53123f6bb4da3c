"""Group-level (document / article) splits and the train/evaluation leakage guard.

Splitting whole documents keeps the sentences of one news story (NTREX) or one Wikipedia
article (XQuAD) on one side, so validation and evaluation measure transfer to unseen text.
Group selection depends only on (the set of group names, fraction, seed): XQuAD and XQuAD-R
share their 48 article titles, so ``split_articles`` with the same fraction and seed holds out
the same articles of both -- train on the rest of XQuAD, evaluate on the held-out XQuAD-R.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import TypeVar

from hybridir.data.types import ParallelPairs, RetrievalCorpus

Data = TypeVar("Data", ParallelPairs, RetrievalCorpus)


class LeakageError(ValueError):
    """Training data shares items or documents with the evaluation set."""


def choose_groups(groups: Collection[str], fraction: float, seed: int) -> set[str]:
    """A seeded choice of ``round(fraction * n)`` distinct groups (at least one if fraction > 0)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction={fraction} must be in [0, 1)")
    unique = sorted(set(groups))
    count = round(fraction * len(unique))
    if fraction > 0 and count == 0 and len(unique) > 1:
        count = 1
    if count >= len(unique) and unique:
        raise ValueError(f"fraction={fraction} of {len(unique)} groups leaves nothing on the other side")
    return set(random.Random(seed).sample(unique, count))


def subset_pairs(pairs: ParallelPairs, indices: list[int], name: str | None = None) -> ParallelPairs:
    """The items ``indices`` of ``pairs`` (in that order), in all languages."""
    return ParallelPairs(
        name=name or pairs.name,
        item_ids=[pairs.item_ids[i] for i in indices],
        groups=[pairs.groups[i] for i in indices],
        queries={lang: [texts[i] for i in indices] for lang, texts in pairs.queries.items()},
        passages={lang: [texts[i] for i in indices] for lang, texts in pairs.passages.items()},
    )


def split_by_group(pairs: ParallelPairs, validation_fraction: float, seed: int) -> tuple[ParallelPairs, ParallelPairs]:
    """(train, validation): a seeded ``validation_fraction`` of the groups goes to validation."""
    held_out = choose_groups(pairs.groups, validation_fraction, seed)
    train = [i for i, group in enumerate(pairs.groups) if group not in held_out]
    validation = [i for i, group in enumerate(pairs.groups) if group in held_out]
    return (
        subset_pairs(pairs, train, f"{pairs.name}/train"),
        subset_pairs(pairs, validation, f"{pairs.name}/validation"),
    )


def keep_groups(data: Data, groups: Collection[str], name: str | None = None) -> Data:
    """The part of ``data`` (pairs or corpus) whose items belong to ``groups``.

    For a corpus, candidates whose group is known (``candidate_groups``) follow their group;
    candidates of unknown group stay, and so does every query's relevant candidate.
    """
    wanted = set(groups)
    if isinstance(data, ParallelPairs):
        return subset_pairs(data, [i for i, g in enumerate(data.groups) if g in wanted], name)
    if not isinstance(data, RetrievalCorpus):
        raise TypeError(f"expected ParallelPairs or RetrievalCorpus, got {type(data).__name__}")
    kept_queries = {qid for qid, group in data.groups.items() if group in wanted}
    needed = {cid for qid in kept_queries for cid in data.relevant.get(qid, {}).values()}

    def keep_candidate(cid: str) -> bool:
        group = data.candidate_groups.get(cid)
        return cid in needed or group is None or group in wanted

    candidates = {
        lang: {cid: text for cid, text in pool.items() if keep_candidate(cid)} for lang, pool in data.candidates.items()
    }
    kept_candidates = {cid for pool in candidates.values() for cid in pool}
    return RetrievalCorpus(
        name=name or data.name,
        queries={lang: {q: t for q, t in texts.items() if q in kept_queries} for lang, texts in data.queries.items()},
        candidates=candidates,
        relevant={qid: dict(rel) for qid, rel in data.relevant.items() if qid in kept_queries},
        groups={qid: group for qid, group in data.groups.items() if qid in kept_queries},
        candidate_groups={cid: g for cid, g in data.candidate_groups.items() if cid in kept_candidates},
    )


def _groups_of(data: ParallelPairs | RetrievalCorpus) -> set[str]:
    return set(data.groups) if isinstance(data, ParallelPairs) else set(data.groups.values())


def drop_groups(data: Data, groups: Collection[str], name: str | None = None) -> Data:
    """``data`` without the items (and, for a corpus, known candidates) of ``groups``."""
    return keep_groups(data, _groups_of(data) - set(groups), name)


def split_articles(data: Data, held_out_fraction: float, seed: int) -> tuple[Data, Data]:
    """(rest, held_out) at article level; the same fraction and seed hold out the same titles
    of XQuAD (pairs) and XQuAD-R (corpus), so train on ``rest`` of one, evaluate on
    ``held_out`` of the other."""
    held_out = choose_groups(_groups_of(data), held_out_fraction, seed)
    return drop_groups(data, held_out, f"{data.name}/rest"), keep_groups(data, held_out, f"{data.name}/held-out")


def check_no_leakage(train: ParallelPairs, evaluation: RetrievalCorpus) -> None:
    """Raise LeakageError if ``train`` shares an item id or a document/article group with ``evaluation``."""
    evaluation_ids = set(evaluation.relevant) | {qid for texts in evaluation.queries.values() for qid in texts}
    shared_ids = sorted(set(train.item_ids) & evaluation_ids)
    evaluation_groups = set(evaluation.groups.values()) | set(evaluation.candidate_groups.values())
    shared_groups = sorted(set(train.groups) & evaluation_groups)
    if shared_ids or shared_groups:
        raise LeakageError(
            f"training data {train.name!r} overlaps evaluation set {evaluation.name!r}: "
            f"{len(shared_ids)} shared item ids (first: {shared_ids[:5]}), "
            f"{len(shared_groups)} shared documents/articles (first: {shared_groups[:5]})"
        )
