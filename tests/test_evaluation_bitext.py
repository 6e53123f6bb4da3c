"""Bitext accuracy in both directions, on hand-chosen similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest

from hybridir.evaluation import EncodedCorpus, evaluate_bitext

# rows: German sentences, columns: their English translations (one-hot candidates)
S = np.array([[0.9, 0.1, 0.2], [0.8, 0.7, 0.1], [0.1, 0.2, 0.3]], dtype=np.float32)


def tatoeba_like() -> EncodedCorpus:
    """de-en and fr-en pairs whose English sides are kept apart (as in Tatoeba)."""
    eye = np.eye(5, dtype=np.float32)
    fr = np.array([[0, 0, 0, 0.5, 0.4], [0, 0, 0, 0.6, 0.1]], dtype=np.float32)  # fr1 -> en of fr0: miss
    fr[:, :3] = 0.95  # the de pair's English sentences must not be in the fr pool
    de = np.concatenate([S, np.zeros((3, 2), np.float32)], axis=1)
    return EncodedCorpus.from_arrays(
        "tatoeba-like",
        {"de": ["d0", "d1", "d2"], "fr": ["f0", "f1"]},
        {"de": de, "fr": fr},
        {"en": ["d0/en", "d1/en", "d2/en", "f0/en", "f1/en"]},
        {"en": eye},
        {**{f"d{i}": {"en": f"d{i}/en"} for i in range(3)}, **{f"f{i}": {"en": f"f{i}/en"} for i in range(2)}},
    )


def test_both_directions_from_one_matrix():
    result = evaluate_bitext(tatoeba_like())
    pairs = result.pairs.set_index(["source", "target"])
    assert pairs.loc[("de", "en"), "accuracy"] == pytest.approx(2 / 3)  # row 1 picks column 0
    assert pairs.loc[("en", "de"), "accuracy"] == pytest.approx(1.0)  # every column's max is on the diagonal
    # fr rows [0.5, 0.4], [0.6, 0.1]: f0 right, f1 wrong -> 1/2;
    # columns [0.5, 0.6] (picks f1, wants f0), [0.4, 0.1] (picks f0, wants f1) -> 0
    assert pairs.loc[("fr", "en"), "accuracy"] == pytest.approx(0.5)
    assert pairs.loc[("en", "fr"), "accuracy"] == 0.0
    assert pairs.loc[("de", "en"), "n_sentences"] == 3
    assert result.summary["accuracy_to_en"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert result.summary["accuracy_from_en"] == pytest.approx(0.5)
    assert result.summary["n_directions"] == 4


def test_ties_count_as_misses():
    tied = EncodedCorpus.from_arrays(
        "tied", {"de": ["a", "b"]}, {"de": np.ones((2, 2), np.float32)},
        {"en": ["a/en", "b/en"]}, {"en": np.eye(2, dtype=np.float32)}, {"a": {"en": "a/en"}, "b": {"en": "b/en"}},
    )  # fmt: skip
    assert evaluate_bitext(tied).summary["accuracy"] == 0.0


def test_shared_translation_is_rejected():
    shared = EncodedCorpus.from_arrays(
        "shared", {"de": ["a", "b"]}, {"de": np.eye(2, dtype=np.float32)},
        {"en": ["x", "y"]}, {"en": np.eye(2, dtype=np.float32)}, {"a": {"en": "x"}, "b": {"en": "x"}},
    )  # fmt: skip
    with pytest.raises(ValueError, match="not a bitext"):
        evaluate_bitext(shared)
