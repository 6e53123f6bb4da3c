"""The dataset registry: names, language checks, the extension point, the datasets loader."""

from __future__ import annotations

import pytest

from hybridir.data import registry
from hybridir.data.files import data_file, resolve
from hybridir.data.registry import (
    eval_set_languages,
    list_eval_sets,
    list_train_sources,
    load_eval_set,
    load_train_source,
    register_eval_set,
)
from hybridir.data.types import RetrievalCorpus


def test_builtin_names() -> None:
    assert list_eval_sets() == ["afriqa", "flores", "mlqa-r", "tatoeba", "xquad-r"]
    assert list_train_sources() == ["hf-pairs", "ntrex", "xquad"]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown evaluation set 'xquad'; known: \['afriqa'"):
        load_eval_set("xquad")
    with pytest.raises(ValueError, match=r"unknown training source 'mlqa'; known: \['hf-pairs', 'ntrex', 'xquad'\]"):
        load_train_source("mlqa")


def test_languages_in_any_scheme_and_unknown_languages() -> None:
    corpus = load_eval_set("xquad-r", languages=["deu", "zho-CN"])
    assert corpus.query_languages == ["de", "zh"]
    with pytest.raises(ValueError, match=r"xquad-r has no language \['ro'\]; its languages are \['ar', 'de'"):
        load_eval_set("xquad-r", languages=["de", "ro"])
    with pytest.raises(ValueError, match="'klingon'"):
        load_eval_set("mlqa-r", languages=["klingon"])
    with pytest.raises(ValueError, match=r"ntrex has no language \['kzj'\]"):
        load_train_source("ntrex", languages=["kzj"])
    assert load_train_source("xquad", languages=["spa"]).languages == ["es"]
    assert len(eval_set_languages("flores")) == 205


def test_registering_a_new_set(monkeypatch) -> None:
    monkeypatch.setattr(registry, "_EVAL_SETS", dict(registry._EVAL_SETS))

    @register_eval_set("tiny", languages=("en",))
    def load_tiny(languages=None, text="hello"):
        return RetrievalCorpus("tiny", {"en": {"q": text}}, {"en": {"c": text}}, {"q": {"en": "c"}})

    assert "tiny" in list_eval_sets()
    assert load_eval_set("tiny", languages=["eng"], text="hi").queries == {"en": {"q": "hi"}}
    with pytest.raises(ValueError, match="already registered"):
        register_eval_set("tiny")(load_tiny)


def test_hf_pairs_from_a_local_json_lines_file() -> None:
    path = resolve(data_file("masakhane-io/afriqa", "data/gold_passages/hau/gold_span_passages.afriqa.hau.en.test.json"))
    pairs = load_train_source(
        "hf-pairs", path="json", data_files=str(path), query_column="question_lang",
        passage_column="context", id_column="id", language="hau", group_column="title",
    )  # fmt: skip
    assert pairs.languages == ["ha"] and len(pairs) == 300
    assert pairs.queries["ha"][0] == "Awane yanki jahar Anambra take a Nijeriya?"
    assert pairs.groups[0] == "Anambra State"
    with pytest.raises(ValueError, match=r"no column \['question'\]; the dataset has"):
        load_train_source("hf-pairs", path="json", data_files=str(path), query_column="question",
                          passage_column="context", id_column="id", language="ha")  # fmt: skip
    with pytest.raises(ValueError, match="exactly one of language_column and language"):
        load_train_source("hf-pairs", path="json", data_files=str(path))


def test_hf_pairs_keeps_items_present_in_every_language() -> None:
    # Two real query files with a language column; ids repeat across the files, so the pivot
    # keeps ids that exist in both languages.
    files = [
        str(resolve(data_file("masakhane-io/afriqa", f"data/queries/{code}/queries.afriqa.{code}.en.test.json")))
        for code in ("hau", "zul")
    ]
    pairs = load_train_source(
        "hf-pairs", path="json", data_files=files, query_column="question",
        passage_column="translated_question", id_column="id", language_column="lang",
    )  # fmt: skip
    assert pairs.languages == ["ha", "zu"]
    assert len(pairs) == 300  # ids 0..299 exist in both files (hau has 300, zul 325)
    assert pairs.queries["ha"][0] == "Awane yanki jahar Anambra take a Nijeriya?"
