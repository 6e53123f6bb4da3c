"""FLORES-200 sentences from SIB-200 (dadelani/sib-200) as an N-way parallel bitext set.

``data/annotated/<flores_code>/{train,dev,test}.tsv`` (columns index_id, category, text) hold
the same FLORES sentences in 205 languages, aligned by ``index_id`` (701 / 99 / 204 rows).

Representation: every loaded language has queries and candidates, so any X -> Y direction can
be evaluated from one corpus:

* queries[lang]: ``"flores/<index_id>"`` -> text (the id is shared by the translations);
* candidates[lang]: ``"flores/<lang>/<index_id>"`` -> the same text;
* relevant: ``"flores/<index_id>"`` -> {lang: that language's candidate};
* groups: query -> its SIB-200 topic category (FLORES has no document ids in SIB-200).

``split`` picks "train", "dev", "test" (default) or "all" (the three together).
"""

from __future__ import annotations

import csv
import functools

import pandas as pd

from hybridir.data.files import catalogued_paths, data_file, resolve
from hybridir.data.types import RetrievalCorpus
from hybridir.languages import canonical

SIB_REPO = "dadelani/sib-200"
_FOLDER = "data/annotated/"
SPLITS = ("train", "dev", "test")


@functools.cache
def flores_codes() -> dict[str, str]:
    """Canonical language -> FLORES-200 code (e.g. "zh-Hant" -> "zho_Hant"), 205 entries."""
    codes: dict[str, str] = {}
    for path in catalogued_paths(SIB_REPO, _FOLDER):
        code = path[len(_FOLDER):].split("/", 1)[0]
        lang = canonical(code)
        if codes.get(lang, code) != code:
            raise ValueError(f"SIB-200: {code!r} and {codes[lang]!r} both map to {lang!r}")
        codes[lang] = code
    return dict(sorted(codes.items()))


FLORES_LANGUAGES: tuple[str, ...] = tuple(flores_codes())


@functools.lru_cache(maxsize=1024)
def _read_split(path: str) -> pd.DataFrame:
    # QUOTE_NONE: sentences contain unbalanced quotes; keep_default_na: "NA" is a word, not a gap.
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False, dtype=str, encoding="utf-8")
    missing = {"index_id", "category", "text"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)} (has {list(frame.columns)})")
    duplicated = frame["index_id"][frame["index_id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{path}: duplicated index_id {duplicated[:5]}")
    return frame


def flores_split(language: str, split: str = "test", mirror=None) -> pd.DataFrame:
    """The SIB-200 rows (index_id, category, text) of one canonical language and split."""
    if split not in SPLITS:
        raise ValueError(f"SIB-200 split {split!r} is not one of {SPLITS}")
    file = data_file(SIB_REPO, f"{_FOLDER}{flores_codes()[language]}/{split}.tsv")
    return _read_split(str(resolve(file, mirror)))


def load_flores(languages=None, split: str = "test", mirror=None) -> RetrievalCorpus:
    """FLORES sentences of ``languages`` (any code scheme; default all 205) in ``split``."""
    splits = SPLITS if split == "all" else (split,)
    if split != "all" and split not in SPLITS:
        raise ValueError(f"SIB-200 split {split!r} is not one of {SPLITS + ('all',)}")
    codes = flores_codes()
    selected = list(codes) if languages is None else sorted({canonical(code) for code in languages})
    unknown = [lang for lang in selected if lang not in codes]
    if unknown:
        raise ValueError(f"SIB-200/FLORES has no language {unknown}; it has {list(codes)}")

    queries: dict[str, dict[str, str]] = {}
    candidates: dict[str, dict[str, str]] = {}
    relevant: dict[str, dict[str, str]] = {}
    groups: dict[str, str] = {}
    reference_ids = None
    for lang in selected:
        frame = pd.concat([flores_split(lang, name, mirror) for name in splits], ignore_index=True)
        ids = frozenset(frame["index_id"])
        if reference_ids is not None and ids != reference_ids:
            raise ValueError(f"SIB-200 {codes[lang]} ({split}) is not aligned by index_id with {codes[selected[0]]}")
        reference_ids = ids
        queries[lang], candidates[lang] = {}, {}
        for index_id, category, text in zip(frame["index_id"], frame["category"], frame["text"]):
            qid, cid = f"flores/{index_id}", f"flores/{lang}/{index_id}"
            queries[lang][qid] = text
            candidates[lang][cid] = text
            relevant.setdefault(qid, {})[lang] = cid
            groups[qid] = category
    return RetrievalCorpus(
        name="flores",
        queries=queries,
        candidates=candidates,
        relevant=relevant,
        groups=groups,
        candidate_groups={cid: groups[qid] for qid, per_lang in relevant.items() for cid in per_lang.values()},
    )
