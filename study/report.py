"""Rebuild a study's reports (CSV + PNG) from its stored results, at any time.

    python study/report.py runs/default-20250101-120000
    python study/report.py --findings RUN_DIR [RUN_DIR ...] [--out docs/findings.md]

Works mid-study (reports cover the trials finished so far). Writes
``<DIR>/reports/<study>/``: one CSV per table answering the study's question, PNG plots,
``trials.csv`` (every trial) and ``report.md`` (question, deviations from the seed setup,
the tables). ``--findings`` rebuilds the reports of several runs and writes the project's
findings document from them (:mod:`study.findings`).

No Ray: the reports read ``results/`` through :class:`study.results.ResultStore` only, so they
build on any machine with the study's results, Ray installed or not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from hybridir.evaluation.claim_statistics import run_values, statistic_matrices
from hybridir.evaluation.significance import LOWER_IS_BETTER, contrast_inference, display_digits
from hybridir.evaluation.vocabulary import AP, DATASET, RANK_DISTANCE, SETTING
from study.question import get_question
from study.questions.common import (
    CELLS_PLOT,
    FOREST_PLOT,
    ReportContext,
    fine_tuning_text,
    plt,
    save_figure,
    zero_shot_info,
)
from study.results import ResultStore
from study.spec import StudyConfigError, load_study
from study.storage import local_directory
from study.verdicts import (
    NOT_TESTED,
    ClaimNotTestable,
    _Runs,
    claim_statistic,
    verdict_markdown,
    write_verdicts,
)
from study.vocabulary import (
    CELL,
    CLAIM,
    MEASURE,
    MODEL_DISPLAY_NAME,
    SPEC_FILE,
    STATUS,
    STEP,
    TRIAL_ID,
    ZERO_SHOT,
    intermediate_metric,
)


def build_reports(study_dir: Path) -> Path:
    """Write every table and plot of the study in ``study_dir``; returns the report folder."""
    study_dir = local_directory(study_dir, "study directory")  # a cloud URI: named, never read as ./s3:/
    if not (study_dir / SPEC_FILE).is_file():
        raise StudyConfigError(f"{study_dir}: no {SPEC_FILE} (not a study directory)")
    spec = load_study(study_dir / SPEC_FILE)
    store = ResultStore(study_dir)
    out_dir = study_dir / "reports" / spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(spec, store, store.trials(), store.history(), out_dir)
    if not ctx.trials.empty:
        ctx.trials.to_csv(out_dir / "trials.csv", index=False)
    stale = [out_dir / name for name in ("learning_curves.png", FOREST_PLOT, CELLS_PLOT)]
    for path in stale:  # a rebuild must not leave a plot the current results no longer give
        path.unlink(missing_ok=True)
    plot_learning_curves(ctx, out_dir / "learning_curves.png")
    question = get_question(spec.report.builder)
    tables = question.build(ctx) if not ctx.completed.empty else {}
    for name, table in tables.items():
        table.to_csv(out_dir / f"{name}.csv", index=False)
    verdicts = write_verdicts(ctx, out_dir)
    figures = [path for path in (plot_forest(verdicts, out_dir / FOREST_PLOT),
                                 plot_cells(ctx, out_dir / CELLS_PLOT)) if path is not None]
    findings = question.findings(ctx, tables) if question.findings is not None and tables else []
    (out_dir / "report.md").write_text(_markdown(spec, ctx, tables, verdicts, figures, findings))
    return out_dir


def _axis_label(ctx: ReportContext, cell) -> str:
    """A cell by its axis values (``alpha=0.5``): the last part of each axis path."""
    cells = ctx.spec.cells() or [{}]
    if pd.isna(cell) or int(cell) >= len(cells):
        return "?"
    axes = cells[int(cell)]
    return ", ".join(f"{path.rsplit('.', 1)[-1]}={value}" for path, value in axes.items()) or "the single cell"


def plot_learning_curves(ctx: ReportContext, path: Path) -> Path | None:
    """The search objective over study steps per trial, labelled by the cell's axis values.

    Only when some trial has >= 2 intermediate evaluations: one point per trial is not a curve
    (the final evaluation's numbers are in the tables and the cell plot)."""
    metric = intermediate_metric(ctx.spec)
    if ctx.history.empty or metric not in ctx.history:
        return None
    history = ctx.history.dropna(subset=[metric])
    if history.empty or history.groupby(TRIAL_ID)[STEP].nunique().max() < 2:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    seen: dict[str, int] = {}
    for trial_id, group in history.groupby(TRIAL_ID):
        group = group.sort_values(STEP)
        label = _axis_label(ctx, group[CELL].iloc[0])
        seen[label] = seen.get(label, 0) + 1
        ax.plot(group[STEP], group[metric], marker=".", alpha=0.7,
                label=label if seen[label] == 1 else None, color=f"C{list(seen).index(label) % 10}")
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, title="cell (one line per trial)", title_fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def _measure_text(row) -> str:
    measure = "mAP" if row[MEASURE] == AP else row[MEASURE]
    return f"{row[DATASET]} {row[SETTING]} {measure}" if row[MEASURE] != RANK_DISTANCE else \
        f"{row[DATASET]} rank distance"


def plot_forest(verdicts: pd.DataFrame, path: Path) -> Path | None:
    """Each tested claim's contrast with its 95% CI, the zero line and the smallest detectable
    difference (|d| < MDD shaded: the design cannot tell such a difference from 0); one panel
    per measure (their scales differ); an equivalence claim's margin dashed."""
    if verdicts.empty or "ci_low" not in verdicts:
        return None
    rows = verdicts[(verdicts["verdict"] != NOT_TESTED) & verdicts["estimate"].notna()]
    if rows.empty:
        return None
    rows = rows.assign(panel=[_measure_text(r) for r in rows.to_dict("records")])
    panels = list(dict.fromkeys(rows["panel"]))
    heights = [max(1.2, 0.45 * (rows["panel"] == p).sum() + 0.8) for p in panels]
    heights[-1] += 0.5  # room for the legend
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    colours = {"supported": "tab:green", "contradicted": "tab:red", "inconclusive": "tab:gray"}
    for ax, panel in zip(axes[:, 0], panels):
        part = rows[rows["panel"] == panel].reset_index(drop=True)
        y = np.arange(len(part))[::-1]
        for yi, row in zip(y, part.to_dict("records")):
            mdd = row.get("mdd")
            if isinstance(mdd, float) and np.isfinite(mdd):
                ax.fill_between([-mdd, mdd], yi - 0.35, yi + 0.35, color="tab:orange", alpha=0.18, lw=0)
            if row["direction"] == "equivalent" and np.isfinite(row["margin"]):
                ax.vlines([-row["margin"], row["margin"]], yi - 0.4, yi + 0.4, colors="tab:blue", linestyles="--", lw=1)
            colour = colours.get(row["verdict"], "black")
            if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
                ax.hlines(yi, row["ci_low"], row["ci_high"], color=colour, lw=2)
            else:
                ax.annotate("no CI (1 seed)", (row["estimate"], yi), xytext=(6, -3), textcoords="offset points",
                            fontsize=7, color=colour)
            ax.plot(row["estimate"], yi, "o", color=colour)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, [f"{r[CLAIM]} ({r['verdict']})" for r in part.to_dict("records")], fontsize=8)
        ax.set_ylim(-0.7, len(part) - 0.3)
        ax.set_title(f"{panel}: contrast and 95% CI (seeds and questions)", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color="tab:orange", alpha=0.3, label="|d| < smallest detectable (80% power)")]
    handles += [Line2D([], [], color=c, marker="o", lw=2, label=v) for v, c in colours.items()
                if v in set(rows["verdict"])]
    if (rows["direction"] == "equivalent").any():
        handles.append(Line2D([], [], color="tab:blue", ls="--", label="equivalence margin"))
    axes[-1, 0].legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25),
                       ncol=min(len(handles), 4), frameon=False)
    return save_figure(fig, path)


