"""The canonical in-memory forms every loader produces.

All language codes here are canonical tags from :mod:`hybridir.languages`.
Parallel items share one language-independent id across languages, which is what lets
batching build X-X and X-Y pairs and lets evaluation find the relevant candidate in
every language.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetrievalCorpus:
    """A multilingual retrieval evaluation set (LAReQA-style).

    queries:    lang -> {query_id: text}. In the N-way parallel sets (LAReQA, FLORES) a query
                id is the parallel item id, shared by its translations in the other
                languages; in the X -> pivot sets (Tatoeba, AfriQA) each query has its own id.
    candidates: lang -> {candidate_id: text}. Candidate ids are unique across the whole corpus
                (they embed the language), so pooled (multilingual) rankings need no renaming.
    relevant:   query_id -> {lang: candidate_id}: the relevant candidate of the item in each
                language where it exists.
    groups:     query_id -> the article / document the item comes from (leakage guard, splits).
    candidate_groups: candidate_id -> its article / document, where the source tells it (lets an
                article-level split drop the held-out articles' sentences from the pool too).
    """

    name: str
    queries: dict[str, dict[str, str]]
    candidates: dict[str, dict[str, str]]
    relevant: dict[str, dict[str, str]]
    groups: dict[str, str] = field(default_factory=dict)
    candidate_groups: dict[str, str] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return sorted(set(self.queries) | set(self.candidates))

    @property
    def query_languages(self) -> list[str]:
        return sorted(self.queries)

    @property
    def candidate_languages(self) -> list[str]:
        return sorted(self.candidates)


@dataclass(frozen=True)
class ParallelPairs:
    """Query -> passage training pairs that exist, translated, in several languages.

    Item i has the same meaning in every language: ``queries[lang][i]`` and
    ``passages[lang][i]``; ``groups[i]`` is the article / document it comes from (splits keep
    a document on one side). Which items are usable in which language is not stored here:
    :class:`~hybridir.batching.TrainingPool` derives it (an empty or ``None`` text is a missing
    translation) and applies the in-language data-size caps.
    """

    name: str
    item_ids: list[str]
    groups: list[str]
    queries: dict[str, list[str]]
    passages: dict[str, list[str]]

    @property
    def languages(self) -> list[str]:
        return list(self.queries)

    def __len__(self) -> int:
        return len(self.item_ids)
