"""NTREX-128 as the many-language training source (:class:`ParallelPairs`).

NTREX-128 holds 1,997 English news sentences (123 documents of WMT19 newstest, listed line by
line in DOCUMENT_IDS.tsv; a document's first line is its headline) and their line-aligned human
translations.

Languages: 128, one per file -- the English source ``newstest2019-src.eng.txt`` ("en") plus the
127 ``newstest2019-ref.<code>.txt`` references. Regional and script varieties are separate
training languages because their files are separate translations with their own canonical tags
(eng-GB/IN/US -> en-GB/en-IN/en-US, fra-CA -> fr-CA, por-BR -> pt-BR, spa-MX -> es-MX,
zho-TW -> zh-Hant, srp-Latn -> sr-Latn next to srp-Cyrl -> sr, prs -> fa-AF next to fas -> fa).
``newstest2019-ref-2.spa.txt`` is a second Spanish reference of the same sentences, not another
language, and is left out.

Language order (:data:`NTREX_LANGUAGE_ORDER`, so "the first L languages" is meaningful):
English; then the other languages of the evaluation sets XQuAD-R / MLQA-R
(ar de el es hi ru th tr vi zh); then every other language whose language subtag is new, sorted
by canonical tag; last the varieties of a language already listed (en-GB, en-IN, en-US, es-MX,
fa-AF, fr-CA, pt-BR, sr-Latn, zh-Hant), sorted by tag. Adding a language never
changes the first L for a smaller L.

Pairs: every line (headline or body sentence) is a query; its passage is the ``window``
nearest other lines of the same document (ties: the earlier line first), in document order and
joined with a space -- the query sentence itself is never in its passage. Line i is parallel in
all languages, so item i exists in every language. Item id ``"ntrex/<line>"``, group = the
document id.
"""

from __future__ import annotations

import functools
import re

from hybridir.data.files import DataFile, catalogued_paths, data_file, resolve
from hybridir.data.types import ParallelPairs
from hybridir.languages import base_language, canonical

NTREX_REPO = "MicrosoftTranslator/NTREX"
NTREX_LINES = 1997
SOURCE_FILE = "NTREX-128/newstest2019-src.eng.txt"
_REFERENCE = re.compile(r"^NTREX-128/newstest2019-ref\.(?P<code>[A-Za-z]{3}(?:-[A-Za-z]+)?)\.txt$")
EVALUATION_LANGUAGES = ("en", "ar", "de", "el", "es", "hi", "ru", "th", "tr", "vi", "zh")
DEFAULT_WINDOW = 4


@functools.cache
def ntrex_files() -> dict[str, DataFile]:
    """Canonical language -> its NTREX-128 file (128 entries; ref-2.spa excluded)."""
    files = {"en": data_file(NTREX_REPO, SOURCE_FILE)}
    for path in catalogued_paths(NTREX_REPO, "NTREX-128/"):
        match = _REFERENCE.match(path)
        if match is None:  # the source file and the second Spanish reference (ref-2.spa)
            continue
        lang = canonical(match["code"])
        if lang in files:
            raise ValueError(f"NTREX-128: {path} maps to language {lang!r}, which {files[lang].path} already has")
        files[lang] = data_file(NTREX_REPO, path)
    return files


def _language_order(languages) -> tuple[str, ...]:
    evaluation = [lang for lang in EVALUATION_LANGUAGES if lang in languages]
    rest = sorted(set(languages) - set(evaluation))
    # A variety (a tag with a script or region) goes last when its plain language is present.
    plain = {lang for lang in [*evaluation, *rest] if "-" not in lang}
    main = [lang for lang in rest if "-" not in lang or base_language(lang) not in plain]
    varieties = [lang for lang in rest if lang not in main]
    return tuple(evaluation + main + varieties)


NTREX_LANGUAGE_ORDER: tuple[str, ...] = _language_order(ntrex_files())