def plot_cells(ctx: ReportContext, path: Path) -> Path | None:
    """Per statistic the claims test: each cell's seed-averaged value with a 95% CI over seeds
    and questions (the same variance components as the verdicts, one cell at a time: the
    question spread is not paired away here), and the untrained model as a reference line."""
    claims = [c for c in ctx.spec.claims if not c.untestable]

    def key_of(c):  # claims that test the same per-run statistic share a panel
        return (tuple(c.datasets), c.setting_text, c.measure, tuple(c.involving or ()), tuple(c.worst_language or ()))

    statistics = list(dict.fromkeys(key_of(c) for c in claims))
    if not statistics or ctx.completed.empty:
        return None
    runs = _Runs(ctx)
    cells = list(range(len(ctx.spec.cells() or [{}])))
    try:
        zero = ctx.store.per_query(ZERO_SHOT)
    except (FileNotFoundError, OSError, AttributeError):
        zero = None
    panels = []
    for key in statistics:
        claim = next(c for c in claims if key_of(c) == key)
        statistic = claim_statistic(claim)
        points = []
        for cell in cells:
            try:
                built = statistic_matrices({CELL: runs.run_frames(cell, claim)}, statistic)
            except (ClaimNotTestable, ValueError):
                continue
            inference = contrast_inference(built.matrices, {CELL: 1.0}, n_draws=5000, rng=cell,
                                           item_blocks=built.item_blocks)
            points.append((cell, float(built.matrices[CELL].sum(axis=1).mean()), inference.ci_low,
                           inference.ci_high, built.matrices[CELL].shape[0]))
        if not points:
            continue
        reference = None
        if zero is not None:
            try:
                reference = next(iter(run_values({"zero-shot": zero}, statistic).values()))
            except ValueError:
                reference = None
        panels.append((claim, points, reference))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 0.5, 3.6), squeeze=False)
    for ax, (claim, points, reference) in zip(axes[0], panels):
        x = np.arange(len(points))
        values = np.array([p[1] for p in points])
        low = np.array([p[2] for p in points])
        high = np.array([p[3] for p in points])
        has_ci = np.isfinite(low) & np.isfinite(high)
        ax.errorbar(x[has_ci], values[has_ci], yerr=[values[has_ci] - low[has_ci], high[has_ci] - values[has_ci]],
                    fmt="o", capsize=4, color="tab:blue", label="trained (95% CI)")
        if (~has_ci).any():
            ax.plot(x[~has_ci], values[~has_ci], "o", mfc="none", color="tab:blue", label="1 seed: no CI")
        if reference is not None and np.isfinite(reference):
            ax.axhline(reference, color="tab:gray", ls="--", lw=1, label="untrained (zero-shot)")
        ax.set_xticks(x, [f"{_axis_label(ctx, p[0])}\n{p[4]} seed{'s' if p[4] > 1 else ''}" for p in points],
                      fontsize=7)
        name = "rank distance" if claim.measure == RANK_DISTANCE else \
            f"{claim.setting_text} {'mAP' if claim.measure == AP else claim.measure}"
        better = "lower is better" if claim.measure in LOWER_IS_BETTER else "higher is better"
        suffix = f" ({' '.join(claim.involving)})" if claim.involving else ""
        suffix += f" (worst of {' '.join(claim.worst_language)})" if claim.worst_language else ""
        ax.set_title(f"{claim.dataset_text} {name}{suffix}\n({better})", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=6, loc="best")
        ax.set_xlim(-0.6, len(points) - 0.4)
    return save_figure(fig, path)


