"""The offline multilingual-e5-small (Q4_0-dequantized) on a real slice of XQuAD-R.

One encoding (3 languages, 60 questions, the FULL candidate pools of those languages) serves
both checks: the zero-shot numbers are far above chance, and AP / nDCG@10 / R@k agree with
trec_eval (via ir_measures) on the real rankings.
"""

from __future__ import annotations

import ir_measures
import numpy as np
import pytest
from ir_measures import AP, P, R, Qrel, ScoredDoc, nDCG

from hybridir.config import ModelConfig
from hybridir.data.registry import load_eval_set
from hybridir.evaluation import encode_corpus, evaluate_lareqa, subset_corpus

pytestmark = pytest.mark.model

LANGUAGES = ["ar", "en", "th"]  # three scripts; th has the smallest pool (852)


@pytest.fixture(scope="module")
def encoded():
    from hybridir.model import BiEncoder

    corpus = subset_corpus(load_eval_set("xquad-r", languages=LANGUAGES), max_queries=60, seed=0)
    model = BiEncoder.from_config(ModelConfig(name="me5-small-offline"))
    return encode_corpus(model, corpus, batch_size=64)


@pytest.fixture(scope="module")
def result(encoded):
    return evaluate_lareqa(encoded)


def test_zero_shot_is_far_above_chance(encoded, result):
    s = result.summary
    assert s["n_mono_queries"] == 180 and s["n_multi_queries"] == 180 and s["n_cross_cells"] == 6
    # chance AP with one relevant among ~1,200 candidates is about ln(1200)/1200 < 0.01
    assert s["mono_map"] > 0.5
    assert s["cross_map"] > 0.3
    assert s["multi_map"] > 0.3
    assert s["mono_map"] > s["multi_map"]  # same-language candidates crowd the pooled ranking
    assert s["mono_r@10"] > s["mono_r@1"] > 0.3
    assert 0 < s["rank_distance"] < 1000
    assert len(encoded.candidates["en"]) == 1180  # full pool, not the 60 questions' answers


def multi_rankings(encoded, result):
    """Scores of every query against the pooled candidates, as trec-style qrels and run."""
    pool_ids = [cid for lang in sorted(encoded.candidates) for cid in encoded.candidates[lang].ids]
    pool = np.concatenate([encoded.candidates[lang].vectors for lang in sorted(encoded.candidates)])
    qrels, run, tied = [], [], set()
    for lang in sorted(encoded.queries):
        table = encoded.queries[lang]
        scores = table.vectors @ pool.T
        for qid, row in zip(table.ids, scores):
            name = f"{lang}:{qid}"
            relevant = set(encoded.relevant[qid].values())
            rel_scores = {float(s) for cid, s in zip(pool_ids, row) if cid in relevant}
            if any(float(s) in rel_scores for cid, s in zip(pool_ids, row) if cid not in relevant):
                tied.add(name)  # trec_eval breaks such ties by docid, we pessimistically
            qrels += [Qrel(name, cid, 1) for cid in relevant]
            run += [ScoredDoc(name, cid, float(s)) for cid, s in zip(pool_ids, row)]
    return qrels, run, tied


def test_agrees_with_trec_eval_on_real_rankings(encoded, result):
    qrels, run, tied = multi_rankings(encoded, result)
    assert len(tied) < 10
    theirs = {}
    for m in ir_measures.iter_calc([AP, nDCG @ 10, R @ 1, R @ 10, P @ 10], qrels, run):
        theirs.setdefault(m.query_id, {})[str(m.measure)] = m.value
    ours = result.per_query[result.per_query.setting == "multi"]
    compared = 0
    for row in ours.to_dict("records"):
        name = f"{row['query_lang']}:{row['query_id']}"
        if name in tied:
            continue
        assert row["ap"] == pytest.approx(theirs[name]["AP"], abs=1e-4)
        assert row["ndcg@10"] == pytest.approx(theirs[name]["nDCG@10"], abs=1e-4)
        assert row["r@1"] == pytest.approx(theirs[name]["R@1"], abs=1e-6)
        assert row["r@10"] == pytest.approx(theirs[name]["R@10"], abs=1e-6)
        assert row["p@10"] == pytest.approx(theirs[name]["P@10"], abs=1e-6)
        compared += 1
    assert compared >= 170
