"""A research question is one plugin: everything the study needs to know about it, registered
in one place by its own module.

A question module (``study/questions/<name>.py``, or any module imported before the study is
loaded) calls :func:`register` with a :class:`Question`:

* ``name``: what a study YAML's ``report.builder`` names;
* ``summary``: one line for ``study/run.py --help`` and the docs;
* ``settings``: a pydantic model of the question's OWN ``report:`` fields (strict; the shared
  ``report.accuracy_tolerance`` and ``report.builder`` are :class:`study.spec.ReportSettings`'),
  read by the question as ``ctx.settings`` / ``spec.report.settings``;
* ``check``: pre-Ray checks that need the data registry (``spec`` -> None, raising
  :class:`study.spec.StudyConfigError` naming the field); run by :func:`study.checks.check_question`;
* ``build``: the report builder, ``ReportContext -> {table name: DataFrame}`` (one CSV each);
* ``selectors``: claim selector keywords the question defines (``compare: {a: {<axis>: <keyword>}}``),
  each a :class:`Selector` (its axis and the function choosing the cells);
* ``findings``: optional extra lines of ``report.md`` after the verdicts (``(ctx, tables) -> lines``).

The registry is what the schema validates against (``report.builder`` names, each question's
settings, the selector keywords), what ``study/report.py`` builds with and what the CLI help
lists. Adding a question is one YAML file plus one module; see study/README.md ("Add a
question"). The shipped modules under ``study/questions/`` are imported on the first lookup.
No Ray; this module imports nothing of the study (``study.spec`` imports it).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # annotations only: the question modules import these, not the other way round
    import pandas as pd

    from study.questions.common import ReportContext
    from study.spec import StudySpec

QUESTIONS_PACKAGE = "study.questions"
# Selector keyword every question has: the cell of highest claim statistic along that axis.
BEST = "best"


class QuestionSettings(BaseModel):
    """Base of a question's own ``report:`` settings: strict (a typo is an error naming it)."""

    model_config = ConfigDict(extra="forbid")


class NoSettings(QuestionSettings):
    """A question without settings of its own."""


@dataclass(frozen=True)
class Selector:
    """A claim selector keyword a question defines: valid on ``axis`` in a study whose
    ``report.builder`` is the question; ``cells(ctx)`` -> the grid cells it selects (across all
    combinations of the other axes)."""

    axis: str
    description: str
    cells: Callable[["ReportContext"], set[int]]


@dataclass(frozen=True)
class Question:
    name: str
    summary: str
    build: Callable[["ReportContext"], dict[str, "pd.DataFrame"]]
    settings: type[QuestionSettings] = NoSettings
    check: Callable[["StudySpec"], None] | None = None
    selectors: dict[str, Selector] = field(default_factory=dict)
    findings: Callable[["ReportContext", dict], list[str]] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"question name {self.name!r}: use letters, digits and _ (it is report.builder)")
        if not (isinstance(self.settings, type) and issubclass(self.settings, QuestionSettings)):
            raise TypeError(f"question {self.name!r}: settings must subclass study.question.QuestionSettings")
        if BEST in self.selectors:
            raise ValueError(f"question {self.name!r}: selector keyword {BEST!r} is every question's")


_REGISTRY: dict[str, Question] = {}
_SHIPPED_LOADED = False


def register(question: Question) -> Question:
    """Add ``question`` (its module calls this on import); a second, different question under
    the same name is an error, re-registering the same one (a reloaded module) replaces it."""
    existing = _REGISTRY.get(question.name)
    if existing is not None and existing.build.__module__ != question.build.__module__:
        raise ValueError(f"question {question.name!r} is already registered by {existing.build.__module__}")
    for keyword in question.selectors:
        owner = next((q.name for q in _REGISTRY.values() if keyword in q.selectors and q.name != question.name), None)
        if owner is not None:
            raise ValueError(f"question {question.name!r}: selector keyword {keyword!r} is already question "
                             f"{owner!r}'s")
    _REGISTRY[question.name] = question
    return question


def unregister(name: str) -> None:
    """Remove a question (tests that register a temporary one)."""
    _REGISTRY.pop(name, None)


def _load_shipped() -> None:
    global _SHIPPED_LOADED
    if _SHIPPED_LOADED:
        return
    _SHIPPED_LOADED = True
    package = importlib.import_module(QUESTIONS_PACKAGE)
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        importlib.import_module(f"{QUESTIONS_PACKAGE}.{module.name}")


def questions() -> dict[str, Question]:
    """Every registered question by name (the shipped ones imported first)."""
    _load_shipped()
    return dict(sorted(_REGISTRY.items()))


def get_question(name: str) -> Question:
    """The question ``report.builder`` names; ValueError listing the known ones otherwise."""
    known = questions()
    if name not in known:
        raise ValueError(f"unknown report builder {name!r}; known questions: {sorted(known)}")
    return known[name]


def selector_keywords() -> dict[str, str | None]:
    """Every claim selector keyword -> the question defining it (None: every question's ``best``)."""
    keywords: dict[str, str | None] = {BEST: None}
    for question in questions().values():
        keywords.update({keyword: question.name for keyword in question.selectors})
    return keywords


def settings_owner(key: str, exclude: str) -> Question | None:
    """The registered question (other than ``exclude``) whose settings have field ``key``."""
    return next((q for q in questions().values() if q.name != exclude and key in q.settings.model_fields), None)


def describe() -> str:
    """``name: summary`` of every question, one per line (CLI help, docs)."""
    return "\n".join(f"  {q.name}: {q.summary}" for q in questions().values())


def default_of(model: type[BaseModel], key: str) -> Any:
    """A settings field's default value (its factory's value for list defaults)."""
    info = model.model_fields[key]
    return info.get_default(call_default_factory=True)