def ntrex_languages(languages=None, num_languages: int | None = None) -> list[str]:
    """The requested NTREX languages in :data:`NTREX_LANGUAGE_ORDER` (any code scheme accepted)."""
    if languages is not None and num_languages is not None:
        raise ValueError("give either languages or num_languages, not both")
    if num_languages is not None:
        if not 1 <= num_languages <= len(NTREX_LANGUAGE_ORDER):
            raise ValueError(f"num_languages={num_languages}: NTREX-128 has 1..{len(NTREX_LANGUAGE_ORDER)} languages")
        return list(NTREX_LANGUAGE_ORDER[:num_languages])
    if languages is None:
        return list(NTREX_LANGUAGE_ORDER)
    wanted = {canonical(code): code for code in languages}
    unknown = [code for lang, code in wanted.items() if lang not in NTREX_LANGUAGE_ORDER]
    if unknown:
        raise ValueError(f"NTREX-128 has no language {unknown}; it has {list(NTREX_LANGUAGE_ORDER)}")
    return [lang for lang in NTREX_LANGUAGE_ORDER if lang in wanted]


@functools.lru_cache(maxsize=256)
def _read_lines(path: str) -> tuple[str, ...]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    # Split on "\n" only: str.splitlines() would also split inside lines at U+2028, U+0085, ...
    lines = text.removesuffix("\n").split("\n")
    return tuple(line.rstrip("\r") for line in lines)


def read_lines(file: DataFile, mirror=None) -> tuple[str, ...]:
    """The lines of an NTREX file; ValueError naming the file if it has not 1,997 of them."""
    lines = _read_lines(str(resolve(file, mirror)))
    if len(lines) != NTREX_LINES:
        raise ValueError(f"{file}: {len(lines)} lines, expected {NTREX_LINES} (line-aligned with DOCUMENT_IDS.tsv)")
    empty = [i for i, line in enumerate(lines) if not line.strip()]
    if empty:
        raise ValueError(f"{file}: empty lines at {empty[:5]} break the line alignment")
    return lines


def document_ids(mirror=None) -> tuple[str, ...]:
    """Document id of every line (DOCUMENT_IDS.tsv)."""
    ids = read_lines(data_file(NTREX_REPO, "DOCUMENT_IDS.tsv"), mirror)
    return tuple(line.strip() for line in ids)


@functools.lru_cache(maxsize=16)
def passage_windows(documents: tuple[str, ...], window: int) -> tuple[tuple[int, ...], ...]:
    """For every line, the line numbers forming its passage (see the module docstring)."""
    spans: dict[str, list[int]] = {}
    for line, doc in enumerate(documents):
        spans.setdefault(doc, []).append(line)
    windows = []
    for line, doc in enumerate(documents):
        others = [other for other in spans[doc] if other != line]
        nearest = sorted(others, key=lambda other: (abs(other - line), other))[:window]
        windows.append(tuple(sorted(nearest)))
    return tuple(windows)


def load_ntrex(
    languages=None, num_languages: int | None = None, window: int = DEFAULT_WINDOW, mirror=None
) -> ParallelPairs:
    """NTREX-128 query -> passage pairs in the requested languages (default: all 128, in order)."""
    if window < 1:
        raise ValueError(f"window={window}: a passage needs at least one other sentence")
    selected = ntrex_languages(languages, num_languages)
    documents = document_ids(mirror)
    windows = passage_windows(documents, window)
    files = ntrex_files()
    queries: dict[str, list[str]] = {}
    passages: dict[str, list[str]] = {}
    for lang in selected:
        lines = read_lines(files[lang], mirror)
        queries[lang] = list(lines)
        passages[lang] = [" ".join(lines[other] for other in others) for others in windows]
    return ParallelPairs(
        name="ntrex",
        item_ids=[f"ntrex/{line}" for line in range(NTREX_LINES)],
        groups=list(documents),
        queries=queries,
        passages=passages,
    )
