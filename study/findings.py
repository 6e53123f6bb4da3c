"""docs/findings.md from stored study results: one section per study run, never typed by hand.

    python study/report.py --findings RUN_DIR [RUN_DIR ...] [--out docs/findings.md]

Per run directory (a study written by study/run.py, with its frozen ``study.yaml`` and
``results/``), ordered by question (Q1 languages, Q2 batch, Q3 data, Q4 scale, Q5 ratio, then
the paper, then any other registered question): the question as posed, the design actually
run (from the frozen study and the stored trials, measured wall time included), every
deviation (the YAML's ``deviations:`` and every setting the run changed by ``--set`` beyond its
profile, found by comparing the frozen study with the shipped one), the verdict table
(``reports/<study>/verdict.csv``, rebuilt from the results by :func:`study.report.build_reports`),
one plot with 95% CIs (copied to ``docs/findings/``), the untrained model's row, a
plain-language answer generated from the verdicts, the question's own findings lines
(:attr:`study.question.Question.findings`) and what the cluster profile would change (its trial
count and a time estimate, labelled as an estimate: from a measured GPU throughput when the
repository holds one, else a CPU-based extrapolation from this run's measured cost).

No Ray. Errors name the run directory (:class:`study.spec.StudyConfigError`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from study.question import get_question
from study.questions.common import CELLS_PLOT, FOREST_PLOT, ReportContext, fine_tuning_text, zero_shot_info
from study.results import ResultStore
from study.spec import StudyConfigError, StudySpec, load_study, resolve_study_file
from study.storage import local_directory
from study.verdicts import NOT_TESTED, VERDICT_FILE, number_text, verdict_markdown
from study.vocabulary import CELL, COMPLETED, FINISHED_AT, PHASE, SPEC_FILE, STATUS, WALL_TIME

# The five questions of the project, then the paper's claims; other questions follow by name.
QUESTION_ORDER = {"languages": "Q1", "batch": "Q2", "data": "Q3", "scale": "Q4", "ratio": "Q5", "paper": "paper"}
# Profiles that describe the full (cluster) design, in order of preference.
CLUSTER_PROFILE = "cluster"  # the profile name every study gives its full design on a GPU cluster
# Where a GPU measurement of bench/gpu_check.py (its gpu_check.json) is kept once one was run.
GPU_MEASUREMENT = Path(__file__).resolve().parent.parent / "bench" / "results" / "gpu_check.json"
FIGURES_DIR = "findings"  # next to the markdown file: docs/findings/
DEFAULT_OUT = Path("docs/findings.md")


class _Run:
    """One run directory: its frozen study, stored results and rebuilt reports."""

    def __init__(self, run_dir: str | Path, build_reports: Callable[[Path], Path]):
        self.dir = local_directory(run_dir, "--findings")
        self.trials, self.completed = check_run_dir(self.dir)
        self.spec = load_study(self.dir / SPEC_FILE)
        self.store = ResultStore(self.dir)
        self.report_dir = build_reports(self.dir)
        self.verdicts = _read_verdicts(self.report_dir / VERDICT_FILE)
        self.ctx = ReportContext(self.spec, self.store, self.trials, self.store.history(), self.report_dir)
        self.question = get_question(self.spec.report.builder)

    @property
    def order(self) -> tuple[int, str]:
        keys = list(QUESTION_ORDER)
        name = self.spec.report.builder
        return (keys.index(name) if name in keys else len(keys), name)

    @property
    def label(self) -> str:
        return QUESTION_ORDER.get(self.spec.report.builder, self.spec.report.builder)


def check_run_dir(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, completed trials) of a study run directory; StudyConfigError naming it when it
    is no study directory or has no completed trial stored."""
    if not (path / SPEC_FILE).is_file():
        raise StudyConfigError(f"--findings {path}: no {SPEC_FILE} (not a study directory)")
    trials = ResultStore(path).trials()
    done = trials[trials[STATUS] == COMPLETED] if STATUS in trials else trials[:0]
    if done.empty:
        raise StudyConfigError(f"--findings {path}: no completed trial in {path / 'results'} "
                               "(no stored results to write up; run or resume the study first)")
    return trials, done


