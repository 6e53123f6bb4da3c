"""Tatoeba bitext retrieval (LASER data/tatoeba/v1): 112 languages, each paired with English.

Files ``tatoeba.<xxx>-eng.<xxx>`` and ``tatoeba.<xxx>-eng.eng`` are line-aligned (up to 1,000
pairs). The English side differs from one pair file to the next, so the corpus keeps every
pair's English sentences apart:

* queries[lang]: ``"tatoeba/<xxx>/<i>"`` -> line i of the non-English file (``<xxx>`` is the
  file's own code, ``lang`` its canonical tag);
* candidates["en"]: ``"tatoeba/<xxx>/<i>/en"`` -> line i of that pair's English file;
* relevant: query -> {"en": its English line};
* groups: query -> ``"tatoeba/<xxx>"``, the pair it belongs to; candidate_groups likewise.

Bitext accuracy is measured within one pair: :func:`pair_corpora` splits the corpus into one
RetrievalCorpus per language whose candidates are only that pair's English sentences.
"""

from __future__ import annotations

import functools
import re

from hybridir.data.files import DataFile, catalogued_paths, data_file, resolve
from hybridir.data.types import RetrievalCorpus
from hybridir.languages import canonical

TATOEBA_REPO = "facebookresearch/LASER"
_FOLDER = "data/tatoeba/v1/"
_PAIR_FILE = re.compile(r"^data/tatoeba/v1/tatoeba\.(?P<code>[a-z]{3})-eng\.(?P=code)$")


@functools.cache
def tatoeba_codes() -> dict[str, str]:
    """Canonical language -> Tatoeba file code, for the 112 pairs."""
    codes: dict[str, str] = {}
    for path in catalogued_paths(TATOEBA_REPO, _FOLDER):
        match = _PAIR_FILE.match(path)
        if match:
            lang = canonical(match["code"])
            if lang in codes:
                raise ValueError(f"Tatoeba: {match['code']!r} and {codes[lang]!r} both map to {lang!r}")
            codes[lang] = match["code"]
    return dict(sorted(codes.items()))


TATOEBA_LANGUAGES: tuple[str, ...] = tuple(tatoeba_codes())


@functools.lru_cache(maxsize=512)
def _lines(path: str) -> tuple[str, ...]:
    with open(path, encoding="utf-8") as handle:
        return tuple(line.rstrip("\r") for line in handle.read().removesuffix("\n").split("\n"))


def _read(file: DataFile, mirror) -> tuple[str, ...]:
    return _lines(str(resolve(file, mirror)))


def load_tatoeba(languages=None, mirror=None) -> RetrievalCorpus:
    """The Tatoeba corpus for ``languages`` (any code scheme; default all 112)."""
    codes = tatoeba_codes()
    if languages is None:
        selected = list(codes)
    else:
        selected = sorted({canonical(code) for code in languages})
        unknown = [lang for lang in selected if lang not in codes]
        if unknown:
            raise ValueError(f"Tatoeba has no language {unknown}; it has {list(codes)}")
    queries: dict[str, dict[str, str]] = {}
    english: dict[str, str] = {}
    relevant: dict[str, dict[str, str]] = {}
    groups: dict[str, str] = {}
    candidate_groups: dict[str, str] = {}
    for lang in selected:
        code = codes[lang]
        source = data_file(TATOEBA_REPO, f"{_FOLDER}tatoeba.{code}-eng.{code}")
        target = data_file(TATOEBA_REPO, f"{_FOLDER}tatoeba.{code}-eng.eng")
        foreign, eng = _read(source, mirror), _read(target, mirror)
        if len(foreign) != len(eng):
            raise ValueError(f"{source} has {len(foreign)} lines but {target} has {len(eng)}")
        group = f"tatoeba/{code}"
        queries[lang] = {}
        for i, (text, english_text) in enumerate(zip(foreign, eng)):
            qid, cid = f"{group}/{i}", f"{group}/{i}/en"
            queries[lang][qid] = text
            english[cid] = english_text
            relevant[qid] = {"en": cid}
            groups[qid] = candidate_groups[cid] = group
    return RetrievalCorpus(
        name="tatoeba",
        queries=queries,
        candidates={"en": english},
        relevant=relevant,
        groups=groups,
        candidate_groups=candidate_groups,
    )


def pair_corpora(corpus: RetrievalCorpus) -> dict[str, RetrievalCorpus]:
    """One corpus per query language whose candidates are only its pair's English sentences."""
    result = {}
    for lang, queries in corpus.queries.items():
        pair_groups = {corpus.groups[qid] for qid in queries}
        english = {
            cid: text for cid, text in corpus.candidates["en"].items() if corpus.candidate_groups[cid] in pair_groups
        }
        result[lang] = RetrievalCorpus(
            name=f"{corpus.name}/{lang}",
            queries={lang: dict(queries)},
            candidates={"en": english},
            relevant={qid: dict(corpus.relevant[qid]) for qid in queries},
            groups={qid: corpus.groups[qid] for qid in queries},
            candidate_groups={cid: corpus.candidate_groups[cid] for cid in english},
        )
    return result
