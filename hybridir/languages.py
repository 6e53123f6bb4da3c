"""One language-code scheme across all data sources.

The sources name languages differently: LAReQA/XQuAD use 2-letter ISO 639-1 codes ("ar"),
Tatoeba 3-letter ISO 639-3 codes ("ara", "cmn"), NTREX ISO 639-3 with script or region
("arb", "zho-CN", "srp-Latn") and SIB-200/FLORES ISO 639-3 plus script ("arb_Arab").
Every loader maps them through :func:`canonical`, which returns a BCP-47 tag built with
``langcodes``:

* the shortest language subtag, with individual languages folded into their macrolanguage
  ("arb", "ara" -> "ar"; "cmn" -> "zh"; "swh" -> "sw"; "pes" -> "fa");
* the script only when it is not the language's default script ("srp-Cyrl" -> "sr",
  "srp-Latn" -> "sr-Latn", "sna-Latn" -> "sn", "arb_Latn" -> "ar-Latn");
* codes that ISO retired or folded but sources keep apart stay apart ("twi" -> "tw" next to
  "aka" -> "ak"; "kzj" next to "dtp");
* the region kept, so regional varieties stay distinct ("eng-GB" -> "en-GB",
  "prs" (Dari) -> "fa-AF") -- except for Chinese, where the region only stands for the
  script: "zho-CN"/"zho_Hans" -> "zh" (simplified is the default), "zho-TW"/"zho_Hant" -> "zh-Hant".

:func:`same_language` compares the language subtag only, so "en-GB" and "en" (or "sr" and
"sr-Latn") are the same language.
"""

from __future__ import annotations

import functools

import langcodes
from langcodes import Language

# Regions of these languages only select a script (zh-TW is written in Traditional characters).
_REGION_MEANS_SCRIPT = frozenset({"zh"})

# Codes that ISO 639-3 folds into another code but that sources hold as separate test sets:
# SIB-200 has both twi_Latn and aka_Latn (Twi is an Akan macrolanguage member), Tatoeba has
# both kzj and dtp (kzj was retired into dtp in 2016). Folding them would merge two sets.
_KEEP_DISTINCT = {"twi": "tw", "tw": "tw", "kzj": "kzj"}


@functools.lru_cache(maxsize=4096)
def canonical(code: str) -> str:
    """Return the canonical BCP-47 tag of a language code written in any of the sources' schemes.

    Raises ValueError naming the code when it is empty, malformed or not a known language.
    """
    if not isinstance(code, str) or not code.strip():
        raise ValueError(f"language code {code!r} is empty or not a string")
    raw = code.strip().replace("_", "-")
    try:
        tag = langcodes.standardize_tag(raw, macro=True)
        language = Language.get(tag)
    except (langcodes.tag_parser.LanguageTagError, ValueError) as exc:
        raise ValueError(f"language code {code!r} is not a valid language tag: {exc}") from exc
    if not language.language or language.language == "und" or not language.is_valid():
        raise ValueError(f"language code {code!r} is not a known language")
    if "qaa" <= language.language <= "qtz":
        raise ValueError(f"language code {code!r} is a private-use code, not a known language")
    if language.extlangs or language.variants or language.extensions or language.private:
        # Such tags would silently collapse into the base language; refuse them instead.
        raise ValueError(f"language code {code!r} has subtags beyond language-script-region")

    script, territory = language.script, language.territory
    primary = raw.split("-", 1)[0].lower()
    if primary in _KEEP_DISTINCT:
        language = Language.make(language=_KEEP_DISTINCT[primary], script=script, territory=territory)
    if language.language in _REGION_MEANS_SCRIPT and territory:
        script = script or language.maximize().script
        territory = None
    if script and script == _default_script(language.language, territory):
        script = None
    return Language.make(language=language.language, script=script, territory=territory).to_tag()


def _default_script(language: str, territory: str | None) -> str | None:
    return Language.make(language=language, territory=territory).maximize().script


def same_language(a: str, b: str) -> bool:
    """True when two codes (any scheme) name the same language, ignoring region and script."""
    return base_language(a) == base_language(b)


def base_language(code: str) -> str:
    """The language subtag of a code's canonical tag ("en-GB" -> "en", "sr-Latn" -> "sr")."""
    return Language.get(canonical(code), normalize=False).language


def display_name(code: str) -> str:
    """English display name of a code, e.g. "zho_Hant" -> "Chinese (Traditional)"."""
    return Language.get(canonical(code), normalize=False).display_name()


def canonical_map(codes, *, source: str) -> dict[str, str]:
    """Map each source code to its canonical tag, failing if two codes collapse into one tag.

    ``source`` names the data source in the error, e.g. "NTREX-128 file names".
    """
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    for code in codes:
        tag = canonical(code)
        if tag in seen:
            raise ValueError(
                f"{source}: codes {seen[tag]!r} and {code!r} both map to language {tag!r}"
            )
        seen[tag] = code
        mapping[code] = tag
    return mapping
