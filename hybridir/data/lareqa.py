"""XQuAD-R and MLQA-R (LAReQA, Roy et al. 2020) as :class:`RetrievalCorpus` objects.

Files: SQuAD JSON where every paragraph also lists its ``sentences`` and their
``sentence_breaks`` (character spans). Per language:

* queries: every question, keyed by its ``id`` (shared by the translations of the question);
* candidates: one per (paragraph, sentence), text from ``sentences``, id
  ``"<lang>/<article>/<paragraph>/<sentence>"`` (indices into that language's file). A paragraph
  whose context already appeared earlier in the same file (MLQA repeats contexts that several
  questions share) reuses the first occurrence's candidates, so each distinct sentence of a
  distinct paragraph is one candidate;
* relevant candidate: the sentence whose half-open span ``[start, end)`` holds the answer's first
  non-space character (``answer_start`` shifted past leading whitespace of the answer text).
  Half-open spans make adjacent spans (Chinese: ``end == next start``) unambiguous. An answer
  that starts in the gap between two spans (whitespace the sentence splitter dropped) belongs to
  the following sentence, where its text continues; such answers are counted in
  :attr:`LareqaFile.answers_in_gaps` (0 in both pinned releases).
* group: the Wikipedia article title of the question in the English file (both sets are
  English-pivoted: every question id exists in English), with spaces written as underscores,
  so XQuAD-R groups equal XQuAD article titles (``"Super_Bowl_50"``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from hybridir.data.files import data_file, read_squad_articles, resolve
from hybridir.data.types import RetrievalCorpus

LAREQA_REPO = "google-research-datasets/lareqa"
XQUAD_R_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
MLQA_R_LANGUAGES = ("ar", "de", "en", "es", "hi", "vi", "zh")
_FOLDERS = {"xquad-r": "xquad-r", "mlqa-r": "mlqa-r"}
PIVOT_LANGUAGE = "en"


@dataclass(frozen=True)
class LareqaFile:
    """One parsed language file of XQuAD-R or MLQA-R."""

    language: str
    questions: dict[str, str]  # question id -> text
    candidates: dict[str, str]  # candidate id -> sentence
    relevant: dict[str, str]  # question id -> candidate id
    titles: dict[str, str]  # question id -> article title (as written in this file)
    candidate_articles: dict[str, str]  # candidate id -> article title (as written in this file)
    repeated_paragraphs: int  # paragraphs whose context appeared before in the file
    answers_in_gaps: int  # answers starting between two sentence spans


def wiki_group(title: str) -> str:
    """Article group key: the Wikipedia title with spaces as underscores."""
    return title.strip().replace(" ", "_")


def answer_sentence(breaks: list[list[int]], answer_start: int, answer_text: str) -> tuple[int, bool]:
    """Index of the sentence holding the answer start, and whether the start fell in a gap."""
    start = answer_start + (len(answer_text) - len(answer_text.lstrip()))
    for index, (begin, end) in enumerate(breaks):
        if begin <= start < end:
            return index, False
    for index, (begin, _) in enumerate(breaks):
        if begin > start:
            return index, True
    raise ValueError(f"answer_start {answer_start} lies after the last sentence span {breaks[-1] if breaks else None}")


def parse_lareqa_file(path: Path, language: str) -> LareqaFile:
    """Parse one XQuAD-R / MLQA-R language file (see the module docstring for the rules)."""
    return _parse_cached(str(path), language)


@functools.lru_cache(maxsize=64)
def _parse_cached(path: str, language: str) -> LareqaFile:
    try:
        return _parse(path, language)
    except KeyError as exc:
        raise ValueError(f"{path}: a question, paragraph or article lacks the field {exc}") from None


def _parse(path: str, language: str) -> LareqaFile:
    # resolve() verified the bytes at this path, so the path identifies the content.
    articles = read_squad_articles(path)
    questions: dict[str, str] = {}
    candidates: dict[str, str] = {}
    relevant: dict[str, str] = {}
    titles: dict[str, str] = {}
    candidate_articles: dict[str, str] = {}
    first_ids_of_context: dict[str, list[str]] = {}
    repeated = gaps = 0
    for a, article in enumerate(articles):
        title = article["title"]
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"{path}: article {a} ({title!r}) paragraph {p}"
            sentences, breaks = paragraph["sentences"], paragraph["sentence_breaks"]
            if len(sentences) != len(breaks) or not sentences:
                raise ValueError(f"{where}: {len(sentences)} sentences but {len(breaks)} sentence_breaks")
            ids = first_ids_of_context.get(paragraph["context"])
            if ids is None:
                ids = [f"{language}/{a}/{p}/{s}" for s in range(len(sentences))]
                first_ids_of_context[paragraph["context"]] = ids
                candidates.update(zip(ids, sentences))
                candidate_articles.update((cid, title) for cid in ids)
            else:
                repeated += 1
            for qa in paragraph["qas"]:
                qid = qa["id"]
                if qid in questions:
                    raise ValueError(f"{where}: question id {qid!r} appears twice")
                if not qa["answers"]:
                    raise ValueError(f"{where}: question {qid!r} has no answer")
                answer = qa["answers"][0]
                try:
                    index, in_gap = answer_sentence(breaks, answer["answer_start"], answer["text"])
                except ValueError as exc:
                    raise ValueError(f"{where}: question {qid!r}: {exc}") from None
                gaps += in_gap
                questions[qid] = qa["question"]
                relevant[qid] = ids[index]
                titles[qid] = title
    return LareqaFile(language, questions, candidates, relevant, titles, candidate_articles, repeated, gaps)


def lareqa_file(dataset: str, language: str, mirror=None) -> LareqaFile:
    """Resolve (verify) and parse the file of ``language`` in ``dataset`` ("xquad-r" / "mlqa-r")."""
    entry = data_file(LAREQA_REPO, f"{_FOLDERS[dataset]}/{language}.json")
    return parse_lareqa_file(resolve(entry, mirror), language)


def load_lareqa(dataset: str, languages: list[str] | None = None, mirror=None) -> RetrievalCorpus:
    """Build the RetrievalCorpus of ``dataset`` for ``languages`` (canonical codes; default all)."""
    available = XQUAD_R_LANGUAGES if dataset == "xquad-r" else MLQA_R_LANGUAGES
    languages = list(available if languages is None else languages)
    unknown = [lang for lang in languages if lang not in available]
    if unknown:
        raise ValueError(f"{dataset}: languages {unknown} not available; it has {list(available)}")
    files = {lang: lareqa_file(dataset, lang, mirror) for lang in languages}
    pivot = files.get(PIVOT_LANGUAGE) or lareqa_file(dataset, PIVOT_LANGUAGE, mirror)

    relevant: dict[str, dict[str, str]] = {}
    for lang, parsed in files.items():
        for qid, cid in parsed.relevant.items():
            relevant.setdefault(qid, {})[lang] = cid
    missing = sorted(qid for qid in relevant if qid not in pivot.titles)
    if missing:
        raise ValueError(f"{dataset}: question ids {missing[:5]} are missing from the English file")
    groups = {qid: wiki_group(pivot.titles[qid]) for qid in relevant}
    candidate_groups = _candidate_groups(files, pivot)
    return RetrievalCorpus(
        name=dataset,
        queries={lang: dict(parsed.questions) for lang, parsed in files.items()},
        candidates={lang: dict(parsed.candidates) for lang, parsed in files.items()},
        relevant=relevant,
        groups=groups,
        candidate_groups=candidate_groups,
    )


def _candidate_groups(files: dict[str, LareqaFile], pivot: LareqaFile) -> dict[str, str]:
    """Article group of every candidate, translated into the English title.

    Non-English titles (MLQA-R) map to English through the questions an article holds; an
    article without questions keeps its own title (it cannot be shared with English data).
    """
    result: dict[str, str] = {}
    for parsed in files.values():
        english_of_title = {parsed.titles[qid]: pivot.titles[qid] for qid in parsed.titles if qid in pivot.titles}
        for cid, title in parsed.candidate_articles.items():
            result[cid] = wiki_group(english_of_title.get(title, title))
    return result


def load_xquad_r(languages: list[str] | None = None, mirror=None) -> RetrievalCorpus:
    """XQuAD-R: 1,190 questions in each of 11 languages, 240 paragraphs of 48 articles."""
    return load_lareqa("xquad-r", languages, mirror)


def load_mlqa_r(languages: list[str] | None = None, mirror=None) -> RetrievalCorpus:
    """MLQA-R: 7 languages, each question id in 2-4 of them (always in English)."""
    return load_lareqa("mlqa-r", languages, mirror)
