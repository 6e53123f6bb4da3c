"""Named evaluation sets and training sources: the data layer's extension point.

Built in -- evaluation: "xquad-r", "mlqa-r", "tatoeba", "flores", "afriqa"; training: "ntrex",
"xquad", and "hf-pairs" (any Hugging Face ``datasets`` dataset with query / passage / language
/ id columns).

A loader is a function returning a :class:`RetrievalCorpus` (evaluation) or
:class:`ParallelPairs` (training). An evaluation set also declares its ``kind`` (one of
:data:`EVAL_KINDS`): ``"lareqa"`` (scored in the LAReQA retrieval settings, the default) or
``"bitext"`` (translation retrieval accuracy); :func:`hybridir.evaluation.build_evaluator`
picks the scorer from it, so a new set is scored the right way everywhere (the CLI, studies). Evaluation loaders take ``languages`` (canonical tags or
None for all) and keyword options; training loaders take keyword options only. Registering
the languages (a tuple or a zero-argument callable) lets :func:`load_eval_set` reject unknown
languages before any file is read. For example, with internet access, MIRACL from the hub::

    import datasets
    from hybridir.data.registry import register_eval_set
    from hybridir.data.types import RetrievalCorpus

    @register_eval_set("miracl-dev", languages=("sw", "yo"), kind="lareqa")
    def load_miracl(languages=None, max_queries=200):
        queries, candidates, relevant = {}, {}, {}
        for lang in languages or ("sw", "yo"):
            rows = datasets.load_dataset("miracl/miracl", lang, split="dev").select(range(max_queries))
            queries[lang], candidates[lang] = {}, {}
            for row in rows:
                qid = f"miracl/{lang}/{row['query_id']}"
                queries[lang][qid] = row["query"]
                for passage in row["positive_passages"]:
                    cid = f"miracl/{lang}/{passage['docid']}"
                    candidates[lang][cid] = passage["text"]
                    relevant.setdefault(qid, {}).setdefault(lang, cid)
        return RetrievalCorpus("miracl-dev", queries, candidates, relevant)

    corpus = load_eval_set("miracl-dev", languages=["swa"])

Training pairs from a hub or local dataset in long form (one row per item and language) need
no new code: "hf-pairs" (:mod:`hybridir.data.hf_pairs`) pivots them::

    pairs = load_train_source(
        "hf-pairs", path="json", data_files="pairs.jsonl",
        query_column="question", passage_column="context", id_column="id", language_column="lang",
    )
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hybridir.data import afriqa, flores, lareqa, ntrex, tatoeba, xquad
from hybridir.data.hf_pairs import load_hf_pairs
from hybridir.data.types import ParallelPairs, RetrievalCorpus
from hybridir.languages import canonical

LanguageSpec = Iterable[str] | Callable[[], Iterable[str]] | None
# How an evaluation set is scored: LAReQA retrieval settings, or bitext accuracy.
EVAL_KINDS = ("lareqa", "bitext")


@dataclass(frozen=True)
class _Entry:
    loader: Callable
    languages: LanguageSpec
    kind: str | None = None  # evaluation sets only

    def language_list(self) -> list[str] | None:
        spec = self.languages() if callable(self.languages) else self.languages
        return None if spec is None else list(spec)


_EVAL_SETS: dict[str, _Entry] = {}
_TRAIN_SOURCES: dict[str, _Entry] = {}


def _register(table: dict[str, _Entry], what: str, name: str, languages: LanguageSpec, kind: str | None = None):
    def decorator(loader: Callable) -> Callable:
        if name in table:
            raise ValueError(f"{what} {name!r} is already registered")
        table[name] = _Entry(loader, languages, kind)
        return loader

    return decorator


def register_eval_set(name: str, *, languages: LanguageSpec = None, kind: str = "lareqa"):
    """Decorator registering ``loader(languages=None, **options) -> RetrievalCorpus`` as ``name``,
    scored as ``kind`` (see :data:`EVAL_KINDS`)."""
    if kind not in EVAL_KINDS:
        raise ValueError(f"evaluation set {name!r}: kind {kind!r} is not one of {EVAL_KINDS}")
    return _register(_EVAL_SETS, "evaluation set", name, languages, kind)


def register_train_source(name: str, *, languages: LanguageSpec = None):
    """Decorator registering ``loader(**options) -> ParallelPairs`` as ``name``."""
    return _register(_TRAIN_SOURCES, "training source", name, languages)


def list_eval_sets() -> list[str]:
    return sorted(_EVAL_SETS)


def list_train_sources() -> list[str]:
    return sorted(_TRAIN_SOURCES)


def _entry(table: dict[str, _Entry], kind: str, name: str) -> _Entry:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(table)}") from None


def eval_set_languages(name: str) -> list[str] | None:
    """Canonical languages of an evaluation set (None if its loader did not declare them)."""
    return _entry(_EVAL_SETS, "evaluation set", name).language_list()


def eval_set_kind(name: str) -> str:
    """How evaluation set ``name`` is scored: ``"lareqa"`` or ``"bitext"``."""
    return _entry(_EVAL_SETS, "evaluation set", name).kind or "lareqa"


def train_source_languages(name: str) -> list[str] | None:
    """Languages of a training source in its documented order (None if not declared)."""
    return _entry(_TRAIN_SOURCES, "training source", name).language_list()


def check_languages(name: str, languages: Iterable[str], available: list[str] | None) -> list[str]:
    """Canonicalise ``languages``; ValueError naming any that ``name`` does not have."""
    tags = [canonical(code) for code in languages]
    if available is not None:
        unknown = [code for code, tag in zip(languages, tags) if tag not in available]
        if unknown:
            raise ValueError(f"{name} has no language {unknown}; its languages are {available}")
    return tags


def load_eval_set(name: str, languages: list[str] | None = None, **options) -> RetrievalCorpus:
    """Load evaluation set ``name`` restricted to ``languages`` (any code scheme; None: all)."""
    entry = _entry(_EVAL_SETS, "evaluation set", name)
    if languages is not None:
        languages = check_languages(name, list(languages), entry.language_list())
    return entry.loader(languages=languages, **options)


def load_train_source(name: str, **options) -> ParallelPairs:
    """Load training source ``name``; options go to its loader (e.g. languages, num_languages)."""
    entry = _entry(_TRAIN_SOURCES, "training source", name)
    if options.get("languages") is not None:
        options["languages"] = check_languages(name, list(options["languages"]), entry.language_list())
    return entry.loader(**options)


register_eval_set("xquad-r", languages=lareqa.XQUAD_R_LANGUAGES, kind="lareqa")(lareqa.load_xquad_r)
register_eval_set("mlqa-r", languages=lareqa.MLQA_R_LANGUAGES, kind="lareqa")(lareqa.load_mlqa_r)
register_eval_set("tatoeba", languages=lambda: tatoeba.TATOEBA_LANGUAGES, kind="bitext")(tatoeba.load_tatoeba)
register_eval_set("flores", languages=lambda: flores.FLORES_LANGUAGES, kind="bitext")(flores.load_flores)
register_eval_set("afriqa", languages=lambda: afriqa.AFRIQA_LANGUAGES, kind="lareqa")(afriqa.load_afriqa)
register_train_source("ntrex", languages=lambda: ntrex.NTREX_LANGUAGE_ORDER)(ntrex.load_ntrex)
register_train_source("xquad", languages=xquad.XQUAD_LANGUAGE_ORDER)(xquad.load_xquad)
register_train_source("hf-pairs")(load_hf_pairs)
