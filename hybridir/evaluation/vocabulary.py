"""The evaluation's shared names: one place for the settings, the per-query columns, the
measure names and the summary keys that more than one module reads or writes.

:mod:`hybridir.evaluation.lareqa` and :mod:`hybridir.evaluation.bitext` write per-query rows
and summaries under these names, :mod:`hybridir.evaluation.significance` and the study
(``study/``: verdicts, reports, stored results) read them back. Changing a name here changes it
for all of them; a name spelled out in two modules would drift. Imports nothing (no numpy, no
torch), so every module may import it; the study's own names live in ``study/vocabulary.py``.

Per-query rows (``LareqaResult.per_query``, ``BitextResult.per_query``): one row per
(setting, query language, candidate language, query id), columns :data:`PER_QUERY_KEYS` then
the per-query measures (``ap``, ``r@k``, ``p@k``, ``f1@k``, ``ndcg@10``, ``rank_distance``;
bitext: ``correct@1``, ``ap``, ``rank``). The study adds ``dataset`` (:data:`DATASET`).

Summary keys (``LareqaResult.summary``): ``<setting>_<metric>`` (:func:`summary_key`; the mean
of per-query ``ap`` is reported as ``map``), ``n_<setting>_cells``, ``n_<setting>_queries``,
``rank_distance``, ``dataset``, ``model`` and timings.
"""

from __future__ import annotations

# --- settings (the ``setting`` column) --------------------------------------------------------
MONO, CROSS, MULTI = "mono", "cross", "multi"  # LAReQA: monolingual, cross-lingual, multilingual
SETTINGS = (MONO, CROSS, MULTI)
BITEXT = "bitext"  # the setting of bitext retrieval rows
ALL_CANDIDATES = "all"  # the candidate language of multi rows: every language, pooled

# --- per-query columns ------------------------------------------------------------------------
SETTING, QUERY_LANG, CANDIDATE_LANG, QUERY_ID = "setting", "query_lang", "candidate_lang", "query_id"
PER_QUERY_KEYS = (SETTING, QUERY_LANG, CANDIDATE_LANG, QUERY_ID)
DATASET = "dataset"  # the evaluation set: a summary key, and the column the study adds to rows

# --- measures (per-query columns) and their reported names ------------------------------------
AP = "ap"  # per-query average precision; its mean over queries is reported as MAP
MAP = "map"
RANK_DISTANCE = "rank_distance"  # multi only; NaN where a query has a single relevant candidate
CORRECT_AT_1 = "correct@1"  # bitext
ACCURACY = "accuracy"  # bitext: the summary key (mean correct@1 over directions), a claim's measure
RANK = "rank"  # bitext: the rank of the translation

# --- summary keys and tables ------------------------------------------------------------------
MODEL = "model"  # summary key: the evaluated model's name
N_QUERIES = "n_queries"  # count column of the matrices and the multilingual table
MULTILINGUAL = "multilingual"  # the per-query-language table of the multi setting


def public_metric(metric: str) -> str:
    """The reported name of a per-query measure: mean per-query AP is mAP (``map``)."""
    return MAP if metric == AP else metric


def summary_key(setting: str, metric: str) -> str:
    """``<setting>_<metric>``: a summary key (``cross_map``, ``mono_r@1``); ``metric`` is the
    reported name (``map``, not ``ap``)."""
    return f"{setting}_{metric}"


# The headline keys (the paper's table 1: Mo, Cr, Mul), also the search's default objective.
MONO_MAP, CROSS_MAP, MULTI_MAP = (summary_key(setting, MAP) for setting in SETTINGS)


def n_cells_key(setting: str) -> str:
    """``n_<setting>_cells``: how many (query, candidate language) cells a setting averaged."""
    return f"n_{setting}_cells"


def n_queries_key(setting: str) -> str:
    """``n_<setting>_queries``: how many per-query rows a setting averaged."""
    return f"n_{setting}_queries"
