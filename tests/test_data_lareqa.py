"""XQuAD-R and MLQA-R parsed from the real LAReQA files."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from hybridir.data.files import data_file, resolve
from hybridir.data.lareqa import (
    LAREQA_REPO,
    MLQA_R_LANGUAGES,
    XQUAD_R_LANGUAGES,
    answer_sentence,
    lareqa_file,
    parse_lareqa_file,
    load_mlqa_r,
    load_xquad_r,
)

# Candidate counts of the LAReQA README table.
README_CANDIDATES = {
    "ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244,
    "ru": 1219, "th": 852, "tr": 1167, "vi": 1209, "zh": 1196,
}  # fmt: skip


@pytest.fixture(scope="module")
def xquad_r():
    return load_xquad_r()


def test_xquad_r_counts_match_the_lareqa_readme(xquad_r) -> None:
    assert xquad_r.query_languages == sorted(XQUAD_R_LANGUAGES)
    assert {lang: len(q) for lang, q in xquad_r.queries.items()} == dict.fromkeys(XQUAD_R_LANGUAGES, 1190)
    assert {lang: len(c) for lang, c in xquad_r.candidates.items()} == README_CANDIDATES


def test_every_xquad_r_question_has_one_candidate_per_language(xquad_r) -> None:
    assert len(xquad_r.relevant) == 1190
    for qid, per_language in xquad_r.relevant.items():
        assert sorted(per_language) == sorted(XQUAD_R_LANGUAGES)
        for lang, cid in per_language.items():
            assert cid in xquad_r.candidates[lang] and cid.startswith(f"{lang}/")
    all_ids = [cid for pool in xquad_r.candidates.values() for cid in pool]
    assert len(all_ids) == len(set(all_ids)) == sum(README_CANDIDATES.values())


def test_the_relevant_sentence_holds_the_answer(xquad_r) -> None:
    question = "How many points did the Panthers defense surrender?"
    qid = next(q for q, text in xquad_r.queries["en"].items() if text == question)
    sentence = xquad_r.candidates["en"][xquad_r.relevant[qid]["en"]]
    assert "308 points" in sentence
    assert xquad_r.groups[qid] == "Super_Bowl_50"
    assert len(set(xquad_r.groups.values())) == 48
    assert set(xquad_r.candidate_groups.values()) == set(xquad_r.groups.values())


def test_no_answer_falls_between_sentences_in_the_pinned_files() -> None:
    for lang in XQUAD_R_LANGUAGES:
        parsed = lareqa_file("xquad-r", lang)
        assert parsed.answers_in_gaps == 0 and parsed.repeated_paragraphs == 0


def test_answer_sentence_rule() -> None:
    breaks = [[0, 10], [11, 20], [20, 30]]  # a one-character gap, then adjacent spans (zh)
    assert answer_sentence(breaks, 0, "x") == (0, False)
    assert answer_sentence(breaks, 9, "x") == (0, False)
    assert answer_sentence(breaks, 10, "x") == (1, True)  # in the gap: the following sentence
    assert answer_sentence(breaks, 10, " x") == (1, False)  # leading space of the answer skipped
    assert answer_sentence(breaks, 20, "x") == (2, False)  # half-open: 20 starts the third span
    with pytest.raises(ValueError, match="after the last sentence"):
        answer_sentence(breaks, 30, "x")


def test_mlqa_r_ids_exist_in_two_to_four_languages() -> None:
    corpus = load_mlqa_r()
    assert corpus.query_languages == sorted(MLQA_R_LANGUAGES)
    spread = Counter(len(per_language) for per_language in corpus.relevant.values())
    assert set(spread) == {2, 3, 4} and sum(spread.values()) == len(corpus.queries["en"]) == 1148
    for qid, per_language in corpus.relevant.items():
        assert "en" in per_language
        for lang, cid in per_language.items():
            assert qid in corpus.queries[lang] and cid in corpus.candidates[lang]
    # Groups are English titles for every language (MLQA titles differ per language).
    assert len(set(corpus.groups.values())) == 520
    assert set(corpus.candidate_groups.values()) <= set(corpus.groups.values())
    for lang in MLQA_R_LANGUAGES:
        parsed = lareqa_file("mlqa-r", lang)
        raw = json.loads(resolve(data_file(LAREQA_REPO, f"mlqa-r/{lang}.json")).read_text(encoding="utf-8"))
        paragraphs = {p["context"]: p for a in raw["data"] for p in a["paragraphs"]}
        assert len(parsed.candidates) == sum(len(p["sentences"]) for p in paragraphs.values())
        assert parsed.answers_in_gaps == 0


def test_language_subset_and_unknown_language() -> None:
    corpus = load_mlqa_r(["de", "zh"])
    assert corpus.query_languages == ["de", "zh"]
    assert all(set(per) <= {"de", "zh"} for per in corpus.relevant.values())
    assert all(corpus.groups[qid] for qid in corpus.relevant)
    with pytest.raises(ValueError, match=r"languages \['th'\] not available"):
        load_mlqa_r(["th"])


def test_a_repeated_paragraph_reuses_its_candidates(tmp_path) -> None:
    raw = json.loads(resolve(data_file(LAREQA_REPO, "mlqa-r/en.json")).read_text(encoding="utf-8"))
    article = raw["data"][0]
    repeat = json.loads(json.dumps(article["paragraphs"][0]))
    repeat["qas"] = [dict(qa, id=qa["id"] + "-again") for qa in repeat["qas"]]
    small = {"data": [{"title": article["title"], "paragraphs": [article["paragraphs"][0], repeat]}]}
    path = tmp_path / "en.json"
    path.write_text(json.dumps(small), encoding="utf-8")
    parsed = parse_lareqa_file(path, "en")
    assert parsed.repeated_paragraphs == 1
    assert len(parsed.candidates) == len(article["paragraphs"][0]["sentences"])
    for qa in repeat["qas"]:
        assert parsed.relevant[qa["id"]] == parsed.relevant[qa["id"].removesuffix("-again")]
