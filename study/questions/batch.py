"""Q2: language count x batch size: accuracy against training cost.

Per cell: cross-lingual and multilingual mAP (first final dataset and every other one),
throughput (training pairs/s), wall time and compute cost (worker-seconds) per trial;
within each language count the accuracy/cost Pareto front and the recommended batch size:
the cheapest Pareto point within ``report.accuracy_tolerance`` mAP of the best.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from hybridir.evaluation.vocabulary import CROSS_MAP, DATASET, MULTI_MAP
from study.question import Question, Selector, register
from study.questions.common import (
    ReportContext,
    add_zero_shot,
    pareto_mask,
    save_figure,
    summarize,
    zero_shot_info,
    zero_shot_metric,
)
from study.vocabulary import (
    CELL,
    FINAL_PREFIX,
    PAIRS_PER_SECOND,
    WALL_TIME,
    WORKER_SECONDS,
    ZERO_SHOT,
    axis_column,
    final_key,
)

LANGS, BATCH = "data.num_languages", "batching.batch_size"


def recommend(ctx: ReportContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-cell table with its ``pareto`` flag, one recommendation row per language count
    with the ``cell`` it picks); both empty before any trial completed."""
    datasets = ctx.final_datasets()
    primary = datasets[0]
    metrics = [final_key(d, m) for d in datasets for m in (CROSS_MAP, MULTI_MAP)]
    metrics += [PAIRS_PER_SECOND, WALL_TIME, WORKER_SECONDS]
    table = summarize(ctx, metrics)
    if table.empty:
        return table, pd.DataFrame()
    table = table.rename(columns={axis_column(LANGS): "num_languages", axis_column(BATCH): "batch_size"})
    accuracy, cost = final_key(primary, CROSS_MAP), WORKER_SECONDS
    table["pareto"] = False
    recommendations = []
    by = "num_languages" if "num_languages" in table else None
    for key, group in table.groupby(by) if by else [(None, table)]:
        mask = pareto_mask(group[accuracy], group[cost])
        table.loc[group.index, "pareto"] = mask
        front = group[mask]
        best = front[accuracy].max()
        good = front[front[accuracy] >= best - ctx.spec.report.accuracy_tolerance]
        pick = good.sort_values(cost).iloc[0]
        recommendations.append({
            "num_languages": key, CELL: int(pick[CELL]), "recommended_batch_size": pick.get("batch_size"),
            CROSS_MAP: pick[accuracy], WORKER_SECONDS: pick[cost], "best_cross_map": best,
            "pareto_batch_sizes": " ".join(str(int(b)) for b in front.sort_values("batch_size")["batch_size"])
            if "batch_size" in front else "",
            DATASET: primary, "tolerance": ctx.spec.report.accuracy_tolerance,
        })
    return table, pd.DataFrame(recommendations)


def build(ctx: ReportContext) -> dict[str, pd.DataFrame]:
    table, recommendations = recommend(ctx)
    if table.empty:
        return {"batch": table, "batch_recommendation": recommendations}
    primary = ctx.final_datasets()[0]
    accuracy, cost = final_key(primary, CROSS_MAP), WORKER_SECONDS
    by = "num_languages" if "num_languages" in table else None

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, group in table.groupby(by) if by else [(None, table)]:
        group = group.sort_values(cost)
        points = ax.scatter(group[cost], group[accuracy], label=f"{key} languages" if key is not None else None)
        front = group[group["pareto"]]
        ax.plot(front[cost], front[accuracy], color=points.get_facecolor()[0], linewidth=1)
        for _, row in group.iterrows():
            ax.annotate(f"b={int(row['batch_size'])}" if "batch_size" in row else "", (row[cost], row[accuracy]), fontsize=6)
    ax.set_xlabel("compute cost per trial (worker-seconds)")
    ax.set_ylabel(f"cross-lingual mAP ({primary})")
    ax.set_title(f"{ctx.spec.name}: accuracy / cost Pareto fronts", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, ctx.out_dir / "batch_pareto.png")
    table = table.rename(columns=lambda c: c.replace(FINAL_PREFIX, "").replace("/", "_"))
    info = zero_shot_info(ctx)
    if info:
        accuracy_columns = {f"{d}_{m}": zero_shot_metric(info, d, m)
                            for d in ctx.final_datasets() for m in (CROSS_MAP, MULTI_MAP)}
        table = add_zero_shot(table, [{CELL: ZERO_SHOT, **accuracy_columns}], list(accuracy_columns), [])
    return {"batch": table, "batch_recommendation": recommendations}


def recommended_cells(ctx: ReportContext) -> set[int]:
    """The cells of the recommended batch sizes (one per language count)."""
    return set(recommend(ctx)[1].get(CELL, pd.Series(dtype=int)).astype(int))


def findings(ctx: ReportContext, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Whether batch size is confounded with the data seen (from the frozen study): with a fixed
    step count, a larger batch also trains on more pairs."""
    from study.questions.common import pairs_per_trial

    seen = pairs_per_trial(ctx.spec, BATCH)
    if len(seen) < 2:
        return []
    totals = {p for pairs in seen.values() for p in pairs}
    if len(totals) == 1:
        return [f"- Training pairs seen held constant across batch sizes (steps x batch = {totals.pop():,}): "
                "batch size is not confounded with the amount of data."]
    return ["- Training pairs seen differ across batch sizes ("
            + "; ".join(f"batch {b}: {', '.join(f'{p:,}' for p in seen[b])}" for b in sorted(seen))
            + "): a larger batch also sees more data, so batch size is confounded with the amount of data."]


register(Question(
    name="batch", summary="Q2: language count x batch size, accuracy against training cost (Pareto fronts)",
    build=build, findings=findings,
    selectors={"recommended": Selector(axis=BATCH, description="batch size", cells=recommended_cells)},
))