def _read_verdicts(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def build_findings(run_dirs: list[str | Path], out: str | Path, build_reports: Callable[[Path], Path]) -> Path:
    """Write the findings document for ``run_dirs``; every directory is checked before any
    report is rebuilt or anything is written. Returns the markdown file. ``build_reports`` is
    :func:`study.report.build_reports` (passed in by its CLI: this module builds on the reports,
    and study/report.py's ``--findings`` is this module's entry point)."""
    if not run_dirs:
        raise StudyConfigError("--findings: name at least one study run directory")
    for run_dir in run_dirs:  # cheap checks first: a bad directory is named before any report is rebuilt
        check_run_dir(local_directory(run_dir, "--findings"))
    runs = sorted((_Run(d, build_reports) for d in run_dirs), key=lambda r: r.order)
    out = Path(out)
    figures = out.parent / FIGURES_DIR
    figures.mkdir(parents=True, exist_ok=True)
    lines = ["# Findings", "",
             "Generated by `python study/report.py --findings "
             + " ".join(str(r.dir) for r in runs) + "` from the stored results of each run (do not edit by hand; "
             "rebuild instead). One section per study run, ordered by question.", ""]
    lines += [f"- [{r.label}: `{r.spec.name}` ({r.dir.name})](#{_anchor(r)})" for r in runs] + [""]
    for run in runs:
        lines += _section(run, out, figures)
    out.write_text("\n".join(lines) + "\n")
    return out


def _anchor(run: _Run) -> str:
    text = f"{run.label} {run.spec.name} {run.dir.name}".lower()
    return "".join(c if c.isalnum() or c in "-_" else "-" if c == " " else "" for c in text)


def _section(run: _Run, out: Path, figures: Path) -> list[str]:
    spec = run.spec
    lines = [f"## {run.label} {spec.name} {run.dir.name}", "",
             f"**Question as posed.** {spec.question}", "",
             f"Run directory: `{run.dir}`; full report: `{run.report_dir / 'report.md'}`.", "",
             "### Design actually run", ""]
    lines += design_lines(run.spec, run.completed, run.trials, run.ctx)
    lines += ["", "### Deviations", ""]
    lines += [f"- {item}" for item in deviation_lines(spec)] or ["- none"]
    lines += ["", "### Verdicts", ""]
    lines += verdict_markdown(run.verdicts)
    figure = _copy_figure(run, figures)
    if figure is not None:
        lines += ["", f"![{spec.name}: 95% confidence intervals]({os.path.relpath(figure, out.parent)})"]
    lines += ["", "### The untrained model", ""]
    lines += zero_shot_lines(run.ctx)
    lines += ["", "### Answer", ""]
    lines += answer_lines(run.verdicts)
    if run.question.findings is not None:
        tables = {p.stem: pd.read_csv(p) for p in sorted(run.report_dir.glob("*.csv"))
                  if p.name not in (VERDICT_FILE, "trials.csv") and p.stat().st_size > 1}
        own = run.question.findings(run.ctx, tables) if tables else []
        if own:
            lines += ["", f"### {spec.report.builder}: the question's own findings", "", *own]
    lines += ["", "### What the cluster profile would change", ""]
    lines += cluster_lines(spec, run.completed)
    return lines + [""]


def _copy_figure(run: _Run, figures: Path) -> Path | None:
    """The cells plot (each cell with its 95% CI and the untrained line), else the claims'
    forest plot; copied under docs/findings/ so the document is self-contained."""
    for name in (CELLS_PLOT, FOREST_PLOT):
        source = run.report_dir / name
        if source.is_file():
            target = figures / f"{run.spec.name}-{run.dir.name}-{name}"
            shutil.copyfile(source, target)
            return target
    return None


def _cell_configs(spec: StudySpec) -> list:
    return [spec.train_config(axes) for axes in (spec.cells() or [{}])]


def design_lines(spec: StudySpec, completed: pd.DataFrame, trials: pd.DataFrame, ctx: ReportContext) -> list[str]:
    cells = spec.cells() or [{}]
    configs = _cell_configs(spec)
    budgets = sorted({(c.max_steps, c.batching.batch_size) for c in configs})
    per_cell = completed.groupby(CELL).size() if CELL in completed else pd.Series(dtype=int)
    runs = [int(per_cell.get(i, 0)) for i in range(len(cells))]
    phases = completed[PHASE].value_counts().to_dict() if PHASE in completed else {}
    lines = [f"- profile: `{spec.profile}` ({spec.profiles[spec.profile].description})" if spec.profile in spec.profiles
             else "- profile: none (the study YAML's own settings)"]
    lines += [f"- cells: {len(cells)}; axes: " + ("; ".join(f"`{path}` = {values}" for path, values in spec.axes.items())
                                                  or "none")]
    lines.append(f"- runs per cell (completed trials: search + seed re-runs): "
                 f"{min(runs)}{'' if min(runs) == max(runs) else f'-{max(runs)}'} "
                 f"(planned {spec.search.samples_per_cell} search + {spec.search.seeds} seed re-run(s)); "
                 f"by phase: {phases}")
    lines.append("- steps x global batch: " + ", ".join(f"{s} x {b}" for s, b in budgets)
                 + f" ({configs[0].batching.mode} batches)")
    lines.append(f"- trained layers: {fine_tuning_text(spec, ctx.trials)}")
    base = spec.base_config
    languages = (", ".join(base.data.languages) if base.data.languages else
                 f"the first {base.data.num_languages}" if base.data.num_languages else "all of the source")
    on_axis = [path for path in spec.axes if path.startswith("data.")]
    lines.append(f"- training data: {base.data.source}, languages: {languages}"
                 + (f" (per cell as the axis {', '.join(on_axis)} sets)" if on_axis else ""))
    for final in spec.evaluation.final:
        lines.append(f"- evaluation: {final.dataset}, languages {', '.join(final.languages) if final.languages else 'all'}")
    lines.append(f"- resources per trial: {spec.resources.num_workers} worker(s), "
                 f"{'1 GPU' if spec.resources.use_gpu else f'{spec.resources.cpus_per_worker:g} CPU'} each")
    lines.append(f"- measured wall time: {wall_time_text(trials)}")
    return lines


def wall_time_text(trials: pd.DataFrame) -> str:
    """From the stored trials: the span from the first trial's start to the last one's end and
    the sum of trial wall times (seconds measured by the run's results callback)."""
    if WALL_TIME not in trials or trials[WALL_TIME].dropna().empty:
        return "not recorded in this run's results"
    wall = pd.to_numeric(trials[WALL_TIME], errors="coerce")
    text = f"{wall.sum() / 60:.1f} min summed over {int(wall.notna().sum())} trials"
    if FINISHED_AT in trials:
        end = pd.to_numeric(trials[FINISHED_AT], errors="coerce")
        start = end - wall
        if end.notna().any() and start.notna().any():
            text += (f"; {(end.max() - start.min()) / 60:.1f} min from the first trial's start to the last "
                     f"trial's end ({pd.Timestamp(end.max(), unit='s'):%Y-%m-%d %H:%M} UTC)")
    return text


def _flatten(tree, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def set_changes(spec: StudySpec) -> list[str] | None:
    """Settings the run changed by ``--set`` beyond its profile: the frozen study against the
    shipped study of the same name with the same profile. None when no shipped study has the
    name (a custom YAML: nothing to compare with)."""
    try:
        resolve_study_file(spec.name)
        shipped = load_study(spec.name, profile=spec.profile)
    except StudyConfigError:
        return None
    ran, ref = _flatten(spec.model_dump(mode="json")), _flatten(shipped.model_dump(mode="json"))
    changed = []
    for key in sorted(set(ran) | set(ref)):
        if key.startswith("profiles.") or ran.get(key) == ref.get(key):
            continue
        changed.append(f"`{key}`: {ref.get(key, '(unset)')!r} -> {ran.get(key, '(unset)')!r}")
    return changed


def deviation_lines(spec: StudySpec) -> list[str]:
    lines = list(spec.deviations)
    if spec.profile in spec.profiles:
        lines.append(f"profile `{spec.profile}` overrides the study's design: " +
                     ", ".join(f"`{s}`" for s in spec.profiles[spec.profile].sets))
    changes = set_changes(spec)
    if changes is None:
        lines.append(f"no shipped study named `{spec.name}`: changes made by --set cannot be listed")
    elif changes:
        lines.append("changed by --set for this run, or in the shipped YAML since the run (the frozen study.yaml "
                     "against the shipped study with the same profile): " + "; ".join(changes))
    untestable = [c for c in spec.claims if c.untestable]
    lines += [f"claim `{c.id}` not testable in this run: {c.untestable}" for c in untestable]
    return lines


def zero_shot_lines(ctx: ReportContext) -> list[str]:
    """The untrained model's final metrics beside the trained cells' range (seed-averaged per
    cell), from ``results/zero_shot.json`` and the completed trials."""
    info = zero_shot_info(ctx)
    if not info:
        return ["Not stored for this run (no results/zero_shot.json): no untrained row."]
    metrics = info.get("metrics", {})
    completed = ctx.completed
    lines = [f"Untrained model: {info.get('model', '?')}.", "",
             "| metric | untrained | trained cells (seed means): min | max |", "|---|---|---|---|"]
    for key, value in sorted(metrics.items()):
        trained = pd.to_numeric(completed[key], errors="coerce") if key in completed else pd.Series(dtype=float)
        means = trained.groupby(completed[CELL]).mean().dropna() if len(trained) and CELL in completed else trained
        low, high = (f"{means.min():.4f}", f"{means.max():.4f}") if len(means) else ("n/a", "n/a")
        lines.append(f"| {key.removeprefix('final/')} | {float(value):.4f} | {low} | {high} |")
    return lines


def _number(value, scale: tuple = (), significant: int = 2) -> str:
    """:func:`study.verdicts.number_text`, "n/a" when missing."""
    return number_text(value, scale=scale, significant=significant) or "n/a"


def answer_lines(verdicts: pd.DataFrame) -> list[str]:
    """One plain sentence per claim, generated from its verdict (never written by hand)."""
    if verdicts.empty:
        return ["No claims in this study: no answer can be generated (add `claims:` to its YAML)."]
    lines = []
    for row in verdicts.to_dict("records"):
        verdict, statement = row["verdict"], row["statement"]
        estimate = f"estimate {_number(row.get('estimate'), scale=(row.get('ci_low'), row.get('ci_high')))}"
        ci = row.get("ci") if isinstance(row.get("ci"), str) and row.get("ci") else None
        has_ci = isinstance(row.get("ci_low"), float) and np.isfinite(row["ci_low"])
        uncertainty = f"{estimate}, 95% CI {ci}" if ci and has_ci else f"{estimate}, {ci or 'no CI'}"
        if verdict == NOT_TESTED:
            lines.append(f"- **{row['claim']}**, not tested: {statement} ({row['reason']}).")
        elif verdict == "inconclusive":
            mdd = row.get("mdd")
            detect = (f"the design could detect differences of at least {_number(mdd, significant=3)}"
                      if isinstance(mdd, float) and np.isfinite(mdd) else "the smallest detectable difference is unknown")
            reason = row.get("reason") if isinstance(row.get("reason"), str) else ""
            why = f"{reason}; {detect}" if reason and "could detect" not in reason else (reason or detect)
            lines.append(f"- **{row['claim']}**, inconclusive at this budget: {statement} ({uncertainty}): {why}.")
        else:
            lines.append(f"- **{row['claim']}**, {verdict}: {statement} ({uncertainty}).")
    return lines


def _trial_budget(spec: StudySpec) -> tuple[int, int]:
    """(trials, training pairs) of a full run of ``spec``: per cell its search trials and seed
    re-runs, each at most max_steps x global batch (ASHA may stop search trials earlier)."""
    runs = spec.search.samples_per_cell + spec.search.seeds
    configs = _cell_configs(spec)
    return len(configs) * runs, sum(runs * c.max_steps * c.batching.batch_size for c in configs)


def measured_gpu_throughput(path: Path = GPU_MEASUREMENT) -> tuple[float, str] | None:
    """(training pairs per second, source) from a stored ``bench/gpu_check.py`` result that is
    not a CPU dry run, or None: no GPU measurement in the repository."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("dry_run"):
        return None
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("pairs_per_s"), (int, float)):
                found.append(float(node["pairs_per_s"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data.get("rows"))
    return (max(found), f"{path.name} on {data.get('device', '?')}") if found else None


def cluster_lines(spec: StudySpec, completed: pd.DataFrame, gpu_measurement: Path = GPU_MEASUREMENT) -> list[str]:
    name = CLUSTER_PROFILE
    try:  # the shipped study as it is now, with its cluster profile (not this run's profile with it on top)
        resolve_study_file(spec.name)
        shipped = load_study(spec.name)
    except StudyConfigError:  # a custom YAML: its frozen design with the profile's overrides
        shipped = None
    if name not in (shipped.profiles if shipped is not None else spec.profiles):
        return [f"The study defines no {name!r} profile; nothing to compare."]
    cluster = (load_study(spec.name, profile=name) if shipped is not None
               else load_study(spec.model_dump(mode="json") | {"profile": None}, profile=name))
    trials, pairs = _trial_budget(cluster)
    here_trials, here_pairs = _trial_budget(spec)
    r = cluster.resources
    lines = [f"Profile `{name}`: {cluster.profiles[name].description}.", "",
             f"- cells: {len(cluster.cells() or [{}])} (this run: {len(spec.cells() or [{}])}); axes: "
             + ("; ".join(f"`{p}` = {v}" for p, v in cluster.axes.items()) or "none"),
             f"- trials: {trials} ({cluster.search.samples_per_cell} search + {cluster.search.seeds} seed re-run(s) "
             f"per cell; this run's design: {here_trials})",
             f"- training pairs, at most: {pairs:,} (this run's design: {here_pairs:,})",
             f"- resources per trial: {r.num_workers} worker(s), "
             + (f"1 GPU each ({r.num_workers} GPUs per trial)" if r.use_gpu else f"{r.cpus_per_worker:g} CPU each"),
             f"- the planner's view (trials, power of each claim): `python study/run.py --study {cluster.name} "
             f"--profile {name} --plan`"]
    gpu = measured_gpu_throughput(gpu_measurement)
    if gpu is not None and r.use_gpu:
        rate, source = gpu
        hours = pairs / rate / 3600 * r.num_workers
        lines.append(f"- **estimate** of GPU-hours (training only, from the measured GPU throughput {rate:,.0f} "
                     f"pairs/s of {source}; evaluation not included): {hours:.1f} GPU-hours")
        return lines
    wall = pd.to_numeric(completed.get(WALL_TIME, pd.Series(dtype=float)), errors="coerce")
    steps = []
    for row in completed.to_dict("records"):
        cell = row.get(CELL)
        if cell is None or pd.isna(cell):
            continue
        config = spec.train_config((spec.cells() or [{}])[int(cell)])
        steps.append(config.max_steps * config.batching.batch_size)
    measured = wall.notna() & (wall > 0)
    if not measured.any() or len(steps) != len(wall):
        lines.append("- **estimate**: none (no GPU throughput measured, bench/README.md section 8, and this run "
                     "recorded no trial wall time to extrapolate from)")
        return lines
    seconds_per_pair = float(wall[measured].sum() / np.asarray(steps, dtype=float)[measured.to_numpy()].sum())
    cpus = spec.resources.num_workers * spec.resources.cpus_per_worker
    hours = pairs * seconds_per_pair / 3600
    lines.append(
        f"- **CPU-based extrapolation, not a GPU measurement** (no GPU throughput is measured in this repository: "
        f"bench/README.md section 8): at this run's measured {seconds_per_pair * 1e3:.1f} ms of trial wall time per "
        f"training pair ({cpus:g} CPU cores per trial, evaluation included), the cluster profile's {pairs:,} pairs "
        f"would take about {hours:.1f} trial-hours on such CPUs ({hours * cpus:.1f} CPU-core-hours). This assumes "
        "the per-pair cost of this run's model and trained layers; the cluster profile's own settings "
        "(full fine-tuning, GPUs, larger batches) change it by a factor that has not been measured.")
    return lines