def _markdown(spec, ctx: ReportContext, tables: dict[str, pd.DataFrame], verdicts: pd.DataFrame,
              figures: list[Path] = (), findings: list[str] = ()) -> str:
    counts = ctx.trials[STATUS].value_counts().to_dict() if not ctx.trials.empty else {}
    lines = [f"# Study `{spec.name}`", "", f"**Question.** {spec.question}", "", "## Verdicts", ""]
    lines += verdict_markdown(verdicts)
    captions = {FOREST_PLOT: "each claim's contrast with its 95% CI; shaded: differences smaller than the design "
                             "can detect (80% power)",
                CELLS_PLOT: "each cell's value with a 95% CI over seeds and questions; dashed: the untrained model"}
    for figure in figures:
        lines += ["", f"![{captions.get(figure.name, figure.stem)}]({figure.name})"]
    if findings:  # the question's own section (study.question.Question.findings)
        lines += ["", "## Findings", "", *findings]
    zero_shot = zero_shot_info(ctx)
    lines += ["", f"Zero-shot baseline: {zero_shot.get('model', 'the untrained model')} (rows `run = zero-shot`; "
              "`*_delta_vs_zero_shot` = change against it)." if zero_shot else
              "Zero-shot baseline: not stored for this run (no results/zero_shot.json)."]
    lines += ["", "## Deviations from the seed setup", ""]
    lines += [f"- {item}" for item in spec.deviations] or ["- none"]
    lines += ["", "## Settings of this run (generated; `--set` overrides included)", ""]
    lines += _settings(spec, ctx)
    lines += ["", f"Trials: {counts or 'none finished yet'}", ""]
    for name, table in tables.items():
        lines += [f"## {name}.csv", ""]
        lines += [_table(table) if len(table) else "(no rows yet)", ""]
    lines += ["n/a: not available (a 95% CI needs >= 2 seed re-runs of the cell; see the verdicts for the "
              "uncertainty over queries and seeds).", ""]
    return "\n".join(lines)


