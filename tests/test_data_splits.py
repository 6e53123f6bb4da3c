"""Document/article-level splits and the leakage guard on real XQuAD / XQuAD-R / NTREX."""

from __future__ import annotations

import pytest

from hybridir.data.lareqa import load_xquad_r
from hybridir.data.ntrex import load_ntrex
from hybridir.data.splits import (
    LeakageError,
    check_no_leakage,
    drop_groups,
    split_articles,
    split_by_group,
)
from hybridir.data.xquad import load_xquad


@pytest.fixture(scope="module")
def xquad():
    return load_xquad(["en", "de"])


@pytest.fixture(scope="module")
def xquad_r():
    return load_xquad_r(["en", "de"])


def test_split_by_group_is_seeded_and_document_level() -> None:
    pairs = load_ntrex(languages=["en", "de"])
    train, validation = split_by_group(pairs, 0.1, seed=0)
    again, _ = split_by_group(pairs, 0.1, seed=0)
    other, _ = split_by_group(pairs, 0.1, seed=1)
    assert train.item_ids == again.item_ids and train.item_ids != other.item_ids
    assert len(train) + len(validation) == len(pairs)
    assert not set(train.groups) & set(validation.groups)
    assert len(set(validation.groups)) == 12  # round(0.1 * 123)
    i = pairs.item_ids.index(validation.item_ids[0])
    assert validation.queries["de"][0] == pairs.queries["de"][i]
    assert validation.passages["en"][0] == pairs.passages["en"][i]
    assert len(split_by_group(pairs, 0.0, seed=0)[1]) == 0
    with pytest.raises(ValueError, match="fraction=1.0"):
        split_by_group(pairs, 1.0, seed=0)


def test_training_on_xquad_leaks_into_xquad_r(xquad, xquad_r) -> None:
    with pytest.raises(LeakageError, match=r"1190 shared item ids .*48 shared documents/articles .*'Amazon_rainforest'"):
        check_no_leakage(xquad, xquad_r)


def test_article_split_both_ways_has_no_leakage(xquad, xquad_r) -> None:
    train, _ = split_articles(xquad, 0.5, seed=3)
    _, evaluation = split_articles(xquad_r, 0.5, seed=3)
    check_no_leakage(train, evaluation)
    assert len(set(train.groups)) == 24 and len(set(evaluation.groups.values())) == 24
    assert len(train) + len(evaluation.relevant) == 1190
    # The held-out corpus keeps only its own articles' sentences as candidates.
    assert set(evaluation.candidate_groups.values()) == set(evaluation.groups.values())
    assert all(cid in evaluation.candidates[lang] for per in evaluation.relevant.values() for lang, cid in per.items())
    # Different seeds hold out different articles: a mismatched pair leaks.
    _, mismatched = split_articles(xquad_r, 0.5, seed=4)
    with pytest.raises(LeakageError, match="shared item ids"):
        check_no_leakage(train, mismatched)


def test_dropping_evaluation_articles_from_training(xquad, xquad_r) -> None:
    _, evaluation = split_articles(xquad_r, 0.25, seed=0)
    train = drop_groups(xquad, set(evaluation.groups.values()))
    check_no_leakage(train, evaluation)
    assert len(set(train.groups)) == 48 - 12


def test_ntrex_does_not_leak_into_xquad_r(xquad_r) -> None:
    check_no_leakage(load_ntrex(languages=["en"], window=1), xquad_r)
