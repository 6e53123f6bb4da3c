"""Q4: how does model size interact with hybrid batch training?

Per model (a rung of the size ladder: the values of the ``model.name`` or ``model.num_layers``
axis, in the study's order) x batching mode x final dataset: mono, cross, multi mAP and rank
distance with CIs over seeds, and per model and dataset the winning mode. The question's effect
is the interaction: per rung, hybrid's gain over X-X only (cross-lingual mAP) and over X-Y only
(monolingual mAP), with a Welch 95% interval over the two cells' seeds (table ``scale_gain``,
plotted against the rung); the claims test whether the gain changes between rungs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from hybridir.evaluation.vocabulary import CROSS_MAP, DATASET, MONO_MAP, MULTI_MAP, RANK_DISTANCE
from study.question import Question, register
from study.questions.common import (
    ReportContext,
    add_zero_shot,
    plot_curves,
    representative_trials,
    summarize,
    zero_shot_info,
    zero_shot_metric,
)
from study.vocabulary import CELL, RUN, ZERO_SHOT, axis_column, final_key, final_prefix

METRICS = (MONO_MAP, CROSS_MAP, MULTI_MAP, RANK_DISTANCE)
MODEL_AXES = ("model.name", "model.num_layers")
MODE_AXIS = "batching.mode"
# (the mode hybrid is compared with, the metric where that mode is weakest)
GAINS = (("xx", CROSS_MAP), ("xy", MONO_MAP))


def _model_label(ctx: ReportContext, cell: int) -> tuple[str, int]:
    """A readable model label and its rung on the ladder (1 = the first value of the model axis)."""
    axes = ctx.spec.cells()[cell]
    config = ctx.spec.train_config(axes)
    name, layers = config.model.name, config.model.num_layers
    label = name + (f" ({layers} layers)" if layers else "")
    for axis in MODEL_AXES:
        if axis in axes:
            return label, ctx.spec.axes[axis].index(axes[axis]) + 1
    return label, 1


def _welch(a, b) -> tuple[float, float, float]:
    """mean(a) - mean(b) with a Welch 95% t-interval (NaN bounds with fewer than 2 values a side)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return np.nan, np.nan, np.nan
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, np.nan, np.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, df) * se)
    return diff, diff - half, diff + half


def gain_table(ctx: ReportContext) -> pd.DataFrame:
    """Per dataset and model: hybrid minus X-X (cross mAP) and hybrid minus X-Y (mono mAP)."""
    if MODE_AXIS not in ctx.spec.axes:
        return pd.DataFrame()
    runs = representative_trials(ctx)
    cells = ctx.spec.cells()
    by_model: dict[tuple, dict[str, int]] = {}
    for cell, axes in enumerate(cells):
        model = tuple((axis, axes[axis]) for axis in MODEL_AXES if axis in axes)
        by_model.setdefault(model, {})[axes[MODE_AXIS]] = cell
    rows = []
    for dataset in ctx.final_datasets():
        for modes in by_model.values():
            if "hybrid" not in modes:
                continue
            label, rung = _model_label(ctx, modes["hybrid"])
            row = {DATASET: dataset, "model": label, "rung": rung}
            for other, metric in GAINS:
                key = final_key(dataset, metric)
                if other not in modes or modes["hybrid"] not in runs or modes[other] not in runs:
                    continue
                hybrid, rest = runs[modes["hybrid"]], runs[modes[other]]
                if key not in hybrid or key not in rest:
                    continue
                diff, low, high = _welch(hybrid[key], rest[key])
                name = f"hybrid_minus_{other}_{metric}"
                row.update({name: diff, f"{name}_ci_low": low, f"{name}_ci_high": high})
            rows.append(row)
    return pd.DataFrame(rows).sort_values([DATASET, "rung"]).reset_index(drop=True) if rows else pd.DataFrame()


