"""The LAReQA evaluation settings (Roy et al. 2020; Elmahdy et al. 2024, table 1).

Given embeddings of a RetrievalCorpus (every text encoded once, see ``encode.py``):

* monolingual  (mono):  queries of language X ranked against the candidates of X only;
* cross-lingual (cross): queries of X against the candidates of Y, for every ordered pair X != Y,
  restricted to the items that exist in both X and Y;
* multilingual (multi): queries of X against the POOLED candidates of every language; the
  relevant candidates are the item's answer in every language where it exists. The
  language-bias rank distance is measured here.

Each (query language, candidate language) cell is the mean over its queries; settings are
macro-averaged over cells (mono: languages, cross: ordered pairs, multi: query languages).
Formulas: docs/metrics.md.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from hybridir.data.types import RetrievalCorpus
from hybridir.evaluation.encode import EncodedCorpus
from hybridir.evaluation.metrics import RelevantRanks, per_query_metrics, relevant_ranks
from hybridir.evaluation.vocabulary import (
    ALL_CANDIDATES, AP, CANDIDATE_LANG, CROSS, DATASET, MODEL, MONO, MULTI, N_QUERIES, QUERY_ID, QUERY_LANG, RANK_DISTANCE,
    SETTING, SETTINGS, n_cells_key, n_queries_key, public_metric, summary_key,
)
# Queries scored per matrix product: 2048 x 13k float32 = ~100 MB at a time, never the
# 680 MB multilingual matrix of XQuAD-R.
_QUERY_CHUNK = 2048


@dataclass
class LareqaResult:
    """Scores of one EncodedCorpus.

    summary:      flat dict: ``<setting>_<metric>`` (setting in mono/cross/multi; metric map,
                  r@k, p@k, f1@k, ndcg@10), ``rank_distance``, counts and timings.
    matrices:     metric -> DataFrame (rows query language, columns candidate language; mono
                  on the diagonal, cross off it), plus ``n_queries``.
    multilingual: DataFrame indexed by query language: the multilingual metrics, rank
                  distance, and query counts.
    per_query:    one row per (setting, query language, candidate language, query id).
    """

    summary: dict
    matrices: dict[str, pd.DataFrame]
    multilingual: pd.DataFrame
    per_query: pd.DataFrame = field(repr=False)


def subset_corpus(
    corpus: RetrievalCorpus,
    languages: Sequence[str] | None = None,
    max_queries: int | None = None,
    seed: int = 0,
) -> RetrievalCorpus:
    """A cheaper corpus for evaluation inside studies.

    Keeps the FULL candidate pools of ``languages`` (all by default), so that rankings stay as
    hard as on the full set, and a fixed-seed sample of ``max_queries`` item ids, the same ids
    in every language. Where no item is asked in more than one language (AfriQA), each
    language's queries are sampled on their own: ``max_queries`` per language.
    """
    if languages is not None:
        unknown = sorted(set(languages) - set(corpus.languages))
        if unknown:
            raise ValueError(f"languages {unknown} not in {corpus.name} (has {corpus.languages})")
        if not languages:
            raise ValueError("languages is empty")
    if max_queries is not None and max_queries < 1:
        raise ValueError(f"max_queries must be >= 1, got {max_queries}")
    keep_langs = set(corpus.languages if languages is None else languages)
    queries = {l: q for l, q in corpus.queries.items() if l in keep_langs}
    candidates = {l: c for l, c in corpus.candidates.items() if l in keep_langs}
    item_ids = sorted({qid for items in queries.values() for qid in items})
    if max_queries is not None and _language_specific(queries):
        # items asked in one language only (AfriQA): max_queries per language, each sampled alone
        item_ids = sorted(qid for items in queries.values() for qid in _sample(sorted(items), max_queries, seed))
    elif max_queries is not None:
        # parallel items (LAReQA): one sample of item ids, the same ids in every language
        item_ids = _sample(item_ids, max_queries, seed)
    kept = set(item_ids)
    kept_candidates = {cid for items in candidates.values() for cid in items}
    return dataclasses.replace(
        corpus,
        queries={l: {q: t for q, t in items.items() if q in kept} for l, items in queries.items()},
        candidates=candidates,
        relevant={
            q: {l: c for l, c in corpus.relevant.get(q, {}).items() if l in keep_langs}
            for q in item_ids
        },
        groups={q: g for q, g in corpus.groups.items() if q in kept},
        candidate_groups={c: g for c, g in corpus.candidate_groups.items() if c in kept_candidates},
    )


def _language_specific(queries: dict[str, dict[str, str]]) -> bool:
    """True when no item id is asked in more than one language (nothing parallel to keep aligned)."""
    return sum(len(items) for items in queries.values()) == len({q for items in queries.values() for q in items})


def _sample(item_ids: list[str], max_queries: int, seed: int) -> list[str]:
    """A fixed-seed sample of ``max_queries`` of the sorted ``item_ids`` (all of them when fewer)."""
    if max_queries >= len(item_ids):
        return item_ids
    picked = np.random.default_rng(seed).choice(len(item_ids), size=max_queries, replace=False)
    return sorted(item_ids[i] for i in picked)


def rank_against(
    encoded: EncodedCorpus, query_lang: str, candidate_langs: Sequence[str]
) -> tuple[list[str], RelevantRanks] | None:
    """Rank the queries of ``query_lang`` that have a relevant candidate in ``candidate_langs``
    against the pooled candidates of those languages. None when no query qualifies."""
    pool_ids: list[str] = []
    pool_vectors = []
    for lang in candidate_langs:
        pool_ids += encoded.candidates[lang].ids
        pool_vectors.append(encoded.candidates[lang].vectors)
    position = {cid: i for i, cid in enumerate(pool_ids)}
    table = encoded.queries[query_lang]
    rows, qids, relevant = [], [], []
    for row, qid in enumerate(table.ids):
        targets = encoded.relevant.get(qid, {})
        hits = [position[targets[lang]] for lang in candidate_langs if lang in targets]
        if hits:
            rows.append(row)
            qids.append(qid)
            relevant.append(hits)
    if not rows:
        return None
    queries = torch.from_numpy(table.vectors[rows])
    pool = torch.from_numpy(np.concatenate(pool_vectors))
    parts = [
        relevant_ranks(queries[s : s + _QUERY_CHUNK] @ pool.T, relevant[s : s + _QUERY_CHUNK])
        for s in range(0, len(rows), _QUERY_CHUNK)
    ]
    return qids, RelevantRanks.concatenate(parts)


def check_relevance(encoded: EncodedCorpus) -> None:
    """Raise ValueError unless every relevant candidate id exists among the candidates of its
    language (checked once, before any scoring)."""
    known = {lang: set(table.ids) for lang, table in encoded.candidates.items()}
    for qid, targets in encoded.relevant.items():
        for lang, cid in targets.items():
            if lang in known and cid not in known[lang]:
                raise ValueError(f"{encoded.name}: relevant candidate {cid!r} of query {qid!r} is not a {lang} candidate")


def _frame(setting: str, query_lang: str, candidate_lang: str, qids: list[str], metrics: dict) -> pd.DataFrame:
    frame = pd.DataFrame(metrics)
    frame.insert(0, QUERY_ID, qids)
    frame.insert(0, CANDIDATE_LANG, candidate_lang)
    frame.insert(0, QUERY_LANG, query_lang)
    frame.insert(0, SETTING, setting)
    return frame


def evaluate_lareqa(
    encoded: EncodedCorpus,
    settings: Sequence[str] = SETTINGS,
    k_values: Sequence[int] = (1, 10),
) -> LareqaResult:
    """Score ``encoded`` in the LAReQA settings (see the module docstring).

    Settings that a corpus cannot produce (e.g. monolingual when queries and candidates share
    no language) are left out of the summary; their cell counts are 0.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown or not settings:
        raise ValueError(f"unknown settings {unknown or list(settings)}; choose from {SETTINGS}")
    if any(k < 1 for k in k_values):
        raise ValueError(f"k_values must be >= 1, got {list(k_values)}")
    check_relevance(encoded)
    start = time.perf_counter()
    query_langs = sorted(encoded.queries)
    candidate_langs = sorted(encoded.candidates)
    frames: list[pd.DataFrame] = []
    skipped_pairs: list[str] = []

    def score(setting: str, query_lang: str, cand_langs: Sequence[str], label: str) -> bool:
        block = rank_against(encoded, query_lang, cand_langs)
        if block is None:
            return False
        qids, ranks = block
        frames.append(_frame(setting, query_lang, label, qids, per_query_metrics(ranks, k_values)))
        return True

    if MONO in settings:
        for lang in query_langs:
            if lang in encoded.candidates:
                score(MONO, lang, [lang], lang)
    if CROSS in settings:
        for x in query_langs:
            for y in candidate_langs:
                if x != y and not score(CROSS, x, [y], y):
                    skipped_pairs.append(f"{x}-{y}")
    if MULTI in settings:
        for lang in query_langs:
            score(MULTI, lang, candidate_langs, ALL_CANDIDATES)
    per_query = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[SETTING])
    score_s = time.perf_counter() - start

    metric_names = [AP] + [f"{m}@{k}" for k in k_values for m in ("r", "p", "f1")] + ["ndcg@10"]
    cells = per_query.groupby([SETTING, QUERY_LANG, CANDIDATE_LANG], sort=True)
    cell_means = cells[metric_names].mean()
    cell_means[N_QUERIES] = cells.size()

    summary: dict = {DATASET: encoded.name, MODEL: encoded.info.get(MODEL, "")}
    for setting in settings:
        if setting not in cell_means.index.get_level_values(SETTING):
            summary[n_cells_key(setting)] = 0
            continue
        table = cell_means.loc[setting]
        for metric in metric_names:
            summary[summary_key(setting, public_metric(metric))] = float(table[metric].mean())
        summary[n_cells_key(setting)] = len(table)
        summary[n_queries_key(setting)] = int(table[N_QUERIES].sum())
    if CROSS in settings:
        summary["n_cross_pairs_skipped"] = len(skipped_pairs)

    multilingual = pd.DataFrame()
    if MULTI in settings and MULTI in cell_means.index.get_level_values(SETTING):
        multi_rows = per_query[per_query[SETTING] == MULTI]
        by_lang = multi_rows.groupby(QUERY_LANG)
        multilingual = by_lang[metric_names].mean().rename(columns=public_metric)
        # Rank distance needs >= 2 relevant candidates; NaN rows (single relevant) are skipped
        # by the mean and counted here.
        multilingual[RANK_DISTANCE] = by_lang[RANK_DISTANCE].mean()
        multilingual[N_QUERIES] = by_lang.size()
        multilingual["n_rank_distance_excluded"] = by_lang[RANK_DISTANCE].apply(lambda s: int(s.isna().sum()))
        summary[RANK_DISTANCE] = float(multilingual[RANK_DISTANCE].mean())
        summary["n_rank_distance_excluded"] = int(multilingual["n_rank_distance_excluded"].sum())

    matrices = {}
    pairwise = cell_means.drop(index=MULTI, level=SETTING, errors="ignore")
    if len(pairwise):
        for metric in [*metric_names, N_QUERIES]:
            matrix = pairwise[metric].droplevel(SETTING).unstack(CANDIDATE_LANG)
            matrix = matrix.reindex(index=query_langs, columns=candidate_langs)
            matrix.index.name, matrix.columns.name = QUERY_LANG, CANDIDATE_LANG
            matrices[public_metric(metric)] = matrix
    summary["encode_s"] = encoded.encode_s
    summary["score_s"] = score_s
    return LareqaResult(summary=summary, matrices=matrices, multilingual=multilingual, per_query=per_query)
