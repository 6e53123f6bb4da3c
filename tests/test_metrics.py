"""Per-query ranking metrics: hand-computed cases, ties, and a brute-force cross-check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hybridir.evaluation.metrics import (
    RelevantRanks,
    average_precision,
    f1_at,
    ndcg_at,
    per_query_metrics,
    precision_at,
    rank_distance,
    recall_at,
    relevant_ranks,
)


def ranks_of(scores, relevant) -> RelevantRanks:
    return relevant_ranks(np.asarray([scores], dtype=np.float32), [relevant])


def test_two_relevant_without_ties():
    rr = ranks_of([0.9, 0.8, 0.7, 0.6, 0.5], [3, 1])
    assert rr.ranks.tolist() == [[2, 4]]
    assert average_precision(rr)[0] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert recall_at(rr, 1)[0] == 0 and recall_at(rr, 2)[0] == 0.5 and recall_at(rr, 10)[0] == 1
    assert precision_at(rr, 2)[0] == 0.5 and precision_at(rr, 10)[0] == pytest.approx(0.2)
    assert f1_at(rr, 1)[0] == 0
    assert f1_at(rr, 10)[0] == pytest.approx(2 * 0.2 * 1 / 1.2)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at(rr, 10)[0] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert rank_distance(rr)[0] == 2


def test_tie_with_non_relevant_is_pessimistic():
    rr = ranks_of([0.5, 0.5, 0.5], [0])
    assert rr.ranks.tolist() == [[3]]
    assert average_precision(rr)[0] == pytest.approx(1 / 3)
    assert recall_at(rr, 1)[0] == 0
    # the same relevant candidate wins once it strictly beats the others
    assert ranks_of([0.5000001, 0.5, 0.5], [0]).ranks.tolist() == [[1]]


def test_tied_relevant_take_consecutive_positions_after_tied_non_relevant():
    # candidates 0 and 2 are relevant; candidate 1 (non-relevant) ties with them
    rr = ranks_of([0.7, 0.7, 0.7, 0.1], [0, 2])
    assert rr.ranks.tolist() == [[2, 3]]
    assert average_precision(rr)[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert rank_distance(rr)[0] == 1
    # two relevant tied with each other only: positions 2 and 3 behind the better one
    assert ranks_of([0.5, 0.5, 0.9], [0, 1]).ranks.tolist() == [[2, 3]]


def test_relevant_at_last_position():
    rr = ranks_of([0.9, 0.8, 0.7, 0.1], [3])
    assert rr.ranks.tolist() == [[4]]
    assert average_precision(rr)[0] == pytest.approx(0.25)
    assert ndcg_at(rr, 10)[0] == pytest.approx(1 / math.log2(5))
    assert ndcg_at(rr, 3)[0] == 0
    assert math.isnan(rank_distance(rr)[0])  # one relevant: no distance


def test_ndcg_ideal_is_capped_at_k():
    scores = np.linspace(1, 0, 20)
    rr = ranks_of(scores, list(range(12)))  # 12 relevant, all ranked first
    assert ndcg_at(rr, 10)[0] == pytest.approx(1.0)
    assert recall_at(rr, 10)[0] == pytest.approx(10 / 12)
    assert average_precision(rr)[0] == pytest.approx(1.0)
    assert rank_distance(rr)[0] == 11


def test_mask_and_index_lists_agree_and_rows_pad():
    scores = torch.tensor([[0.1, 0.9, 0.3, 0.4], [0.8, 0.2, 0.6, 0.5]])
    mask = torch.tensor([[False, True, False, True], [True, False, False, False]])
    by_mask = relevant_ranks(scores, mask)
    by_lists = relevant_ranks(scores, [[1, 3], [0]])
    assert by_mask.ranks.tolist() == by_lists.ranks.tolist() == [[1, 2], [1, 0]]
    assert by_mask.n_relevant.tolist() == [2, 1]
    metrics = per_query_metrics(by_mask, k_values=(1,))
    assert metrics["ap"].tolist() == [1.0, 1.0]
    assert metrics["r@1"].tolist() == [0.5, 1.0]
    assert metrics["p@1"].tolist() == [1.0, 1.0]
    assert metrics["f1@1"][0] == pytest.approx(2 / 3)


def brute_force_ranks(scores: np.ndarray, relevant: set[int]) -> list[int]:
    # Python's sort is stable: sort by (-score, relevant) puts relevant last among equals.
    order = sorted(range(len(scores)), key=lambda c: (-scores[c], c in relevant))
    return sorted(order.index(c) + 1 for c in relevant)


def test_matches_brute_force_on_random_scores_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, size=(40, 30)).astype(np.float32)  # coarse scores: ties everywhere
    relevant = [sorted(rng.choice(30, size=rng.integers(1, 6), replace=False).tolist()) for _ in range(40)]
    rr = relevant_ranks(scores, relevant)
    for i in range(40):
        expected = brute_force_ranks(scores[i], set(relevant[i]))
        assert rr.ranks[i, : len(expected)].tolist() == expected
        ap = np.mean([(j + 1) / r for j, r in enumerate(expected)])
        assert average_precision(rr)[i] == pytest.approx(ap)


def test_concatenate_chunks():
    scores = np.array([[0.9, 0.1, 0.2], [0.1, 0.9, 0.2]], dtype=np.float32)
    whole = relevant_ranks(scores, [[0, 2], [2]])
    parts = RelevantRanks.concatenate([relevant_ranks(scores[:1], [[0, 2]]), relevant_ranks(scores[1:], [[2]])])
    assert parts.ranks.tolist() == whole.ranks.tolist()
    assert parts.n_relevant.tolist() == whole.n_relevant.tolist()


@pytest.mark.parametrize(
    "relevant, message",
    [([[0], []], "no relevant candidate"), ([[0], [5]], "out of range"), ([[1, 1], [0]], "duplicate")],
)
def test_bad_relevance_is_rejected(relevant, message):
    with pytest.raises(ValueError, match=message):
        relevant_ranks(np.zeros((2, 3), dtype=np.float32), relevant)


def test_bad_shapes_and_cutoffs_are_rejected():
    with pytest.raises(ValueError, match="2-D"):
        relevant_ranks(np.zeros(3), [[0]])
    with pytest.raises(ValueError, match="relevance given for 1 queries"):
        relevant_ranks(np.zeros((2, 3)), [[0]])
    with pytest.raises(ValueError, match="k must be >= 1"):
        recall_at(ranks_of([0.1, 0.2], [0]), 0)
