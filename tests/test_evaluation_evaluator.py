"""The evaluator interface: kinds from the registry, LAReQA and bitext evaluators on small real
data (XQuAD-R and Tatoeba subsets) with the tiny random encoder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hybridir.config import ModelConfig
from hybridir.data.registry import eval_set_kind, load_eval_set, register_eval_set
from hybridir.evaluation import build_evaluator, encode_corpus, evaluate_lareqa, subset_corpus
from hybridir.evaluation.evaluator import BitextEvaluator, LareqaEvaluator, metric_keys


@pytest.fixture(scope="module")
def tiny_model(tiny_encoder_dir):
    from hybridir.model import BiEncoder

    return BiEncoder.from_config(ModelConfig(name=str(tiny_encoder_dir)))


def _scalar_keys(summary: dict) -> set[str]:
    return {k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def test_registry_declares_each_sets_kind():
    kinds = {name: eval_set_kind(name) for name in ("xquad-r", "mlqa-r", "afriqa", "tatoeba", "flores")}
    assert kinds == {"xquad-r": "lareqa", "mlqa-r": "lareqa", "afriqa": "lareqa", "tatoeba": "bitext", "flores": "bitext"}
    with pytest.raises(ValueError, match="kind 'ranking'"):
        register_eval_set("never-registered", kind="ranking")
    with pytest.raises(ValueError, match="unknown evaluation set"):
        eval_set_kind("squad")


def test_lareqa_evaluator_equals_the_direct_pipeline(tiny_model):
    evaluator = build_evaluator("xquad-r", languages=["de", "el"], max_queries=8, seed=3)
    assert isinstance(evaluator, LareqaEvaluator) and evaluator.name == "xquad-r"
    result = evaluator(tiny_model, batch_size=32)
    corpus = subset_corpus(load_eval_set("xquad-r", languages=["de", "el"]), max_queries=8, seed=3)
    direct = evaluate_lareqa(encode_corpus(tiny_model, corpus, batch_size=32, max_query_length=64, max_passage_length=192))
    assert result.kind == "lareqa"
    for key in ("mono_map", "cross_map", "multi_map", "rank_distance", "n_multi_queries"):
        assert result.summary[key] == pytest.approx(direct.summary[key])
    pd.testing.assert_frame_equal(result.per_query, direct.per_query)
    pd.testing.assert_frame_equal(result.tables["map"], direct.matrices["map"])
    pd.testing.assert_frame_equal(result.tables["multilingual"], direct.multilingual)
    assert result.info["n_candidate_texts"] >= 2400  # the full de + el candidate pools
    assert result.encoded is None and evaluator(tiny_model, keep_embeddings=True).encoded is not None
    # the pre-Ray check's list of keys covers everything the evaluator reports
    assert _scalar_keys(result.summary) <= metric_keys("lareqa")


def test_bitext_evaluator_per_query_rows(tiny_model):
    evaluator = build_evaluator("tatoeba", languages=["deu", "fra"], max_queries=30, seed=0)
    assert isinstance(evaluator, BitextEvaluator)
    # Tatoeba's pairs are language-specific: 30 sampled a language, and only the English
    # sentences of the sampled pairs are left to encode
    assert {lang: len(q) for lang, q in evaluator.corpus.queries.items()} == {"de": 30, "fr": 30}
    assert sum(map(len, evaluator.corpus.candidates.values())) == 60
    result = evaluator(tiny_model)
    assert result.kind == "bitext" and set(result.tables) == {"pairs"}
    pairs = result.tables["pairs"].set_index(["source", "target"])
    rows = result.per_query
    assert list(rows.columns) == ["setting", "query_lang", "candidate_lang", "query_id", "correct@1", "ap", "rank"]
    assert set(rows.setting) == {"bitext"}
    by_direction = rows.groupby(["query_lang", "candidate_lang"])
    assert sorted(by_direction.groups) == sorted(pairs.index)
    assert by_direction.size().to_dict() == pairs.n_sentences.to_dict()
    # accuracy per direction is the mean of the per-query hits
    np.testing.assert_allclose(by_direction["correct@1"].mean().sort_index(), pairs.accuracy.sort_index())
    # one relevant candidate: AP is the reciprocal rank, a hit is rank 1
    np.testing.assert_allclose(rows.ap, 1.0 / rows["rank"])
    assert ((rows["rank"] == 1) == (rows["correct@1"] == 1)).all()
    assert (rows["rank"] >= 1).all() and (rows["rank"] <= rows.groupby(["query_lang", "candidate_lang"])["rank"].transform("size")).all()
    # both directions of a pair carry the item id
    de = rows[rows.query_lang == "de"].query_id
    assert set(de) == set(rows[(rows.query_lang == "en") & (rows.candidate_lang == "de")].query_id)
    assert not rows.duplicated(["query_lang", "candidate_lang", "query_id"]).any()
    assert result.summary["accuracy"] == pytest.approx(pairs.accuracy.mean())
    assert _scalar_keys(result.summary) <= metric_keys("bitext")


def test_bitext_without_english_scores_every_pair(tiny_model):
    result = build_evaluator("flores", languages=["de", "fr"], max_queries=10)(tiny_model)
    assert sorted(zip(result.tables["pairs"].source, result.tables["pairs"].target)) == [("de", "fr"), ("fr", "de")]
    assert len(result.per_query) == 20 and "accuracy_to_en" not in result.summary


def test_unknown_language_fails_before_any_model_is_used():
    with pytest.raises(ValueError, match="xquad-r has no language"):
        build_evaluator("xquad-r", languages=["en", "sw"])


def test_max_queries_is_per_language_on_parallel_and_on_language_specific_sets():
    # XQuAD-R: parallel items, one sample of ids shared by every language
    xquad = subset_corpus(load_eval_set("xquad-r", languages=["de", "el"]), max_queries=8, seed=3)
    assert {lang: len(q) for lang, q in xquad.queries.items()} == {"de": 8, "el": 8}
    assert set(xquad.queries["de"]) == set(xquad.queries["el"])
    # AfriQA: every question is asked in one language only; the cap applies to each language
    full = load_eval_set("afriqa", languages=["ha", "sw"])
    afriqa = subset_corpus(full, max_queries=8, seed=3)
    assert {lang: len(q) for lang, q in afriqa.queries.items()} == {"ha": 8, "sw": 8}
    assert set(afriqa.relevant) == set(afriqa.queries["ha"]) | set(afriqa.queries["sw"])
    assert afriqa.candidates == full.candidates  # full pools
    assert subset_corpus(full, max_queries=8, seed=3) == afriqa  # deterministic