def _settings(spec, ctx: ReportContext) -> list[str]:
    """What actually ran, from the frozen study: the YAML's deviation notes may describe the
    shipped settings while a run overrode them."""
    base = spec.base_config
    models = sorted(set(ctx.trials.get(MODEL_DISPLAY_NAME, pd.Series(dtype=str)).dropna()))
    lines = [f"- profile: `{spec.profile}` ({spec.profiles[spec.profile].description})"] if spec.profile in spec.profiles else []
    lines += [
        f"- model: {', '.join(models) or base.model.name}"
        + ("" if models else f" (num_layers={base.model.num_layers})"),
        f"- fine-tuning: {_fine_tuning(spec, ctx)}",
        f"- training: source {base.data.source}, languages "
        f"{base.data.languages or f'first {base.data.num_languages}'}, max {base.data.max_pairs_per_language} pairs "
        f"per language; {base.max_steps} steps of global batch {base.batching.batch_size} ({base.batching.mode})",
        f"- axes: {spec.axes or 'none'}; tuned: {sorted(spec.tune) or 'nothing'}; "
        f"{spec.search.samples_per_cell} Optuna trial(s) per cell, {spec.search.seeds} seed re-run(s)",
        f"- intermediate evaluation: {spec.evaluation.intermediate.model_dump()}",
    ]
    lines += [f"- final evaluation: {final.model_dump()}" for final in spec.evaluation.final]
    lines.append(f"- resources per trial: {spec.resources.num_workers} DDP workers, "
                 f"{'GPU' if spec.resources.use_gpu else f'{spec.resources.cpus_per_worker:g} CPU'} each")
    return lines


def _fine_tuning(spec, ctx: ReportContext) -> str:
    """Which layers trained (a deviation from the paper's full fine-tuning when partial)."""
    return fine_tuning_text(spec, ctx.trials)


def _table(table: pd.DataFrame) -> str:
    """A GitHub-markdown table (pandas' to_markdown needs the optional tabulate package)."""
    # 4 decimals, more in a column whose values are all below 0.001 (a slope per added language)
    digits = [display_digits(*(v for v in table[column] if isinstance(v, float)))
              for column in table.columns]

    def cell(value, places: int) -> str:
        if isinstance(value, float) and value != value:
            return "n/a"  # never "nan": a CI needs >= 2 seeds, a missing metric was not measured
        return f"{value:.{places}f}" if isinstance(value, float) else str(value)

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(cell(v, places) for v, places in zip(row, digits)) + " |"
            for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python study/report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", nargs="?", help="a study directory written by study/run.py (a local path)")
    parser.add_argument("--findings", nargs="+", metavar="RUN_DIR",
                        help="write the findings document (one section per run directory, ordered by question)")
    parser.add_argument("--out", default=None, help="the findings document (default docs/findings.md); with --findings")
    args = parser.parse_args(argv)
    if (args.study_dir is None) == (args.findings is None):
        parser.error("give either a study directory or --findings RUN_DIR ...")
    if args.out is not None and args.findings is None:
        parser.error("--out goes with --findings")
    try:
        if args.findings is not None:
            from study.findings import DEFAULT_OUT, build_findings

            out_dir = build_findings(args.findings, args.out or DEFAULT_OUT, build_reports)
        else:
            out_dir = build_reports(args.study_dir)
    except StudyConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
