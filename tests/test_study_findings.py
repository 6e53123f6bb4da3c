"""docs/findings.md from stored results (``study/report.py --findings``), without Ray.

The run directories are built like the report tests' (tests/test_study_verdicts.py): a frozen
study.yaml and results written through the study's own ResultStore. Expected text is derived
from the stored files (verdict.csv, zero_shot.json, the trials), not from the code under test.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from study import findings as findings_module
from study.findings import build_findings
from study.report import build_reports
from study.report import main as report_main
from study.results import ResultStore
from study.spec import dump_study, load_study
from study.verdicts import verdict_markdown
from tests.test_study_verdicts import _trial, macro, per_query_rows, stored_matrices


def _ratio_run(path, rng):
    """Q5: alpha 0 / 0.5 / 1 with 2 seed re-runs each, changed by --set from the shipped grid,
    with a zero-shot model and measured trial times."""
    spec = load_study("ratio", ["axes.batching.alpha=[0.0, 0.5, 1.0]", "report.low_resource_languages=[th, el]"])
    dump_study(spec, path / "study.yaml")
    store = ResultStore(path)
    shifts = {0.0: 0.05, 0.5: 0.08, 1.0: -0.05}
    for cell, axes in enumerate(spec.cells()):
        for seed in (1, 2):
            trial_id = f"a{cell}s{seed}"
            frame = per_query_rows(rng, cross_shift=shifts[axes["batching.alpha"]])
            store.write_per_query(trial_id, frame)
            row = _trial(spec, trial_id, cell, "seeds", seed=seed)
            row.update({"wall_time_s": 100.0, "finished_at": 1_800_000_000.0 + 100 * (2 * cell + seed)})
            store.append_trial(row, stored_matrices(frame))
    zero = per_query_rows(rng, cross_shift=-0.2)
    metrics = {f"final/xquad-r/{s}_map": macro(zero, s, "ap") for s in ("mono", "cross", "multi")}
    store.write_zero_shot("tiny zero-shot model", metrics, zero)
    return spec, metrics


def _batch_run(path, rng):
    """Q2 with its local profile and no zero-shot model stored."""
    spec = load_study("batch", profile="local")
    dump_study(spec, path / "study.yaml")
    store = ResultStore(path)
    for cell, axes in enumerate(spec.cells()):
        batch = axes["batching.batch_size"]
        trial_id = f"b{cell}"
        store.write_per_query(trial_id, per_query_rows(rng, cross_shift=0.01 * cell))
        row = _trial(spec, trial_id, cell, "search")
        row.update({"final/xquad-r/multi_map": 0.2, "worker_seconds": 60.0, "wall_time_s": 60.0,
                    "train/pairs_per_s_overall": 1.0, "train/cost/flops_trained": 1e12 + batch})
        store.append_trial(row)
    return spec


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings")
    rng = np.random.default_rng(11)
    ratio_dir, batch_dir = root / "ratio-run", root / "batch-run"
    ratio_dir.mkdir()
    batch_dir.mkdir()
    ratio_spec, zero_metrics = _ratio_run(ratio_dir, rng)
    batch_spec = _batch_run(batch_dir, rng)
    out = root / "docs" / "findings.md"
    # the ratio run first on the command line: the document orders by question (Q2 before Q5)
    assert report_main(["--findings", str(ratio_dir), str(batch_dir), "--out", str(out)]) == 0
    return {"out": out, "text": out.read_text(), "ratio": (ratio_dir, ratio_spec, zero_metrics),
            "batch": (batch_dir, batch_spec)}


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    rest = text[start + len(heading):]
    end = re.search(r"^## ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def test_sections_in_question_order_with_the_question_as_posed(written):
    text = written["text"]
    ratio_dir, ratio_spec, _ = written["ratio"]
    batch_dir, batch_spec = written["batch"]
    q2, q5 = text.index(f"## Q2 batch {batch_dir.name}"), text.index(f"## Q5 ratio {ratio_dir.name}")
    assert q2 < q5
    for heading, spec in ((f"## Q2 batch {batch_dir.name}", batch_spec), (f"## Q5 ratio {ratio_dir.name}", ratio_spec)):
        part = _section(text, heading)
        assert spec.question.strip() in part
        for sub in ("### Design actually run", "### Deviations", "### Verdicts", "### The untrained model",
                    "### Answer", "### What the cluster profile would change"):
            assert sub in part, (heading, sub)


def test_verdict_tables_are_verdict_csv(written):
    text = written["text"]
    for key, name in (("ratio", "ratio"), ("batch", "batch")):
        run_dir = written[key][0]
        verdicts = pd.read_csv(run_dir / "reports" / name / "verdict.csv")
        assert len(verdicts) > 0
        table = "\n".join(verdict_markdown(verdicts))
        assert table in _section(text, f" {name} {run_dir.name}")
        # the plain-language answer: one line per claim, with the verdict's words
        answer = _section(text, f" {name} {run_dir.name}").split("### Answer")[1].split("###")[0]
        for row in verdicts.to_dict("records"):
            line = next(line for line in answer.splitlines() if f"**{row['claim']}**" in line)
            if row["verdict"] == "inconclusive":
                assert "inconclusive at this budget" in line
                assert (f"at least {row['mdd']:.4f}" if np.isfinite(row["mdd"]) else "detectable difference is unknown") in line
            elif row["verdict"] == "not tested":
                assert "not tested" in line
            else:
                assert row["verdict"] in line and row["ci"] in line and f"{row['estimate']:.4f}" in line


def test_zero_shot_row_and_plot(written):
    text, out = written["text"], written["out"]
    ratio_dir, _, zero_metrics = written["ratio"]
    ratio = _section(text, f" ratio {ratio_dir.name}")
    assert "tiny zero-shot model" in ratio
    assert f"| xquad-r/cross_map | {zero_metrics['final/xquad-r/cross_map']:.4f} |" in ratio
    batch = _section(text, f" batch {written['batch'][0].name}")
    assert "no results/zero_shot.json" in batch
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", ratio)
    assert len(images) == 1 and images[0].startswith("findings/") and images[0].endswith(".png")
    assert (out.parent / images[0]).stat().st_size > 0


def test_design_and_deviations(written):
    text = written["text"]
    ratio_dir, ratio_spec, _ = written["ratio"]
    ratio = _section(text, f" ratio {ratio_dir.name}")
    assert "runs per cell (completed trials: search + seed re-runs): 2 " in ratio
    assert "10.0 min summed over 6 trials" in ratio  # 6 trials x 100 s
    assert "10.0 min from the first trial's start" in ratio  # finished_at 100 s apart, each 100 s long
    assert ratio_spec.deviations and all(item in ratio for item in ratio_spec.deviations)
    # --set changes: the frozen study against the shipped one
    assert "changed by --set" in ratio and "`axes.batching.alpha`" in ratio and "low_resource_languages" in ratio
    batch_dir, batch_spec = written["batch"]
    batch = _section(text, f" batch {batch_dir.name}")
    assert "profile: `local`" in batch and "profile `local` overrides" in batch
    assert "changed by --set for this run" not in batch  # the local profile alone
    assert "claim `recommended-batch-within-margin-mlqa` not testable in this run" in batch
    for config in (batch_spec.train_config(axes) for axes in batch_spec.cells()):  # steps x batch of each cell
        assert f"{config.max_steps} x {config.batching.batch_size}" in batch
    assert "languages: all of the source (per cell as the axis data.num_languages sets)" in batch
    final = batch_spec.evaluation.final[0]
    assert f"- evaluation: {final.dataset}, languages {', '.join(final.languages)}" in batch


def test_cluster_estimate_is_labelled(written):
    text = written["text"]
    batch_dir, batch_spec = written["batch"]
    part = _section(text, f" batch {batch_dir.name}").split("### What the cluster profile would change")[1]
    cluster = load_study("batch", profile="cluster")
    runs = cluster.search.samples_per_cell + cluster.search.seeds
    assert f"- trials: {len(cluster.cells()) * runs} " in part
    assert "CPU-based extrapolation, not a GPU measurement" in part
    # the extrapolation from this run's measured seconds per pair
    pairs = sum(runs * c.max_steps * c.batching.batch_size for c in (cluster.train_config(a) for a in cluster.cells()))
    local_pairs = sum(c.max_steps * c.batching.batch_size for c in (batch_spec.train_config(a) for a in batch_spec.cells()))
    hours = pairs * (60.0 * len(batch_spec.cells()) / local_pairs) / 3600
    assert f"about {hours:.1f} trial-hours" in part


def test_measured_gpu_throughput_replaces_the_extrapolation(written, tmp_path):
    import json

    batch_dir, batch_spec = written["batch"]
    measurement = tmp_path / "gpu_check.json"
    measurement.write_text(json.dumps({"dry_run": False, "device": "H100", "rows": [
        {"name": "mfu", "numbers": {"batch_size": 64, "pairs_per_s": 400.0}},
        {"name": "mfu", "numbers": {"batch_size": 128, "pairs_per_s": 800.0}}]}))
    lines = "\n".join(findings_module.cluster_lines(batch_spec, pd.DataFrame(), gpu_measurement=measurement))
    cluster = load_study("batch", profile="cluster")
    runs = cluster.search.samples_per_cell + cluster.search.seeds
    pairs = sum(runs * c.max_steps * c.batching.batch_size for c in (cluster.train_config(a) for a in cluster.cells()))
    hours = pairs / 800.0 / 3600 * cluster.resources.num_workers
    assert "**estimate** of GPU-hours" in lines and f"{hours:.1f} GPU-hours" in lines and "H100" in lines
    measurement.write_text(json.dumps({"dry_run": True, "rows": [{"pairs_per_s": 5.0}]}))
    assert findings_module.measured_gpu_throughput(measurement) is None  # a CPU dry run is no GPU measurement


def test_a_run_without_results_is_named(tmp_path, capsys):
    empty = tmp_path / "not-run-yet"
    empty.mkdir()
    dump_study(load_study("ratio"), empty / "study.yaml")
    assert report_main(["--findings", str(empty), "--out", str(tmp_path / "f.md")]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "no completed trial" in err
    assert not (tmp_path / "f.md").exists()
    # named before anything is rebuilt: the good run given first keeps no new reports
    good = tmp_path / "good"
    good.mkdir()
    _ratio_run(good, np.random.default_rng(5))
    assert report_main(["--findings", str(good), str(empty), "--out", str(tmp_path / "f.md")]) == 2
    assert str(empty) in capsys.readouterr().err and not (good / "reports").exists()
    missing = tmp_path / "nowhere"
    with pytest.raises(Exception, match="nowhere"):
        build_findings([missing], tmp_path / "g.md", build_reports)


# ---- every study's cluster profile passes the pre-Ray checks on a mocked GPU cluster (issue 22 item 5)

def _cluster_profiles() -> list[tuple[str, str]]:
    import yaml

    from study.spec import STUDIES_DIR

    found = []
    for path in sorted(STUDIES_DIR.glob("*.yaml")):
        profiles = yaml.safe_load(path.read_text()).get("profiles") or {}
        found += [(path.stem, name) for name in (findings_module.CLUSTER_PROFILE,) if name in profiles]
    return found


def test_the_question_studies_have_a_cluster_profile():
    names = {study for study, _ in _cluster_profiles()}
    assert {"languages", "batch", "data", "paper", "ratio", "scale"} <= names


# The hub's model-size ladder as a mocked hub serves it: the published configs' depth and width
# (huggingface.co/intfloat/multilingual-e5-{small,base,large}/config.json).
HUB_LADDER = {"intfloat/multilingual-e5-small": (12, 384), "intfloat/multilingual-e5-base": (12, 768),
              "intfloat/multilingual-e5-large": (24, 1024)}


@pytest.mark.parametrize(("study", "profile"), _cluster_profiles())
def test_cluster_profile_passes_the_pre_ray_checks_with_mocked_gpus(study, profile, tmp_path, monkeypatch):
    import torch
    from transformers import XLMRobertaConfig

    from hybridir import model as model_module
    from study import checks
    from study.run import parse_args, prepare

    # a mocked cluster: 8 GPUs and 64 CPUs (torch's device count and the CPU count the checks read)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(checks.os, "cpu_count", lambda: 64)
    # and a mocked hub: the model-size ladder's configs (the pre-Ray model check reads configs only)
    hub_reads = []
    real_config = model_module._encoder_config

    def hub_config(source, name):
        if source not in HUB_LADDER:
            return real_config(source, name)
        hub_reads.append(source)
        layers, hidden = HUB_LADDER[source]
        return XLMRobertaConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=hidden // 64,
                                intermediate_size=4 * hidden)

    monkeypatch.setattr(model_module, "_encoder_config", hub_config)
    spec, output = prepare(parse_args(["--study", study, "--profile", profile, "--output", str(tmp_path / "run")]))
    assert spec.profile == profile and spec.resources.use_gpu
    if study == "scale":  # the real size ladder by hub id, each model checked before Ray, every claim on its grid
        assert {cell["model.name"] for cell in spec.cells()} == set(HUB_LADDER) == set(hub_reads)
        assert spec.claims and all(claim.untestable is None for claim in spec.claims)
    assert (output / "study.yaml").is_file()
    # the same check a running cluster gets (study.run.start_ray with --address), from its resources
    checks.check_cluster_resources(spec, {"CPU": 64.0, "GPU": 8.0})
    with pytest.raises(Exception, match="use_gpu"):
        checks.check_cluster_resources(spec, {"CPU": 64.0, "GPU": 0.0})
    # its time in the findings document is labelled as an estimate (no GPU measured: a CPU extrapolation)
    local = load_study(study, profile="local") if "local" in spec.profiles else load_study(study)
    done = pd.DataFrame([{"cell": cell, "status": "completed", "wall_time_s": 120.0}
                         for cell in range(len(local.cells() or [{}]))])
    lines = findings_module.cluster_lines(local, done, gpu_measurement=tmp_path / "no-gpu-measurement.json")
    text = "\n".join(lines)
    assert f"Profile `{profile}`" in text
    hours = [line for line in lines if "hours" in line]
    assert hours and all("**CPU-based extrapolation, not a GPU measurement**" in line for line in hours)


@pytest.mark.parametrize(("study", "profile"), _cluster_profiles())
def test_the_planner_on_each_cluster_profile(study, profile, capsys):
    """``study/run.py --plan`` (study/plan.py) on the cluster profile: it runs without Ray, counts
    the trials the findings document counts, and its time line is an estimate or says why none."""
    from study.findings import _trial_budget
    from study.run import main as run_main

    assert run_main(["--study", study, "--profile", profile, "--plan"]) == 0
    printed = capsys.readouterr().out
    trials, _ = _trial_budget(load_study(study, profile=profile))
    assert re.search(rf"^trials: {trials} = ", printed, flags=re.M), printed
    wall = next(line for line in printed.splitlines() if "wall time" in line)
    assert wall.startswith("estimated wall time")
    assert "use_gpu" in printed  # no GPU cost is measured: the plan says so instead of giving CPU hours


def test_question_findings_lines_in_the_document(written):
    """The batch question's own findings (study/questions/batch.py): the local profile holds the
    pairs seen constant (max_pairs: steps x batch the same at every batch size), and names the
    recommended batch size per language count with the compute measure it used."""
    batch_dir, spec = written["batch"]
    part = _section(written["text"], f" batch {batch_dir.name}")
    assert "### batch: the question's own findings" in part
    pairs = spec.base_config.max_pairs
    line = f"Training pairs seen held constant across batch sizes (steps x batch = {pairs:,})"
    assert line in part and "not confounded" in part
    assert line in (batch_dir / "reports" / "batch" / "report.md").read_text()  # report.md too
    # every cell has the same accuracy here, so the cheapest in trained-layer FLOPs (batch 16) is recommended
    assert "the cheapest in model FLOPs of the trained layers" in part
    for langs in spec.axes["data.num_languages"]:
        assert f"{langs} languages: batch {min(spec.axes['batching.batch_size'])} (" in part
    # the frontier table: one row per cell, the smallest batch recommended at every language count
    assert "| languages | batch | steps | pairs | runs | cross mAP |" in part
    for axes in spec.cells():
        config = spec.train_config(axes)
        row = next(line for line in part.splitlines()
                   if line.startswith(f"| {axes['data.num_languages']} | {config.batching.batch_size} | {config.max_steps} |"))
        assert row.endswith("| yes |") == (config.batching.batch_size == min(spec.axes["batching.batch_size"]))


def test_languages_regime_from_the_design():
    from types import SimpleNamespace

    from study.question import get_question

    findings = get_question("languages").findings
    fixed = load_study("languages", profile="local")  # 24 steps x 32 at 11 / 40 / 64 / 96 / 128 languages
    text = "\n".join(findings(SimpleNamespace(spec=fixed), {}))
    assert "fixed total budget" in text and "768 training pairs" in text and "11: ~70" in text and "128: ~6" in text
    grown = load_study("languages", ["axes.data.num_languages=[10, 40]", "axes.max_steps=[100, 400]",
                                     "batching.batch_size=16", "claims=[]"])
    # max_steps as a second axis: each count meets both step counts, neither regime holds
    assert "not in proportion" in "\n".join(findings(SimpleNamespace(spec=grown), {}))

    # X-X batches train one language each: alpha 0.5 x 24 steps x 3 evaluation languages (de, ar, zh) / N
    assert "the 3 evaluation languages together expect" in text
    assert "11: 3.27, 40: 0.90, 64: 0.56, 96: 0.38, 128: 0.28" in text


def test_paper_section_tables_beside_the_published_rows_and_untested_claims(tmp_path):
    """A paper run without per-query results: its claims are 'not tested' with the reason, its
    section holds the paper's tables 1-2 beside ours (the paper question's findings) and comes
    after Q5."""
    spec = load_study("paper")
    paper_dir = tmp_path / "paper-run"
    paper_dir.mkdir()
    dump_study(spec, paper_dir / "study.yaml")
    store = ResultStore(paper_dir)
    for cell, axes in enumerate(spec.cells()):
        metrics = {"inter/cross_map": 0.5, "model/display_name": "tiny model"}
        for dataset in ("xquad-r", "mlqa-r"):
            metrics.update({f"final/{dataset}/{m}": 0.3 + 0.1 * cell for m in ("mono_map", "cross_map", "multi_map")})
            metrics[f"final/{dataset}/rank_distance"] = 100.0 + cell
        store.append_trial(_trial(spec, f"p{cell}", cell, "search") | metrics)
    zero = {f"final/{d}/{m}": 0.2 for d in ("xquad-r", "mlqa-r") for m in ("mono_map", "cross_map", "multi_map")}
    store.write_zero_shot("tiny model", zero, pd.DataFrame({"dataset": ["xquad-r"], "setting": ["mono"],
                                                            "query_lang": ["en"], "candidate_lang": ["en"],
                                                            "query_id": ["q"], "ap": [0.2]}))
    ratio_dir = tmp_path / "ratio-run"
    ratio_dir.mkdir()
    _ratio_run(ratio_dir, np.random.default_rng(3))
    out = build_findings([paper_dir, ratio_dir], tmp_path / "findings.md", build_reports)
    text = out.read_text()
    assert text.index("## Q5 ratio") < text.index("## paper paper")
    part = _section(text, "## paper paper")
    assert "Table 1 (mAP): ours beside the paper's published rows" in part
    table1 = pd.read_csv(paper_dir / "reports" / "paper" / "paper_table1_map.csv")
    assert len(table1) > 0 and all(f"| {model} |" in part for model in set(table1["model"]) if isinstance(model, str))
    verdicts = pd.read_csv(paper_dir / "reports" / "paper" / "verdict.csv")
    assert set(verdicts["verdict"]) == {"not tested"}
    answer = part.split("### Answer")[1].split("###")[0]
    assert answer.count(", not tested: ") == len(verdicts)
    top = 0.3 + 0.1 * (len(spec.cells()) - 1)  # the trained cells' range of the stored metric
    assert "Profile `cluster`" in part and f"| xquad-r/cross_map | 0.2000 | 0.3000 | {top:.4f} |" in part


def test_batch_cost_spread_and_the_recommendation_that_holds_by_construction():
    from study.questions.batch import cost_spread_lines
    from study.vocabulary import RUN, TRAINED, ZERO_SHOT

    table = pd.DataFrame({RUN: [ZERO_SHOT, TRAINED, TRAINED], "num_languages": [np.nan, 3, 3],
                          "batch_size": [np.nan, 16, 32], "flops_trained": [np.nan, 2.0e12, 2.2e12],
                          "cpu_s": [np.nan, 80.0, 60.0]})
    same = pd.DataFrame({"num_languages": [3], "recommended_batch_size": [16], "best_batch_size": [16]})
    spread, construction = cost_spread_lines(table, same)
    assert "3 languages: trained-layer FLOPs x1.10, CPU-s x1.33." in spread
    assert "(3 languages)" in construction and "holds by construction and is no evidence" in construction
    assert cost_spread_lines(table, same.assign(best_batch_size=32)) == [spread]  # a real choice: no note
