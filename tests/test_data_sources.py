"""NTREX-128, XQuAD, Tatoeba, SIB-200/FLORES and AfriQA parsed from the real mirror files."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from hybridir.data import ntrex
from hybridir.data.afriqa import AFRIQA_LANGUAGES, join_afriqa, load_afriqa
from hybridir.data.files import DataFile, data_file
from hybridir.data.flores import FLORES_LANGUAGES, load_flores
from hybridir.data.ntrex import NTREX_LANGUAGE_ORDER, load_ntrex, read_lines
from hybridir.data.tatoeba import TATOEBA_LANGUAGES, load_tatoeba, pair_corpora
from hybridir.data.xquad import XQUAD_LANGUAGE_ORDER, load_xquad

EVALUATION_LANGUAGES = ["en", "ar", "de", "el", "es", "hi", "ru", "th", "tr", "vi", "zh"]


def test_ntrex_language_order() -> None:
    assert len(NTREX_LANGUAGE_ORDER) == len(set(NTREX_LANGUAGE_ORDER)) == 128
    assert list(NTREX_LANGUAGE_ORDER[:11]) == EVALUATION_LANGUAGES
    assert NTREX_LANGUAGE_ORDER[-9:] == ("en-GB", "en-IN", "en-US", "es-MX", "fa-AF", "fr-CA", "pt-BR", "sr-Latn", "zh-Hant")
    assert "es" in NTREX_LANGUAGE_ORDER and ntrex.ntrex_files()["es"].path.endswith("ref.spa.txt")


def test_ntrex_all_128_languages() -> None:
    pairs = load_ntrex()
    assert pairs.languages == list(NTREX_LANGUAGE_ORDER)
    assert len(pairs) == 1997 and len(set(pairs.groups)) == 123
    assert pairs.item_ids[:2] == ["ntrex/0", "ntrex/1"]
    english = read_lines(data_file(ntrex.NTREX_REPO, "NTREX-128/newstest2019-src.eng.txt"))
    assert pairs.queries["en"] == list(english)
    for lang in pairs.languages:
        assert len(pairs.queries[lang]) == len(pairs.passages[lang]) == 1997


def test_ntrex_passage_is_the_document_window_without_the_query() -> None:
    pairs = load_ntrex(languages=["deu", "eng"], window=2)
    assert pairs.languages == ["en", "de"]  # documented order, not request order
    documents = pairs.groups
    # Line 1: its document starts at line 0, so the two nearest lines are 0 and 2.
    assert documents[0] == documents[1] == documents[2]
    assert pairs.passages["de"][1] == f"{pairs.queries['de'][0]} {pairs.queries['de'][2]}"
    windows = ntrex.passage_windows(tuple(documents), 2)
    for i, others in enumerate(windows):
        assert len(others) == 2 and i not in others
        assert all(documents[j] == documents[i] for j in others)
        assert pairs.passages["en"][i] == " ".join(pairs.queries["en"][j] for j in others)
    # First line of a document (a headline): the window lies after it, inside the document.
    starts = [i for i in range(1, len(documents)) if documents[i] != documents[i - 1]]
    first = starts[0]
    assert pairs.passages["en"][first] == f"{pairs.queries['en'][first + 1]} {pairs.queries['en'][first + 2]}"


def test_ntrex_first_languages_and_errors() -> None:
    assert load_ntrex(num_languages=3, window=1).languages == ["en", "ar", "de"]
    with pytest.raises(ValueError, match=r"num_languages=129"):
        load_ntrex(num_languages=129)
    with pytest.raises(ValueError, match=r"NTREX-128 has no language \['kzj'\]"):
        load_ntrex(languages=["kzj"])
    with pytest.raises(ValueError, match="window=0"):
        load_ntrex(window=0)


def test_ntrex_wrong_line_count_names_the_file(tmp_path: Path) -> None:
    entry = ntrex.ntrex_files()["de"]
    copy = entry.mirror_path(tmp_path)
    copy.parent.mkdir(parents=True)
    shutil.copyfile(entry.mirror_path(os.environ["HYBRIDIR_MIRROR"]), copy)
    lines = copy.read_text(encoding="utf-8").split("\n")
    copy.write_text("\n".join(lines[:-10]), encoding="utf-8")
    # A catalogue entry pinned to the shortened bytes, so the hash check passes and the
    # line-count check is what fails.
    short = DataFile(entry.repo, entry.commit, entry.path, hashlib.sha256(copy.read_bytes()).hexdigest(), copy.stat().st_size)
    with pytest.raises(ValueError, match=r"newstest2019-ref.deu.txt: 1988 lines, expected 1997"):
        read_lines(short, mirror=tmp_path)


def test_xquad_pairs_share_ids_and_groups_with_xquad_r() -> None:
    pairs = load_xquad()
    assert pairs.languages == list(XQUAD_LANGUAGE_ORDER) and len(XQUAD_LANGUAGE_ORDER) == 12
    assert len(pairs) == 1190 and len(set(pairs.groups)) == 48
    i = pairs.item_ids.index("56beb4343aeaaa14008c925b")
    assert pairs.queries["en"][i] == "How many points did the Panthers defense surrender?"
    assert "308 points" in pairs.passages["en"][i]
    assert pairs.groups[i] == "Super_Bowl_50"
    assert load_xquad(["ron", "zho_Hans"]).languages == ["zh", "ro"]


def test_tatoeba_pairs() -> None:
    assert len(TATOEBA_LANGUAGES) == 112
    corpus = load_tatoeba(["deu", "amh", "kzj", "dtp"])
    assert corpus.query_languages == ["am", "de", "dtp", "kzj"]
    assert len(corpus.queries["de"]) == 1000 and len(corpus.queries["am"]) == 168
    assert corpus.candidate_languages == ["en"]
    assert len(corpus.candidates["en"]) == 1000 + 168 + len(corpus.queries["dtp"]) + len(corpus.queries["kzj"])
    assert corpus.queries["am"]["tatoeba/amh/0"] and corpus.relevant["tatoeba/amh/0"] == {"en": "tatoeba/amh/0/en"}
    per_pair = pair_corpora(corpus)
    assert len(per_pair["am"].candidates["en"]) == 168
    assert all(cid.startswith("tatoeba/amh/") for cid in per_pair["am"].candidates["en"])


def test_flores_is_aligned_by_index_id() -> None:
    assert len(FLORES_LANGUAGES) == 205
    corpus = load_flores(["eng_Latn", "zho_Hant", "zho_Hans", "arb_Arab", "arb_Latn"])
    assert corpus.query_languages == ["ar", "ar-Latn", "en", "zh", "zh-Hant"]
    assert all(len(q) == 204 for q in corpus.queries.values())
    assert all(len(per) == 5 for per in corpus.relevant.values())
    english = corpus.queries["en"]["flores/1523"]
    assert english.startswith("Mutation adds new genetic variation")
    assert corpus.candidates["en"][corpus.relevant["flores/1523"]["en"]] == english
    assert corpus.groups["flores/1523"] == "science/technology"
    assert len(load_flores(["fon"], split="all").queries["fon"]) == 701 + 99 + 204
    with pytest.raises(ValueError, match="split 'devtest'"):
        load_flores(["fon"], split="devtest")


def test_afriqa_joins_queries_and_gold_passages() -> None:
    assert AFRIQA_LANGUAGES == ("bem", "fon", "ha", "ig", "rw", "sw", "tw", "wo", "yo", "zu")
    joined = join_afriqa("ha", "test")
    assert len(joined.rows) == 300 and joined.pivot == "en"
    qid, question, passage, title = joined.rows[0]
    assert question == "Awane yanki jahar Anambra take a Nijeriya?" and title == "Anambra State"
    assert "southeastern" in passage
    swahili = join_afriqa("sw", "test")  # id 101 names another person in the two files
    assert (swahili.question_mismatches, swahili.queries_without_gold, len(swahili.rows)) == (1, 7, 294)

    corpus = load_afriqa()
    assert corpus.query_languages == ["bem", "fon", "ha", "ig", "rw", "sw", "tw", "yo", "zu"]  # wo: no gold
    assert corpus.candidate_languages == ["en", "fr"]
    assert len(corpus.queries["ha"]) == 300 and len(corpus.queries["fon"]) == 386
    fon_qid = next(iter(corpus.queries["fon"]))
    assert list(corpus.relevant[fon_qid]) == ["fr"]
    assert corpus.relevant[f"afriqa/hau/test/{qid}"]["en"] in corpus.candidates["en"]
    with pytest.raises(ValueError, match="no gold passages for wol"):
        load_afriqa(["wol"])
