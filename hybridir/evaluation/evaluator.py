"""One evaluator interface for every evaluation set, in the style of sentence-transformers'
evaluators: built once with its data, then called with a model.

    evaluator = build_evaluator("xquad-r", languages=["en", "de"], max_queries=200)
    result = evaluator(model)                    # EvaluationResult
    result.summary["cross_map"], result.tables["map"], result.per_query

The registry declares how a set is scored (``register_eval_set(..., kind=...)``):

* ``"lareqa"`` (xquad-r, mlqa-r, afriqa): :func:`evaluate_lareqa` -- tables are the
  per-language-pair matrices (``map``, ``r@1``, ..., ``n_queries``) and ``multilingual``
  (per query language); per-query rows as :attr:`LareqaResult.per_query`;
* ``"bitext"`` (tatoeba, flores): :func:`evaluate_bitext` -- the table ``pairs`` (accuracy per
  direction); per-query rows as :attr:`BitextResult.per_query`.

``python -m hybridir.evaluate`` and the study's trials both call evaluators, so a set is
scored the same way wherever it appears.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import pandas as pd

from hybridir.config import ModelConfig
from hybridir.data.registry import eval_set_kind, load_eval_set
from hybridir.data.types import RetrievalCorpus
from hybridir.evaluation.bitext import evaluate_bitext
from hybridir.evaluation.encode import EncodedCorpus, encode_corpus
from hybridir.evaluation.lareqa import evaluate_lareqa, subset_corpus
from hybridir.evaluation.vocabulary import (
    MAP, MULTILINGUAL, RANK_DISTANCE, SETTINGS, n_cells_key, n_queries_key, summary_key,
)

if TYPE_CHECKING:
    from hybridir.model import BiEncoder

# The evaluation lengths of the CLI and of every study trial: ModelConfig's defaults, not a
# trial's (possibly shorter) training lengths, so every model is scored on the same texts.
DEFAULT_MAX_QUERY_LENGTH = ModelConfig.model_fields["max_query_length"].default
DEFAULT_MAX_PASSAGE_LENGTH = ModelConfig.model_fields["max_passage_length"].default


@dataclass
class EvaluationResult:
    """What one evaluator call produced.

    summary:   flat dict (metrics, counts, timings, ``dataset`` and ``model``);
    tables:    name -> DataFrame (LAReQA: metric matrices query_lang x candidate_lang and
               ``multilingual``; bitext: ``pairs``);
    per_query: one row per (setting, query language, candidate language, query id);
    kind:      ``"lareqa"`` or ``"bitext"``;
    info:      the encoding's provenance (model, encode time, text counts);
    encoded:   the embeddings, only when the call asked to keep them.
    """

    summary: dict
    tables: dict[str, pd.DataFrame]
    per_query: pd.DataFrame = field(repr=False)
    kind: str = "lareqa"
    info: dict = field(default_factory=dict)
    encoded: EncodedCorpus | None = field(default=None, repr=False)


class Evaluator:
    """Scores a model on one RetrievalCorpus; subclasses set :attr:`kind` and :meth:`score`."""

    kind: ClassVar[str]
    # Scalar summary keys the kind can produce (what a study's search.metric may name).
    metric_keys: ClassVar[frozenset[str]]
    candidate_kind: ClassVar[str] = "passage"

    def __init__(self, corpus: RetrievalCorpus, name: str | None = None):
        self.corpus = corpus
        self.name = name or corpus.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, languages={sorted(self.corpus.languages)})"

    def __call__(
        self,
        model: "BiEncoder",
        batch_size: int = 64,
        max_query_length: int = DEFAULT_MAX_QUERY_LENGTH,
        max_passage_length: int = DEFAULT_MAX_PASSAGE_LENGTH,
        keep_embeddings: bool = False,
    ) -> EvaluationResult:
        encoded = encode_corpus(
            model,
            self.corpus,
            batch_size=batch_size,
            max_query_length=max_query_length,
            max_passage_length=max_passage_length,
            candidate_kind=self.candidate_kind,
        )
        result = self.score(encoded)
        result.info = dict(encoded.info)
        if keep_embeddings:
            result.encoded = encoded
        return result

    def score(self, encoded: EncodedCorpus) -> EvaluationResult:
        raise NotImplementedError


def _lareqa_metric_keys(k_values: Sequence[int] = (1, 10)) -> frozenset[str]:
    metrics = [MAP, *(f"{m}@{k}" for k in k_values for m in ("r", "p", "f1")), "ndcg@10"]
    keys = {summary_key(s, m) for s in SETTINGS for m in metrics}
    keys |= {n_cells_key(s) for s in SETTINGS} | {n_queries_key(s) for s in SETTINGS}
    keys |= {RANK_DISTANCE, "n_rank_distance_excluded", "n_cross_pairs_skipped", "encode_s", "score_s"}
    return frozenset(keys)


class LareqaEvaluator(Evaluator):
    """Monolingual, cross-lingual and multilingual LAReQA settings (see lareqa.py)."""

    kind = "lareqa"
    metric_keys = _lareqa_metric_keys()

    def score(self, encoded: EncodedCorpus) -> EvaluationResult:
        result = evaluate_lareqa(encoded)
        tables = dict(result.matrices)
        if len(result.multilingual):
            tables[MULTILINGUAL] = result.multilingual
        return EvaluationResult(dict(result.summary), tables, result.per_query, kind=self.kind)


class BitextEvaluator(Evaluator):
    """Accuracy@1 in both directions (see bitext.py); English is the pivot when present."""

    kind = "bitext"
    metric_keys = frozenset({"accuracy", "accuracy_to_en", "accuracy_from_en", "n_directions", "encode_s"})
    # Both sides of a bitext are sentences of one kind (E5 puts "query: " on both).
    candidate_kind = "query"

    def __init__(self, corpus: RetrievalCorpus, name: str | None = None):
        # A bitext is ranked only against its own other side: unused candidate sentences
        # (e.g. English sentences of the pairs left out by max_queries) need no encoding.
        needed = {cid for targets in corpus.relevant.values() for cid in targets.values()}
        corpus = dataclasses.replace(
            corpus,
            candidates={lang: {c: t for c, t in items.items() if c in needed} for lang, items in corpus.candidates.items()},
        )
        super().__init__(corpus, name)

    def score(self, encoded: EncodedCorpus) -> EvaluationResult:
        # Without English (a FLORES subset), every pair is scored instead of none.
        pivot = "en" if "en" in encoded.queries or "en" in encoded.candidates else None
        result = evaluate_bitext(encoded, pivot=pivot)
        return EvaluationResult(dict(result.summary), {"pairs": result.pairs}, result.per_query, kind=self.kind)


EVALUATORS: dict[str, type[Evaluator]] = {cls.kind: cls for cls in (LareqaEvaluator, BitextEvaluator)}


def metric_keys(kind: str) -> frozenset[str]:
    """The scalar summary keys an evaluator of ``kind`` produces."""
    try:
        return EVALUATORS[kind].metric_keys
    except KeyError:
        raise ValueError(f"unknown evaluation kind {kind!r}; known: {sorted(EVALUATORS)}") from None


def build_evaluator(
    dataset: str,
    languages: Sequence[str] | None = None,
    max_queries: int | None = None,
    seed: int = 0,
    groups: Collection[str] | None = None,
) -> Evaluator:
    """The evaluator of registered set ``dataset`` (its kind from the registry), restricted to
    ``languages`` (any code scheme; None: all) and a fixed-seed sample of ``max_queries`` item
    ids (full candidate pools kept; None: all); ``groups``: only the queries (and known candidates)
    of these documents/articles. Loads the data now, so a bad language or a
    broken file fails before any model is touched."""
    kind = eval_set_kind(dataset)
    corpus = load_eval_set(dataset, languages=None if languages is None else list(languages))
    if groups is not None:  # e.g. the held-out XQuAD articles (hybridir.data.xquad.held_out_articles)
        from hybridir.data.splits import keep_groups

        corpus = keep_groups(corpus, groups, f"{corpus.name}/held-out")
    if max_queries is not None:
        corpus = subset_corpus(corpus, max_queries=max_queries, seed=seed)
    return EVALUATORS[kind](corpus, name=dataset)
