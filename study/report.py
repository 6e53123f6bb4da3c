"""Rebuild a study's reports (CSV + PNG) from its stored results, at any time.

    python study/report.py runs/default-20250101-120000

Works mid-study (reports cover the trials finished so far). Writes
``<DIR>/reports/<study>/``: one CSV per table answering the study's question, PNG plots,
``trials.csv`` (every trial) and ``report.md`` (question, deviations from the seed setup,
the tables).

No Ray: the reports read ``results/`` through :class:`study.results.ResultStore` only, so they
build on any machine with the study's results, Ray installed or not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from study.question import get_question
from study.questions.common import ReportContext, plot_learning_curves, zero_shot_info
from study.results import ResultStore
from study.spec import StudyConfigError, load_study
from study.storage import local_directory
from study.verdicts import verdict_markdown, write_verdicts
from study.vocabulary import MODEL_DISPLAY_NAME, MODEL_TRAINING, SPEC_FILE


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
    plot_learning_curves(ctx, out_dir / "learning_curves.png")
    question = get_question(spec.report.builder)
    tables = question.build(ctx) if not ctx.completed.empty else {}
    for name, table in tables.items():
        table.to_csv(out_dir / f"{name}.csv", index=False)
    verdicts = write_verdicts(ctx, out_dir)
    findings = question.findings(ctx, tables) if question.findings is not None and tables else []
    (out_dir / "report.md").write_text(_markdown(spec, ctx, tables, verdicts, findings))
    return out_dir


def _markdown(spec, ctx: ReportContext, tables: dict[str, pd.DataFrame], verdicts: pd.DataFrame,
              findings: list[str] = ()) -> str:
    counts = ctx.trials["status"].value_counts().to_dict() if not ctx.trials.empty else {}
    lines = [f"# Study `{spec.name}`", "", f"**Question.** {spec.question}", "", "## Verdicts", ""]
    lines += verdict_markdown(verdicts)
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
    recorded = sorted(set(ctx.trials.get(MODEL_TRAINING, pd.Series(dtype=str)).dropna()))
    if recorded:
        return "; ".join(recorded)
    values = {spec.base_config.model.train_layers, *spec.axes.get("model.train_layers", [])}
    values.discard(None)
    if not values and "model.train_layers" not in spec.tune:
        return "all layers fine-tuned (full fine-tuning)"
    tops = ", ".join(map(str, sorted(values))) or "tuned"
    return f"top {tops} layers fine-tuned, embeddings and lower layers frozen (partial fine-tuning, activation cache)"


def _table(table: pd.DataFrame) -> str:
    """A GitHub-markdown table (pandas' to_markdown needs the optional tabulate package)."""
    def cell(value) -> str:
        if isinstance(value, float) and value != value:
            return "n/a"  # never "nan": a CI needs >= 2 seeds, a missing metric was not measured
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python study/report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", help="a study directory written by study/run.py (a local path)")
    args = parser.parse_args(argv)
    try:
        out_dir = build_reports(args.study_dir)
    except StudyConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
