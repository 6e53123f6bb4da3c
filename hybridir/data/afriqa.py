"""AfriQA (masakhane-io/afriqa): cross-lingual retrieval from 10 African languages into en/fr.

Files (JSON lines), per African language and split:
``data/queries/<lang>/queries.afriqa.<lang>.<pivot>.<split>.json`` (id, question, ...) and
``data/gold_passages/<lang>/gold_span_passages.afriqa.<lang>.<pivot>.<split>.json`` (id,
context, title, question_lang, ...), where ``pivot`` is "en", or "fr" for Fon and Wolof.

Join: a query and a gold passage belong together when they share ``id`` within one
(language, split) *and* the gold file's ``question_lang`` equals the query's ``question``
(whitespace-normalised). Dropped, and counted in :class:`AfriqaJoin`: queries without a gold
row, gold rows with an empty or missing context, and id matches whose question text disagrees
(e.g. swa test id 101 names a different person in the two files).

Corpus: queries[lang] = ``"afriqa/<code>/<split>/<id>"`` -> question; candidates["en"] and
candidates["fr"] = the distinct gold passages of that pivot language, id
``"afriqa/<pivot>/<sha1 of the text, 16 hex>"`` (identical passages shared by several questions
are one candidate); relevant = query -> {pivot: its passage}; groups = the passage's Wikipedia
title. Wolof has no gold passages in the pinned release, Swahili and Yoruba lack some splits:
with ``languages=None`` those are skipped, requested explicitly they raise ValueError.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass

from hybridir.data.files import catalogued_paths, data_file, resolve
from hybridir.data.lareqa import wiki_group
from hybridir.data.types import RetrievalCorpus
from hybridir.languages import canonical

AFRIQA_REPO = "masakhane-io/afriqa"
SPLITS = ("train", "dev", "test")
_QUERY_FILE = re.compile(
    r"^data/queries/(?P<code>[a-z]{3})/queries\.afriqa\.(?P=code)\.(?P<pivot>en|fr)\.(?P<split>train|dev|test)\.json$"
)


@dataclass(frozen=True)
class AfriqaJoin:
    """Joined (query, gold passage) rows of one language and split, with what was dropped."""

    language: str
    pivot: str
    rows: tuple[tuple[str, str, str, str], ...]  # (id, question, passage, title)
    queries_without_gold: int
    empty_passages: int
    question_mismatches: int


@functools.cache
def afriqa_files() -> dict[tuple[str, str], tuple[str, str, str]]:
    """(canonical language, split) -> (file code, pivot, query path) for every query file."""
    files = {}
    for path in catalogued_paths(AFRIQA_REPO, "data/queries/"):
        match = _QUERY_FILE.match(path)
        if match:
            files[(canonical(match["code"]), match["split"])] = (match["code"], match["pivot"], path)
    return files


AFRIQA_LANGUAGES: tuple[str, ...] = tuple(sorted({lang for lang, _ in afriqa_files()}))


def gold_path(code: str, pivot: str, split: str) -> str:
    return f"data/gold_passages/{code}/gold_span_passages.afriqa.{code}.{pivot}.{split}.json"


def has_gold(language: str, split: str) -> bool:
    """Whether the pinned release has gold passages for ``language`` (canonical) in ``split``."""
    entry = afriqa_files().get((language, split))
    return entry is not None and bool(catalogued_paths(AFRIQA_REPO, gold_path(entry[0], entry[1], split)))


@functools.lru_cache(maxsize=128)
def _json_lines(path: str) -> tuple[dict, ...]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON line: {exc}") from exc
    return tuple(rows)


def _normalised(text) -> str:
    return " ".join(text.split()) if isinstance(text, str) else ""


def join_afriqa(language: str, split: str = "test", mirror=None) -> AfriqaJoin:
    """Join the queries and gold passages of one canonical language and split (see module doc)."""
    if split not in SPLITS:
        raise ValueError(f"AfriQA split {split!r} is not one of {SPLITS}")
    if (language, split) not in afriqa_files():
        raise ValueError(f"AfriQA has no {split} queries for language {language!r}; it has {list(AFRIQA_LANGUAGES)}")
    code, pivot, query_path = afriqa_files()[(language, split)]
    if not has_gold(language, split):
        raise ValueError(f"AfriQA has no gold passages for {code} ({language!r}) in split {split!r}")
    queries = _json_lines(str(resolve(data_file(AFRIQA_REPO, query_path), mirror)))
    gold = _json_lines(str(resolve(data_file(AFRIQA_REPO, gold_path(code, pivot, split)), mirror)))
    gold_by_id = {str(row["id"]): row for row in gold}
    rows, without_gold, empty, mismatched = [], 0, 0, 0
    for query in queries:
        qid = str(query["id"])
        passage = gold_by_id.get(qid)
        if passage is None:
            without_gold += 1
        elif not _normalised(passage.get("context")):
            empty += 1
        elif _normalised(passage.get("question_lang")) != _normalised(query["question"]):
            mismatched += 1
        else:
            rows.append((qid, query["question"], passage["context"], passage.get("title") or ""))
    return AfriqaJoin(language, pivot, tuple(rows), without_gold, empty, mismatched)


def load_afriqa(languages=None, split: str = "test", mirror=None) -> RetrievalCorpus:
    """AfriQA retrieval corpus for ``languages`` (any code scheme; default all with gold passages)."""
    if split not in SPLITS:
        raise ValueError(f"AfriQA split {split!r} is not one of {SPLITS}")
    if languages is None:
        selected = [lang for lang in AFRIQA_LANGUAGES if has_gold(lang, split)]
    else:
        selected = sorted({canonical(code) for code in languages})
        unknown = [lang for lang in selected if lang not in AFRIQA_LANGUAGES]
        if unknown:
            raise ValueError(f"AfriQA has no language {unknown}; it has {list(AFRIQA_LANGUAGES)}")
    queries: dict[str, dict[str, str]] = {}
    candidates: dict[str, dict[str, str]] = {}
    relevant: dict[str, dict[str, str]] = {}
    groups: dict[str, str] = {}
    candidate_groups: dict[str, str] = {}
    for lang in selected:
        joined = join_afriqa(lang, split, mirror)
        code = afriqa_files()[(lang, split)][0]
        queries[lang] = {}
        pool = candidates.setdefault(joined.pivot, {})
        for item_id, question, passage, title in joined.rows:
            qid = f"afriqa/{code}/{split}/{item_id}"
            cid = f"afriqa/{joined.pivot}/{hashlib.sha1(passage.encode('utf-8')).hexdigest()[:16]}"
            queries[lang][qid] = question
            pool[cid] = passage
            relevant[qid] = {joined.pivot: cid}
            groups[qid] = candidate_groups.setdefault(cid, wiki_group(title))
    return RetrievalCorpus(
        name="afriqa",
        queries=queries,
        candidates={pivot: candidates[pivot] for pivot in sorted(candidates)},
        relevant=relevant,
        groups=groups,
        candidate_groups=candidate_groups,
    )
