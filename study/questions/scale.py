"""Q4: does the best batching (X-X, X-Y, hybrid) depend on model scale?

Per model (preset / depth) x batching mode x final dataset: mono, cross, multi mAP and
rank distance with CIs over seeds, and per model and dataset the winning mode.
"""

from __future__ import annotations

import pandas as pd

from hybridir.evaluation.vocabulary import CROSS_MAP, DATASET, MONO_MAP, MULTI_MAP, RANK_DISTANCE
from study.question import Question, register
from study.questions.common import (
    ReportContext,
    add_zero_shot,
    plot_curves,
    summarize,
    zero_shot_info,
    zero_shot_metric,
)
from study.vocabulary import CELL, ZERO_SHOT, axis_column, final_key, final_prefix

METRICS = (MONO_MAP, CROSS_MAP, MULTI_MAP, RANK_DISTANCE)
MODEL_AXES = ("model.name", "model.num_layers")


def _model_label(ctx: ReportContext, cell: int) -> tuple[str, int]:
    """A readable model label and its depth (for ordering the ladder)."""
    config = ctx.spec.train_config(ctx.spec.cells()[cell])
    name = config.model.name
    layers = config.model.num_layers
    if layers is None and "-l" in name:
        tail = name.rsplit("-l", 1)[-1]
        layers = int(tail) if tail.isdigit() else None
    return (f"{name}" + (f" ({layers} layers)" if config.model.num_layers else "")), layers or 12


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
        table.insert(3, "layers", [layers for _, layers in labels])
        mode = ctx.spec.train_config(ctx.spec.cells()[0]).batching.mode if ctx.spec.cells() else None
        table.insert(4, "batching", table.get(axis_column("batching.mode"), mode))
        frames.append(table)
    if not frames:
        return {"scale": pd.DataFrame(), "scale_best_mode": pd.DataFrame()}
    table = pd.concat(frames, ignore_index=True).sort_values([DATASET, "layers", "batching"])
    best = (table.loc[table.groupby([DATASET, "model"])[CROSS_MAP].idxmax(), [DATASET, "model", "layers", "batching", CROSS_MAP]]
            .rename(columns={"batching": "best_batching_for_cross_map"}))
    for dataset, group in table.groupby(DATASET):
        for metric in (CROSS_MAP, MULTI_MAP):
            plot_curves(group, "layers", metric, "batching", ctx.out_dir / f"scale_{metric}_{dataset}.png",
                        f"{ctx.spec.name}: {metric} vs model depth by batching ({dataset})",
                        xlabel="transformer layers (depth-truncated mE5-small ladder)")
    info = zero_shot_info(ctx)
    if info:
        zero_rows = [{CELL: ZERO_SHOT, DATASET: d, "model": info.get("model", ""),
                      **{m: zero_shot_metric(info, d, m) for m in METRICS}} for d in table[DATASET].unique()]
        table = add_zero_shot(table, zero_rows, list(METRICS), [DATASET])
    return {"scale": table.reset_index(drop=True), "scale_best_mode": best.reset_index(drop=True)}


register(Question(
    name="scale", summary="Q4: does the best batching (X-X, X-Y, hybrid) depend on model scale?", build=build,
))
