"""LAReQA settings on a hand-built corpus whose scores are chosen directly.

Candidates are one-hot vectors (a1, a2, b1, b2, b3 = e0..e4), so a query vector IS its score
row over the five candidates, and every expected value below is computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from hybridir.data.types import RetrievalCorpus
from hybridir.evaluation import EncodedCorpus, evaluate_lareqa, subset_corpus

CANDIDATES = ["a1", "a2", "b1", "b2", "b3"]
SCORES = {  # (language, item) -> scores over CANDIDATES
    ("a", "q1"): [0.9, 0.1, 0.5, 0.95, 0.0],
    ("a", "q2"): [0.3, 0.2, 0.1, 0.4, 0.0],
    ("b", "q1"): [0.2, 0.3, 0.8, 0.1, 0.0],
    ("b", "q2"): [0.6, 0.5, 0.7, 0.7, 0.0],  # relevant b2 ties with b1: pessimistic
    ("b", "q3"): [0.0, 0.9, 0.1, 0.2, 0.3],  # q3 exists in b only
}
RELEVANT = {"q1": {"a": "a1", "b": "b1"}, "q2": {"a": "a2", "b": "b2"}, "q3": {"b": "b3"}}


def hand_built() -> EncodedCorpus:
    eye = np.eye(5, dtype=np.float32)
    query_ids = {"a": ["q1", "q2"], "b": ["q1", "q2", "q3"]}
    return EncodedCorpus.from_arrays(
        "hand",
        query_ids,
        {lang: np.array([SCORES[lang, q] for q in ids], dtype=np.float32) for lang, ids in query_ids.items()},
        {"a": ["a1", "a2"], "b": ["b1", "b2", "b3"]},
        {"a": eye[:2], "b": eye[2:]},
        RELEVANT,
    )


def test_settings_match_hand_computation():
    result = evaluate_lareqa(hand_built())
    s = result.summary
    # mono: a = mean(1, 1/2); b = mean(1, 1/2 (tie), 1)
    assert s["mono_map"] == pytest.approx((0.75 + 2.5 / 3) / 2)
    assert s["mono_r@1"] == pytest.approx((0.5 + 2 / 3) / 2)
    # cross: a->b = mean(1/2, 1); b->a = mean(1/2, 1/2); q3 has no answer in a: left out
    assert s["cross_map"] == pytest.approx((0.75 + 0.5) / 2)
    assert s["n_cross_cells"] == 2 and s["n_cross_pairs_skipped"] == 0
    assert s["n_cross_queries"] == 4
    # multi: a = mean(7/12, 5/6); b = mean(5/6, 1/2, 1/2)
    assert s["multi_map"] == pytest.approx((17 / 24 + 11 / 18) / 2)
    # rank distance: a = mean(1, 2); b = mean(2, 2) with single-relevant q3 excluded
    assert s["rank_distance"] == pytest.approx(1.75)
    assert s["n_rank_distance_excluded"] == 1

    ap = result.matrices["map"]
    assert list(ap.index) == ["a", "b"] and list(ap.columns) == ["a", "b"]
    assert ap.loc["a", "a"] == pytest.approx(0.75) and ap.loc["b", "b"] == pytest.approx(2.5 / 3)
    assert ap.loc["a", "b"] == pytest.approx(0.75) and ap.loc["b", "a"] == pytest.approx(0.5)
    assert result.matrices["n_queries"].loc["b", "b"] == 3
    assert result.matrices["n_queries"].loc["b", "a"] == 2

    multi = result.multilingual
    assert multi.loc["a", "map"] == pytest.approx(17 / 24)
    assert multi.loc["b", "rank_distance"] == pytest.approx(2.0)
    assert multi.loc["b", "n_queries"] == 3 and multi.loc["b", "n_rank_distance_excluded"] == 1
    q2b = result.per_query.query("setting == 'multi' and query_lang == 'b' and query_id == 'q2'")
    assert q2b["ap"].item() == pytest.approx(0.5) and q2b["rank_distance"].item() == 2


def test_single_setting_and_k_values():
    result = evaluate_lareqa(hand_built(), settings=("cross",), k_values=(2,))
    assert "mono_map" not in result.summary and "multi_map" not in result.summary
    # a->b: q1 rank 2, q2 rank 1 -> R@2 = 1; b->a: both rank 2 -> 1
    assert result.summary["cross_r@2"] == 1.0
    assert np.isnan(result.matrices["map"].loc["a", "a"])


def test_corpus_without_shared_languages_produces_cross_only():
    encoded = hand_built()
    only_a_queries = EncodedCorpus(encoded.name, {"a": encoded.queries["a"]}, {"b": encoded.candidates["b"]}, encoded.relevant)
    result = evaluate_lareqa(only_a_queries)
    assert result.summary["n_mono_cells"] == 0 and "mono_map" not in result.summary
    assert result.summary["cross_map"] == pytest.approx(0.75)
    # multilingual pool = b only, one relevant per query: no rank distance defined
    assert result.summary["n_rank_distance_excluded"] == 2


def test_rejects_unknown_setting_and_missing_candidate():
    with pytest.raises(ValueError, match="unknown settings"):
        evaluate_lareqa(hand_built(), settings=("mono", "bilingual"))
    encoded = hand_built()
    broken = EncodedCorpus(encoded.name, encoded.queries, encoded.candidates, {**RELEVANT, "q1": {"a": "zz", "b": "b1"}})
    with pytest.raises(ValueError, match="zz"):
        evaluate_lareqa(broken, settings=("mono",))


def test_save_load_round_trip(tmp_path):
    encoded = hand_built()
    loaded = EncodedCorpus.load(encoded.save(tmp_path / "emb"))
    assert loaded.relevant == encoded.relevant
    assert loaded.queries["b"].ids == ["q1", "q2", "q3"]
    np.testing.assert_array_equal(loaded.candidates["b"].vectors, encoded.candidates["b"].vectors)
    assert evaluate_lareqa(loaded).summary["multi_map"] == evaluate_lareqa(encoded).summary["multi_map"]


def text_corpus() -> RetrievalCorpus:
    return RetrievalCorpus(
        name="toy",
        queries={"a": {f"q{i}": f"question {i}" for i in range(6)}, "b": {f"q{i}": f"frage {i}" for i in range(4)}},
        candidates={"a": {f"a{i}": f"answer {i}" for i in range(6)}, "b": {f"b{i}": f"antwort {i}" for i in range(5)}},
        relevant={f"q{i}": {"a": f"a{i}", **({"b": f"b{i}"} if i < 4 else {})} for i in range(6)},
        groups={f"q{i}": f"doc{i // 2}" for i in range(6)},
    )


def test_subset_keeps_full_pools_and_same_ids_in_every_language():
    corpus = text_corpus()
    small = subset_corpus(corpus, languages=["a", "b"], max_queries=3, seed=1)
    assert small.candidates == corpus.candidates
    ids = set(small.relevant)
    assert len(ids) == 3 and set(small.queries["a"]) == ids
    assert set(small.queries["b"]) == ids & set(corpus.queries["b"])
    assert subset_corpus(corpus, max_queries=3, seed=1) == small  # deterministic
    only_b = subset_corpus(corpus, languages=["b"])
    assert list(only_b.candidates) == ["b"] and all(set(r) == {"b"} for r in only_b.relevant.values())
    with pytest.raises(ValueError, match=r"\['xx'\] not in toy"):
        subset_corpus(corpus, languages=["a", "xx"])
    with pytest.raises(ValueError, match="max_queries"):
        subset_corpus(corpus, max_queries=0)
