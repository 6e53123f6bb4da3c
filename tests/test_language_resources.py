"""The low-resource criterion (hybridir/language_resources.py): Joshi et al. 2020 classes."""

from __future__ import annotations

from hybridir.language_resources import JOSHI_2020_CLASSES, classify, criterion_text, is_low_resource, resource_class
from hybridir.languages import canonical


def test_table_keys_are_canonical_codes():
    assert [code for code in JOSHI_2020_CLASSES if canonical(code) != code] == []
    assert all(0 <= level <= 5 and name for level, name in JOSHI_2020_CLASSES.values())


def test_any_code_scheme_finds_the_class():
    # ISO 639-3 and FLORES codes of the AfriQA / FLORES languages; XQuAD-R's lowest members
    assert resource_class("swh") == resource_class("swh_Latn") == 2
    assert resource_class("kin") == resource_class("twi") == resource_class("ibo") == 1
    assert resource_class("fon_Latn") == 0
    assert resource_class("tha") == resource_class("ell") == 3 and resource_class("eng") == 5
    assert resource_class("bem") is None and not is_low_resource("bem")  # Bemba: not in the taxonomy


def test_xquad_r_has_no_low_resource_language_and_afriqa_only_has_them():
    xquad = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]
    assert not any(row["low_resource"] for row in classify(xquad))
    afriqa = ["fon", "ha", "ig", "rw", "sw", "tw", "yo", "zu"]
    assert all(row["low_resource"] for row in classify(afriqa))
    assert [row["low_resource"] for row in classify(["th", "sw"], max_class=3)] == [True, True]
    assert "class 0-2" in criterion_text() and "Joshi et al. 2020" in criterion_text()
