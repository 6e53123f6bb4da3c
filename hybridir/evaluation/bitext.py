"""Bitext retrieval accuracy (Tatoeba, FLORES): find each sentence's translation.

For languages X (queries) and Y (candidates) the bitext is every query of X with its relevant
candidate in Y. Its similarity matrix S (X sentences x their Y translations) gives both
directions: X->Y ranks each row, Y->X each column; a sentence is correct when its own
translation ranks first among the other side of the bitext (accuracy@1, with ties counted as
misses as everywhere in :mod:`hybridir.evaluation.metrics`, so an exact duplicate sentence on
the target side counts as a miss for both of its copies). The pool is the bitext itself,
which is the standard setup (Artetxe & Schwenk 2019): for Tatoeba the pair's own English
sentences, for FLORES every sentence of the other language.

Encode the corpus with ``encode_corpus(..., candidate_kind="query")`` so both sides carry the
same prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from hybridir.evaluation.encode import EncodedCorpus
from hybridir.evaluation.lareqa import check_relevance
from hybridir.evaluation.metrics import average_precision, recall_at, relevant_ranks
from hybridir.evaluation.vocabulary import (
    AP, BITEXT, CANDIDATE_LANG, CORRECT_AT_1, DATASET, MODEL, PER_QUERY_KEYS, QUERY_ID, QUERY_LANG, RANK, SETTING,
)


# Columns of BitextResult.per_query. ``setting`` is always "bitext" and ``query_id`` is the
# item (the pair's id, the same in both directions), so the frame lines up with LAReQA's
# per-query rows (setting, query_lang, candidate_lang, query_id, ap, ...). With one relevant
# candidate, AP over the full ranking is the reciprocal rank.
PER_QUERY_COLUMNS = (*PER_QUERY_KEYS, CORRECT_AT_1, AP, RANK)


@dataclass
class BitextResult:
    """pairs: one row per direction (source, target): accuracy@1 and n_sentences.
    summary: ``accuracy`` (macro over directions), and with a pivot ``accuracy_to_<pivot>`` /
    ``accuracy_from_<pivot>`` (macro over the directions into / out of the pivot language).
    per_query: one row per (direction, sentence), columns :data:`PER_QUERY_COLUMNS`: the query
    language (the direction's source), candidate language (its target), the item id,
    ``correct@1`` (0/1), ``ap`` (= reciprocal rank) and the translation's ``rank``."""

    summary: dict
    pairs: pd.DataFrame
    per_query: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(PER_QUERY_COLUMNS)), repr=False)


def _bitext(encoded: EncodedCorpus, x: str, y: str) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    """Item ids of the X sentences that have a Y translation, their embeddings, and those of
    the translations."""
    position = {cid: i for i, cid in enumerate(encoded.candidates[y].ids)}
    rows, targets, items = [], [], []
    for row, qid in enumerate(encoded.queries[x].ids):
        cid = encoded.relevant.get(qid, {}).get(y)
        if cid is not None:
            rows.append(row)
            targets.append(position[cid])
            items.append(qid)
    if not rows:
        return None
    if len(set(targets)) != len(targets):
        raise ValueError(f"{encoded.name}: several {x} sentences share one {y} translation: not a bitext")
    return items, encoded.queries[x].vectors[rows], encoded.candidates[y].vectors[targets]


def evaluate_bitext(encoded: EncodedCorpus, pivot: str | None = "en") -> BitextResult:
    """Accuracy@1 in both directions of every language pair (X, Y) with X != Y that involves
    ``pivot`` (every pair if ``pivot`` is None) and shares sentences."""
    check_relevance(encoded)
    rows = []
    frames = []
    done: set[tuple[str, str]] = set()
    for x in sorted(encoded.queries):
        for y in sorted(encoded.candidates):
            if x == y or (pivot is not None and pivot not in (x, y)) or (x, y) in done:
                continue
            bitext = _bitext(encoded, x, y)
            if bitext is None:
                continue
            items, *vectors = bitext
            source, target = (torch.from_numpy(v) for v in vectors)
            scores = source @ target.T
            diagonal = [[i] for i in range(len(scores))]
            for a, b, matrix in ((x, y, scores), (y, x, scores.T)):
                ranks = relevant_ranks(matrix, diagonal)
                correct = recall_at(ranks, 1)
                rows.append({"source": a, "target": b, "accuracy": float(correct.mean()), "n_sentences": len(scores)})
                frames.append(pd.DataFrame({
                    SETTING: BITEXT, QUERY_LANG: a, CANDIDATE_LANG: b, QUERY_ID: items,
                    CORRECT_AT_1: correct.astype(float), AP: average_precision(ranks), RANK: ranks.ranks[:, 0],
                }))  # fmt: skip
                done.add((a, b))
    if not rows:
        raise ValueError(f"{encoded.name}: no language pair has parallel sentences to score")
    pairs = pd.DataFrame(rows)
    summary = {DATASET: encoded.name, MODEL: encoded.info.get(MODEL, ""), "accuracy": float(pairs.accuracy.mean())}
    if pivot is not None:
        into, out_of = pairs[pairs.target == pivot], pairs[pairs.source == pivot]
        if len(into):
            summary[f"accuracy_to_{pivot}"] = float(into.accuracy.mean())
        if len(out_of):
            summary[f"accuracy_from_{pivot}"] = float(out_of.accuracy.mean())
    summary["n_directions"] = len(pairs)
    summary["encode_s"] = encoded.encode_s
    return BitextResult(summary=summary, pairs=pairs, per_query=pd.concat(frames, ignore_index=True))