def build(ctx: ReportContext) -> dict[str, pd.DataFrame]:
    frames = []
    for dataset in ctx.final_datasets():
        table = summarize(ctx, [final_key(dataset, m) for m in METRICS])
        if table.empty:
            continue
        table = table.rename(columns=lambda c: c.replace(f"{final_prefix(dataset)}/", ""))
        table.insert(1, DATASET, dataset)
        labels = [_model_label(ctx, int(c)) for c in table[CELL]]
        table.insert(2, "model", [label for label, _ in labels])
        table.insert(3, "rung", [rung for _, rung in labels])
        mode = ctx.spec.train_config(ctx.spec.cells()[0]).batching.mode if ctx.spec.cells() else None
        table.insert(4, "batching", table.get(axis_column(MODE_AXIS), mode))
        frames.append(table)
    if not frames:
        return {"scale": pd.DataFrame(), "scale_best_mode": pd.DataFrame(), "scale_gain": pd.DataFrame()}
    table = pd.concat(frames, ignore_index=True).sort_values([DATASET, "rung", "batching"])
    best = (table.loc[table.groupby([DATASET, "model"])[CROSS_MAP].idxmax(), [DATASET, "model", "rung", "batching", CROSS_MAP]]
            .rename(columns={"batching": "best_batching_for_cross_map"}))
    xlabel = "model size rung (" + ", ".join(
        f"{axis}: {' < '.join(map(str, ctx.spec.axes[axis]))}" for axis in MODEL_AXES if axis in ctx.spec.axes) + ")"
    for dataset, group in table.groupby(DATASET):
        for metric in (CROSS_MAP, MONO_MAP, MULTI_MAP):
            plot_curves(group, "rung", metric, "batching", ctx.out_dir / f"scale_{metric}_{dataset}.png",
                        f"{ctx.spec.name}: {metric} vs model size by batching ({dataset})", xlabel=xlabel)
    gains = gain_table(ctx)
    for dataset, group in (gains.groupby(DATASET) if len(gains) else []):
        for other, metric in GAINS:
            column = f"hybrid_minus_{other}_{metric}"
            if column in group:
                plot_curves(group, "rung", column, None, ctx.out_dir / f"scale_gain_{other}_{dataset}.png",
                            f"{ctx.spec.name}: hybrid minus {other.upper()} {metric} vs model size ({dataset}; "
                            "Welch 95% CI over seeds)", xlabel=xlabel)
    info = zero_shot_info(ctx)
    if info:
        zero_rows = [{CELL: ZERO_SHOT, DATASET: d, "model": info.get("model", ""),
                      **{m: zero_shot_metric(info, d, m) for m in METRICS}} for d in table[DATASET].unique()]
        table = add_zero_shot(table, zero_rows, list(METRICS), [DATASET])
    return {"scale": table.reset_index(drop=True), "scale_best_mode": best.reset_index(drop=True), "scale_gain": gains}


def findings(ctx: ReportContext, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Each rung's level (averaged over the batchings) beside the untrained model's, and what the
    untrained row is: the study's zero-shot run evaluates its base model only."""
    table = tables.get("scale")
    if table is None or table.empty:
        return []
    trained = table[table[RUN] != ZERO_SHOT] if RUN in table else table
    zero = table[table[RUN] == ZERO_SHOT].set_index(DATASET) if RUN in table else pd.DataFrame()
    info = zero_shot_info(ctx) or {}
    lines = []
    for dataset, group in trained.groupby(DATASET, sort=True):
        for metric, name in ((CROSS_MAP, "cross-lingual"), (MONO_MAP, "monolingual")):
            levels = group.groupby(["rung", "model"], sort=True)[metric].mean()
            text = ", ".join(f"{model} {value:.4f}" for (_, model), value in levels.items())
            untrained = (f"; untrained {info.get('model', 'base model')} {zero.loc[dataset, metric]:.4f}"
                         if dataset in zero.index and pd.notna(zero.loc[dataset, metric]) else "")
            lines.append(f"- {dataset} {name} mAP, mean over the batchings: {text}{untrained}.")
    if "model.num_layers" in ctx.spec.axes:
        lines.append(
            "- The untrained row is the study's base model at its full depth; the cut rungs are not evaluated "
            "untrained. A cut keeps the bottom layers of the deeper model, which were trained to feed the layers "
            "removed: a cut rung's level measures what the cut costs and how far a short fine-tuning recovers it, "
            "not how a model trained at that size would do (the cluster profile's hub ladder does that).")
    return lines


register(Question(
    name="scale", summary="Q4: how does model size interact with hybrid batching (X-X, X-Y, hybrid)?", build=build,
    findings=findings,
))
