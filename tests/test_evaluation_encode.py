"""encode_corpus: every distinct text goes through the model exactly once, rows keep their ids."""

from __future__ import annotations

import numpy as np
import pytest

from hybridir.config import ModelConfig
from hybridir.data.types import RetrievalCorpus
from hybridir.evaluation import encode_corpus, evaluate_lareqa
from hybridir.model import BiEncoder


@pytest.fixture(scope="module")
def tiny_model(tiny_encoder_dir) -> BiEncoder:
    return BiEncoder.from_config(ModelConfig(name=str(tiny_encoder_dir), query_prefix="query: ", passage_prefix="passage: "))


def corpus() -> RetrievalCorpus:
    # lengths vary a lot so that length-sorting actually reorders the texts
    questions = {"en": ["Who wrote it?", "When did the long war between the two old kingdoms end?", "Why?"],
                 "de": ["Wer schrieb es?", "Wann endete der lange Krieg zwischen den beiden alten Königreichen?", "Warum?"]}
    answers = {"en": ["A poet wrote it in the spring.", "It ended in 1648.", "Because.", "An unrelated sentence."],
               "de": ["Ein Dichter schrieb es im Frühling.", "Er endete 1648.", "Weil."]}  # fmt: skip
    return RetrievalCorpus(
        name="toy",
        queries={l: {f"q{i}": t for i, t in enumerate(ts)} for l, ts in questions.items()},
        candidates={l: {f"{l}{i}": t for i, t in enumerate(ts)} for l, ts in answers.items()},
        relevant={f"q{i}": {"en": f"en{i}", "de": f"de{i}"} for i in range(3)},
    )


def test_each_text_is_encoded_once_in_original_order(tiny_model, monkeypatch):
    texts_seen: list[int] = []
    original = tiny_model.forward

    def counting_forward(input_ids, attention_mask):
        texts_seen.append(len(input_ids))
        return original(input_ids, attention_mask)

    monkeypatch.setattr(tiny_model, "forward", counting_forward)
    data = corpus()
    encoded = encode_corpus(tiny_model, data, batch_size=2)
    # 6 questions + 7 candidates, each encoded once, in batches of at most 2
    assert sum(texts_seen) == 13 and max(texts_seen) == 2
    assert encoded.info["n_query_texts"] == 6 and encoded.info["n_candidate_texts"] == 7
    monkeypatch.undo()

    for lang, items in data.queries.items():
        assert encoded.queries[lang].ids == list(items)
        expected = tiny_model.encode(list(items.values()), "query", batch_size=1).numpy()
        np.testing.assert_allclose(encoded.queries[lang].vectors, expected, atol=1e-5)
    for lang, items in data.candidates.items():
        expected = tiny_model.encode(list(items.values()), "passage", batch_size=1).numpy()
        np.testing.assert_allclose(encoded.candidates[lang].vectors, expected, atol=1e-5)
    assert encoded.queries["en"].vectors.dtype == np.float32


def test_duplicate_texts_are_encoded_once(tiny_model, monkeypatch):
    texts_seen: list[int] = []
    original = tiny_model.forward
    monkeypatch.setattr(tiny_model, "forward", lambda ids, mask: texts_seen.append(len(ids)) or original(ids, mask))
    data = corpus()
    data.candidates["de"]["de2"] = data.candidates["en"]["en2"] = "Weil."  # the same string twice
    encoded = encode_corpus(tiny_model, data, batch_size=64)
    assert sum(texts_seen) == 12
    np.testing.assert_array_equal(encoded.candidates["de"].vectors[2], encoded.candidates["en"].vectors[2])


def test_training_mode_is_restored_and_results_deterministic(tiny_model):
    tiny_model.train()
    first = encode_corpus(tiny_model, corpus(), batch_size=3)
    assert tiny_model.training
    second = encode_corpus(tiny_model, corpus(), batch_size=5)
    np.testing.assert_allclose(first.candidates["en"].vectors, second.candidates["en"].vectors, atol=1e-5)
    assert evaluate_lareqa(first).summary["mono_map"] == pytest.approx(evaluate_lareqa(second).summary["mono_map"])


def test_rejects_bad_batch_size(tiny_model):
    with pytest.raises(ValueError, match="batch_size"):
        encode_corpus(tiny_model, corpus(), batch_size=0)
