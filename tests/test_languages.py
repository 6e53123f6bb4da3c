"""Canonical language codes across the sources' schemes."""

from __future__ import annotations

import re

import pytest

from hybridir.languages import base_language, canonical, canonical_map, display_name, same_language


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ar", "ar"), ("arb", "ar"), ("arb_Arab", "ar"), ("ara", "ar"),
        ("zho_Hans", "zh"), ("zho-CN", "zh"), ("cmn", "zh"), ("zh-Hans", "zh"),
        ("zho_Hant", "zh-Hant"), ("zho-TW", "zh-Hant"),
        ("en-GB", "en-GB"), ("eng-US", "en-US"), ("eng", "en"), ("eng_Latn", "en"),
        ("srp-Latn", "sr-Latn"), ("srp-Cyrl", "sr"), ("srp_Cyrl", "sr"),
        ("sna-Latn", "sn"), ("ckb-Arab", "ckb"), ("arb_Latn", "ar-Latn"), ("kas_Deva", "ks-Deva"),
        ("swh", "sw"), ("swa", "sw"), ("prs", "fa-AF"), ("pes_Arab", "fa"), ("yue_Hant", "yue"),
        ("twi", "tw"), ("aka_Latn", "ak"), ("kzj", "kzj"), ("dtp", "dtp"), (" de ", "de"),
    ],
)  # fmt: skip
def test_canonical_codes(code: str, expected: str) -> None:
    assert canonical(code) == expected
    assert canonical(expected) == expected  # idempotent


def test_same_language_ignores_region_and_script() -> None:
    assert same_language("en-GB", "en")
    assert same_language("eng", "en-US")
    assert same_language("srp-Latn", "sr")
    assert same_language("zho-TW", "cmn")
    assert not same_language("de", "en")
    assert not same_language("twi", "aka")  # kept apart because SIB-200 has both
    assert base_language("sr-Latn") == "sr"


def test_display_names() -> None:
    assert display_name("zho_Hant") == "Chinese (Traditional)"
    assert display_name("arb") == "Arabic"
    assert display_name("kzj") == "Coastal Kadazan"


@pytest.mark.parametrize("bad", ["xx", "zz-ZZ", "qqq", "und", "Gibberish", "en-x-foo"])
def test_unknown_codes_raise_naming_the_code(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        canonical(bad)


@pytest.mark.parametrize("empty", ["", "   ", None])
def test_empty_codes_raise(empty) -> None:
    with pytest.raises(ValueError, match="is empty"):
        canonical(empty)


def test_canonical_map_refuses_collisions() -> None:
    assert canonical_map(["arb", "deu"], source="test") == {"arb": "ar", "deu": "de"}
    with pytest.raises(ValueError, match="'ara' and 'arb' both map to language 'ar'"):
        canonical_map(["ara", "arb"], source="test")
