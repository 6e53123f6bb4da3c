"""XQuAD (google-deepmind/xquad) as a question-answering training source (:class:`ParallelPairs`).

Query = the question; passage = the whole paragraph (``context``) that holds its answer -- the
unit a retriever would return, and what the SQuAD-style files give without a sentence splitter.
Item id = the question id (the same ids as XQuAD-R, which is what lets the leakage guard catch
training on evaluation questions), group = the article title (equal to XQuAD-R's groups).

12 languages, ordered :data:`XQUAD_LANGUAGE_ORDER`: English, the ten other XQuAD-R languages,
then Romanian (added to XQuAD later, not in XQuAD-R). Items follow the English file's order.
"""

from __future__ import annotations

import functools

from hybridir.data.files import data_file, read_squad_articles, resolve
from hybridir.data.lareqa import wiki_group
from hybridir.data.splits import choose_groups
from hybridir.data.types import ParallelPairs
from hybridir.languages import canonical

XQUAD_REPO = "google-deepmind/xquad"
XQUAD_LANGUAGE_ORDER = ("en", "ar", "de", "el", "es", "hi", "ru", "th", "tr", "vi", "zh", "ro")


@functools.lru_cache(maxsize=32)
def _parse(path: str) -> dict[str, tuple[str, str, str]]:
    """question id -> (question, context, article title), in file order."""
    articles = read_squad_articles(path)
    items: dict[str, tuple[str, str, str]] = {}
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if qa["id"] in items:
                    raise ValueError(f"{path}: question id {qa['id']!r} appears twice")
                items[qa["id"]] = (qa["question"], paragraph["context"], article["title"])
    return items


def xquad_items(language: str, mirror=None) -> dict[str, tuple[str, str, str]]:
    """Parsed XQuAD file of one canonical language: question id -> (question, context, title)."""
    return _parse(str(resolve(data_file(XQUAD_REPO, f"xquad.{language}.json"), mirror)))


def load_xquad(languages=None, mirror=None) -> ParallelPairs:
    """XQuAD question -> paragraph pairs in ``languages`` (any code scheme; default all 12)."""
    if languages is None:
        selected = list(XQUAD_LANGUAGE_ORDER)
    else:
        wanted = {canonical(code): code for code in languages}
        unknown = [code for lang, code in wanted.items() if lang not in XQUAD_LANGUAGE_ORDER]
        if unknown:
            raise ValueError(f"XQuAD has no language {unknown}; it has {list(XQUAD_LANGUAGE_ORDER)}")
        selected = [lang for lang in XQUAD_LANGUAGE_ORDER if lang in wanted]
    english = xquad_items("en", mirror)
    item_ids = list(english)
    queries: dict[str, list[str]] = {}
    passages: dict[str, list[str]] = {}
    for lang in selected:
        items = xquad_items(lang, mirror)
        if set(items) != set(english):
            missing = sorted(set(english) - set(items))[:5]
            extra = sorted(set(items) - set(english))[:5]
            raise ValueError(f"xquad.{lang}.json is not parallel to English: missing {missing}, extra {extra}")
        queries[lang] = [items[qid][0] for qid in item_ids]
        passages[lang] = [items[qid][1] for qid in item_ids]
    return ParallelPairs(
        name="xquad",
        item_ids=item_ids,
        groups=[wiki_group(english[qid][2]) for qid in item_ids],
        queries=queries,
        passages=passages,
    )


def xquad_articles(mirror=None) -> set[str]:
    """The groups (``wiki_group`` of the article title) of XQuAD's articles; XQuAD-R has the same."""
    return {wiki_group(title) for _question, _context, title in xquad_items("en", mirror).values()}


def held_out_articles(fraction: float, seed: int, mirror=None) -> set[str]:
    """The XQuAD articles held out by ``(fraction, seed)``: :func:`choose_groups` over XQuAD's
    article groups. The one rule both sides use: training drops these articles
    (``data.holdout_articles``), the XQuAD-R evaluation keeps only them
    (``evaluation.*.held_out_articles``)."""
    return choose_groups(xquad_articles(mirror), fraction, seed)
