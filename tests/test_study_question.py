"""A research question is one plugin (study/question.py): a toy question registered from a
temporary module, and nothing else edited, gets its settings validated, its pre-Ray check run,
its claim selector keyword honoured, and its report (tables, findings, verdicts) built from
stored results. Plus: the shipped questions are what the schema and the CLI help list, and a
study frozen before questions had their own settings still loads."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_study_verdicts import per_query_rows

from study.checks import check_data, check_question
from study.question import get_question, questions, selector_keywords, unregister
from study.report import build_reports
from study.results import ResultStore
from study.spec import StudyConfigError, dump_study, load_study
from study.vocabulary import SPEC_FILE, axis_column, final_key

REPO = Path(__file__).resolve().parent.parent
SHIPPED = {"batch", "data", "languages", "paper", "ratio", "scale"}

TOY_MODULE = '''
"""A toy question: which alpha cells clear a cross-lingual mAP threshold?"""
from pydantic import Field

from study.question import Question, QuestionSettings, Selector, register
from study.questions.common import summarize
from study.spec import StudyConfigError
from study.vocabulary import final_key


class ToySettings(QuestionSettings):
    threshold: float = Field(0.5, ge=0, le=1)
    watched_language: str = "th"


def check(spec):
    from study.checks import final_languages

    language = spec.report.settings.watched_language
    if language not in final_languages(spec):
        raise StudyConfigError(f"report.watched_language: {language!r} is not evaluated by evaluation.final")


def _metric(ctx):
    return final_key(ctx.final_datasets()[0], "cross_map")


def build(ctx):
    table = summarize(ctx, [_metric(ctx)])
    table["above_threshold"] = table[_metric(ctx)] > ctx.settings.threshold
    return {"toy": table}


def top_cells(ctx):
    table = summarize(ctx, [_metric(ctx)])
    return {int(table.loc[table[_metric(ctx)].idxmax(), "cell"])}


def findings(ctx, tables):
    above = tables["toy"][tables["toy"]["above_threshold"]]
    return [f"- {len(above)} cell(s) above {ctx.settings.threshold}: cells {sorted(above['cell'].tolist())}"]


register(Question(
    name="toy", summary="a toy question for the plugin test", build=build, settings=ToySettings, check=check,
    selectors={"toppest": Selector(axis="batching.alpha", description="highest-mAP alpha", cells=top_cells)},
    findings=findings,
))
'''

CLAIM = {"id": "toppest-beats-xy", "statement": "the toy's top alpha beats X-Y", "dataset": "xquad-r",
         "setting": "cross", "measure": "ap", "compare": {"a": {"batching.alpha": "toppest"},
                                                        "b": {"batching.alpha": 0.0}}, "direction": "greater"}


@pytest.fixture
def toy(tmp_path, monkeypatch):
    name = f"toy_question_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    yield module
    unregister("toy")
    sys.modules.pop(name, None)


def _toy_study(**settings):
    report = {"builder": "toy", **settings}
    return load_study("default", [f"report={yaml.safe_dump(report, default_flow_style=True).strip()}",
                                  f"claims=[{yaml.safe_dump(CLAIM, default_flow_style=True).strip()}]"])


def test_a_toy_question_from_its_own_module_validates_checks_and_reports(toy, tmp_path):
    # settings: the question's own fields, validated by its model; the shared ones stay shared
    spec = _toy_study(threshold=0.3)
    assert type(spec.report.settings).__name__ == "ToySettings" and spec.report.settings.threshold == 0.3
    assert spec.model_dump(mode="json")["report"] == {"builder": "toy", "accuracy_tolerance": 0.01,
                                                      "threshold": 0.3, "watched_language": "th"}
    with pytest.raises(StudyConfigError, match="report.threshold"):
        _toy_study(threshold=2.0)
    with pytest.raises(StudyConfigError, match=r"report.colour: not a setting of question 'toy'"):
        _toy_study(colour="red")
    with pytest.raises(StudyConfigError, match=r"report.low_resource_languages.*question 'ratio'"):
        _toy_study(low_resource_languages=["th"])
    # its selector keyword: only on its axis, only in its own studies
    assert selector_keywords()["toppest"] == "toy"
    with pytest.raises(StudyConfigError, match=r"'toppest' is the toy report's highest-mAP alpha"):
        load_study("default", [f"claims=[{yaml.safe_dump(CLAIM, default_flow_style=True).strip()}]"])

    # pre-Ray checks: its own, run with the data checks
    check_question(spec)
    with pytest.raises(StudyConfigError, match=r"report.watched_language: 'sw' is not evaluated"):
        check_data(_toy_study(watched_language="sw"))

    # the report, from stored results: its table, its findings, its keyword in the verdicts
    spec = load_study("default", ["axes.batching.alpha=[0.0, 0.5, 1.0]", "report={builder: toy, threshold: 0.33}",
                                  f"claims=[{yaml.safe_dump(CLAIM, default_flow_style=True).strip()}]"])
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    dump_study(spec, study_dir / SPEC_FILE)
    store = ResultStore(study_dir)
    rng = np.random.default_rng(0)
    for cell, axes in enumerate(spec.cells()):
        shift = {0.0: 0.0, 0.5: 0.1, 1.0: -0.05}[axes["batching.alpha"]]
        for seed in (0, 1):
            trial_id = f"c{cell}s{seed}"
            store.write_per_query(trial_id, per_query_rows(rng, cross_shift=shift))
            store.append_trial({"trial_id": trial_id, "status": "completed", "phase": "search" if seed == 0 else "seeds",
                                "cell": cell, "seed": None if seed == 0 else seed, "finished_at": float(cell * 2 + seed),
                                axis_column("batching.alpha"): axes["batching.alpha"], "inter/cross_map": 0.3,
                                final_key("xquad-r", "cross_map"): 0.3 + shift})
    out = build_reports(study_dir)
    table = pd.read_csv(out / "toy.csv")
    assert table["above_threshold"].tolist() == [False, True, False]
    markdown = (out / "report.md").read_text()
    assert "## Findings" in markdown and "- 1 cell(s) above 0.33: cells [1]" in markdown
    verdict = pd.read_csv(out / "verdict.csv").iloc[0]
    assert verdict["claim"] == "toppest-beats-xy" and verdict["cells"] == "(batching.alpha=0.5) - (batching.alpha=0.0)"
    assert verdict["verdict"] in ("supported", "inconclusive") and verdict["estimate"] > 0


def test_without_the_module_the_toy_is_unknown_and_named():
    assert "toy" not in questions()
    with pytest.raises(StudyConfigError, match=r"report.builder: unknown report builder 'toy'; known questions"):
        load_study("default", ["report={builder: toy}"])


def test_the_shipped_questions_are_the_registry_and_the_help_lists_them():
    assert set(questions()) == SHIPPED
    assert get_question("batch").selectors["recommended"].axis == "batching.batch_size"
    text = subprocess.run([sys.executable, str(REPO / "study" / "run.py"), "--help"],
                          capture_output=True, text=True, check=True).stdout
    studies = sorted(path.stem for path in (REPO / "study" / "studies").glob("*.yaml"))
    assert f"({', '.join(studies)})" in " ".join(text.split())
    for name in SHIPPED:
        assert f"  {name}: {get_question(name).summary}" in text
    # every shipped study YAML names a registered question
    for path in (REPO / "study" / "studies").glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["report"]["builder"] in SHIPPED


def test_a_study_frozen_before_question_settings_still_loads(tmp_path):
    """Frozen study.yaml files carried every question's settings (defaults); they load as before,
    and a non-default value of another question's setting is still an error naming it."""
    raw = yaml.safe_load((REPO / "study" / "studies" / "ratio.yaml").read_text())
    raw["report"] = {"builder": "ratio", "published": [], "reference_languages": 40,
                     "low_resource_languages": ["th", "el"], "target_languages": None, "accuracy_tolerance": 0.02}
    spec = load_study(raw)
    assert spec.report.settings.low_resource_languages == ["th", "el"] and spec.report.accuracy_tolerance == 0.02
    raw["report"]["reference_languages"] = 20
    with pytest.raises(StudyConfigError, match=r"report.reference_languages: not a setting of question 'ratio'.*"
                                                r"question 'languages'"):
        load_study(raw)
