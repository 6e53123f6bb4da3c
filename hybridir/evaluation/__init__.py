"""Zero-shot evaluation: encode once, then score LAReQA settings and bitext retrieval."""

from hybridir.evaluation.bitext import BitextResult, evaluate_bitext
from hybridir.evaluation.encode import EmbeddingTable, EncodedCorpus, encode_corpus, encode_texts
from hybridir.evaluation.lareqa import SETTINGS, LareqaResult, evaluate_lareqa, subset_corpus
from hybridir.evaluation.metrics import RelevantRanks, per_query_metrics, relevant_ranks
from hybridir.evaluation.evaluator import EvaluationResult, Evaluator, build_evaluator

__all__ = [
    "SETTINGS",
    "BitextResult",
    "EmbeddingTable",
    "EncodedCorpus",
    "EvaluationResult",
    "Evaluator",
    "LareqaResult",
    "RelevantRanks",
    "build_evaluator",
    "encode_corpus",
    "encode_texts",
    "evaluate_bitext",
    "evaluate_lareqa",
    "per_query_metrics",
    "relevant_ranks",
    "subset_corpus",
]
