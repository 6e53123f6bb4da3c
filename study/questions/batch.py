"""Q2: language count x batch size: the cross-lingual / multilingual trade-off, and accuracy per
unit of compute at an equal number of training pairs seen.

Tables (one CSV each under reports/batch/):

* ``batch_frontier``: per cell (language count x batch size) its steps and pairs seen, the
  final metrics with 95% t-intervals over the cell's runs (seeds): cross-lingual and multilingual
  mAP, their difference (multilingual minus cross-lingual, per run: the trade-off), rank
  distance; the compute cost the training loop recorded (:mod:`hybridir.flops`: model FLOPs of
  the trained layers, of every layer run, CPU-seconds of the steps) and throughput; whether the
  cell is on its language count's accuracy / cost front, and whether it is the recommended one;
  the untrained model's row first.
* ``batch_recommendation``: per language count, the recommended batch size: the cheapest (in
  :data:`COST`, the trained layers' FLOPs: the frozen layers' cost depends on which trial filled
  the shared activation cache first, not on the configuration) whose cross-lingual mAP is within
  ``report.accuracy_tolerance`` of the best (point estimates; the claims give the uncertainty),
  beside the best batch size and the front.
* ``batch_tradeoff``: per language count, the cells' trade-off averaged over batch sizes.
* ``batch_exposure``: per cell, the training pairs seen and the share of them involving each
  evaluation language (from the recorded ``train/exposure/*``): proof that pairs seen are equal
  across batch sizes and of how the language count dilutes the evaluation languages' share.

Runs recorded before the loop measured FLOPs have no :data:`COST`: the recommendation then
falls back to worker-seconds (wall time x workers) and says so in its ``cost_measure`` column.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hybridir.batching import EXPOSURE_FIELDS, exposure_key
from hybridir.evaluation.vocabulary import CROSS, CROSS_MAP, DATASET, MULTI, MULTI_MAP, RANK_DISTANCE
from hybridir.languages import canonical
from study.question import Question, Selector, register
from study.questions.common import (
    ReportContext,
    mean_ci,
    pareto_mask,
    plot_curves,
    representative_trials,
    save_figure,
    zero_shot_info,
    zero_shot_metric,
)
from study.vocabulary import (
    CELL,
    PAIRS_PER_SECOND,
    RUN,
    TRAIN_CPU_SECONDS,
    TRAIN_FLOPS,
    TRAIN_FLOPS_TRAINED,
    TRAINED,
    WORKER_SECONDS,
    ZERO_SHOT,
    final_key,
    train_key,
)

LANGS, BATCH = "data.num_languages", "batching.batch_size"
COST = TRAIN_FLOPS_TRAINED
TRADEOFF = f"{MULTI}_minus_{CROSS}_map"  # multilingual minus cross-lingual mAP, per run
# The per-run values a frontier row summarises: (output column, trials-table column or None: derived).
COST_COLUMNS = {"flops_trained": TRAIN_FLOPS_TRAINED, "flops": TRAIN_FLOPS, "cpu_s": TRAIN_CPU_SECONDS,
                WORKER_SECONDS: WORKER_SECONDS, "pairs_per_s": PAIRS_PER_SECOND}


def _metric_columns(dataset: str) -> dict[str, str]:
    prefix = dataset.replace("/", "_")
    return {f"{prefix}_{CROSS_MAP}": final_key(dataset, CROSS_MAP), f"{prefix}_{MULTI_MAP}": final_key(dataset, MULTI_MAP),
            f"{prefix}_{RANK_DISTANCE}": final_key(dataset, RANK_DISTANCE)}


def _per_run(group: pd.DataFrame, dataset: str) -> dict[str, pd.Series]:
    """The per-run values of one cell's runs: metrics, the trade-off, costs (NaN where not recorded)."""
    def column(name: str) -> pd.Series:
        return pd.to_numeric(group[name], errors="coerce") if name in group else pd.Series(np.nan, index=group.index)

    values = {out: column(name) for out, name in _metric_columns(dataset).items()}
    prefix = dataset.replace("/", "_")
    values[f"{prefix}_{TRADEOFF}"] = column(final_key(dataset, MULTI_MAP)) - column(final_key(dataset, CROSS_MAP))
    values.update({out: column(name) for out, name in COST_COLUMNS.items()})
    return values


def frontier_table(ctx: ReportContext) -> pd.DataFrame:
    """One row per cell (see the module docstring), without the front / recommendation flags."""
    rows = []
    cells = ctx.spec.cells() or [{}]
    for cell, group in representative_trials(ctx).items():
        axes = cells[cell]
        config = ctx.spec.train_config(axes)
        row = {CELL: cell, "num_languages": axes.get(LANGS, config.data.num_languages),
               "batch_size": axes.get(BATCH, config.batching.batch_size), "steps": config.max_steps,
               "pairs_seen": config.max_steps * config.batching.batch_size, "n": len(group)}
        for dataset in ctx.final_datasets():
            for out, values in _per_run(group, dataset).items():
                if out in row:
                    continue
                mean, low, high, _ = mean_ci(list(values))
                row.update({out: mean, f"{out}_ci_low": low, f"{out}_ci_high": high})
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["num_languages", "batch_size"]).reset_index(drop=True) if len(table) else table


def cost_measure(table: pd.DataFrame) -> str:
    """The frontier's cost column: trained-layer FLOPs, else worker-seconds (runs from before FLOPs)."""
    if "flops_trained" in table and table["flops_trained"].notna().all():
        return "flops_trained"
    return WORKER_SECONDS


def recommend(ctx: ReportContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-cell frontier table with its ``on_front`` and ``recommended`` flags, one
    recommendation row per language count with the ``cell`` it picks); both empty before any
    trial completed."""
    table = frontier_table(ctx)
    if table.empty:
        return table, pd.DataFrame()
    primary = ctx.final_datasets()[0]
    accuracy, cost = f"{primary.replace('/', '_')}_{CROSS_MAP}", cost_measure(table)
    tolerance = ctx.spec.report.accuracy_tolerance
    table["on_front"] = False
    table["recommended"] = False
    recommendations = []
    for langs, group in table.groupby("num_languages", dropna=False):
        usable = group.dropna(subset=[accuracy, cost])
        if usable.empty:
            continue
        mask = pareto_mask(usable[accuracy], usable[cost])
        table.loc[usable.index, "on_front"] = mask
        front = usable[mask]
        best = usable.loc[usable[accuracy].idxmax()]
        good = front[front[accuracy] >= best[accuracy] - tolerance]
        pick = good.sort_values([cost, accuracy], ascending=[True, False]).iloc[0]
        table.loc[pick.name, "recommended"] = True
        recommendations.append({
            "num_languages": langs, CELL: int(pick[CELL]), "recommended_batch_size": int(pick["batch_size"]),
            CROSS_MAP: pick[accuracy], "cost": pick[cost], "best_batch_size": int(best["batch_size"]),
            "best_cross_map": best[accuracy], "best_cost": best[cost],
            "cost_vs_best": pick[cost] / best[cost] if best[cost] else np.nan,
            "front_batch_sizes": " ".join(str(int(b)) for b in sorted(front["batch_size"])),
            "cost_measure": cost, DATASET: primary, "tolerance": tolerance,
        })
    return table, pd.DataFrame(recommendations)


def tradeoff_table(table: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Per language count: the cells' means averaged over batch sizes (the slope claims' view)."""
    prefix = dataset.replace("/", "_")
    columns = [f"{prefix}_{CROSS_MAP}", f"{prefix}_{MULTI_MAP}", f"{prefix}_{TRADEOFF}", f"{prefix}_{RANK_DISTANCE}"]
    columns = [c for c in columns if c in table]
    grouped = table.groupby("num_languages")
    out = grouped[columns].mean()
    out["batch_sizes"] = grouped["batch_size"].apply(lambda b: " ".join(str(int(v)) for v in sorted(b)))
    return out.reset_index()


def exposure_table(ctx: ReportContext, table: pd.DataFrame) -> pd.DataFrame:
    """Per cell: pairs seen and, per evaluation language of the first final set, the mean share of
    the pairs involving it (X-X pairs + X-Y pairs with it as query or passage language) over the
    cell's runs that recorded their exposure."""
    final = ctx.spec.evaluation.final[0]
    languages = [canonical(code) for code in final.languages or []]
    rows = []
    for cell, group in representative_trials(ctx).items():
        base = table[table[CELL] == cell]
        if base.empty:
            continue
        pairs = int(base["pairs_seen"].iloc[0])
        row = {CELL: cell, "num_languages": base["num_languages"].iloc[0], "batch_size": base["batch_size"].iloc[0],
               "pairs_seen": pairs}
        for lang in languages:
            columns = [train_key(exposure_key(lang, field)) for field in EXPOSURE_FIELDS if field != EXPOSURE_FIELDS[0]]
            if not all(c in group for c in columns):
                row[f"share_{lang}"] = np.nan
                continue
            involved = sum(pd.to_numeric(group[c], errors="coerce") for c in columns)
            row[f"share_{lang}"] = float((involved / pairs).mean()) if involved.notna().any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _frontier_plot(ctx: ReportContext, table: pd.DataFrame, cost: str) -> None:
    primary = ctx.final_datasets()[0]
    accuracy = f"{primary.replace('/', '_')}_{CROSS_MAP}"
    fig, ax = plt.subplots(figsize=(6, 4))
    for langs, group in table.groupby("num_languages"):
        group = group.sort_values(cost)
        errors = np.vstack([group[accuracy] - group[f"{accuracy}_ci_low"], group[f"{accuracy}_ci_high"] - group[accuracy]])
        bars = ax.errorbar(group[cost], group[accuracy], yerr=np.nan_to_num(errors), fmt="o", capsize=3,
                           label=f"{int(langs)} languages")
        front = group[group["on_front"]]
        ax.plot(front[cost], front[accuracy], color=bars[0].get_color(), linewidth=1)
        for _, row in group.iterrows():
            ax.annotate(f"b={int(row['batch_size'])}", (row[cost], row[accuracy]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    info = zero_shot_info(ctx)
    if info:
        ax.axhline(zero_shot_metric(info, primary, CROSS_MAP), color="grey", linestyle="--", linewidth=1,
                   label="untrained model")
    ax.set_xlabel({"flops_trained": "training compute per trial (model FLOPs of the trained layers)",
                   WORKER_SECONDS: "compute cost per trial (worker-seconds)"}[cost])
    ax.set_ylabel(f"cross-lingual mAP ({primary}), 95% CI over seeds")
    ax.set_title(f"{ctx.spec.name}: accuracy vs compute at equal pairs seen (front per language count)", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, ctx.out_dir / "batch_frontier.png")


def build(ctx: ReportContext) -> dict[str, pd.DataFrame]:
    table, recommendations = recommend(ctx)
    if table.empty:
        return {"batch_frontier": table, "batch_recommendation": recommendations}
    primary = ctx.final_datasets()[0]
    _frontier_plot(ctx, table, cost_measure(table))
    tradeoff = f"{primary.replace('/', '_')}_{TRADEOFF}"
    if table["num_languages"].nunique() > 1 and table[tradeoff].notna().any():
        plot_curves(table.assign(num_languages=table["num_languages"].astype(float)), "num_languages", tradeoff,
                    "batch_size", ctx.out_dir / "batch_tradeoff.png",
                    f"{ctx.spec.name}: multilingual minus cross-lingual mAP ({primary}) by training languages, "
                    "95% CI over seeds", xlabel="training languages (log scale)", logx=True)
    tables = {"batch_frontier": table, "batch_recommendation": recommendations,
              "batch_tradeoff": tradeoff_table(table, primary), "batch_exposure": exposure_table(ctx, table)}
    info = zero_shot_info(ctx)
    if info:
        zero = {CELL: ZERO_SHOT, RUN: ZERO_SHOT}
        for dataset in ctx.final_datasets():
            prefix = dataset.replace("/", "_")
            zero[f"{prefix}_{CROSS_MAP}"] = zero_shot_metric(info, dataset, CROSS_MAP)
            zero[f"{prefix}_{MULTI_MAP}"] = zero_shot_metric(info, dataset, MULTI_MAP)
            zero[f"{prefix}_{RANK_DISTANCE}"] = zero_shot_metric(info, dataset, RANK_DISTANCE)
            zero[f"{prefix}_{TRADEOFF}"] = zero[f"{prefix}_{MULTI_MAP}"] - zero[f"{prefix}_{CROSS_MAP}"]
        tables["batch_frontier"] = pd.concat([pd.DataFrame([zero]), table.assign(**{RUN: TRAINED})], ignore_index=True)
    return tables


def recommended_cells(ctx: ReportContext) -> set[int]:
    """The cells of the recommended batch sizes (one per language count)."""
    return set(recommend(ctx)[1].get(CELL, pd.Series(dtype=int)).astype(int))


def _interval(row, column: str, digits: int = 4) -> str:
    value, low, high = row.get(column), row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if value is None or not np.isfinite(value):
        return "-"
    if low is None or not np.isfinite(low):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _yes(flag) -> str:
    return "yes" if isinstance(flag, (bool, np.bool_)) and flag else ""


def frontier_markdown(ctx: ReportContext, table: pd.DataFrame, recommendations: pd.DataFrame) -> list[str]:
    """The frontier as a markdown table: per cell accuracy and trade-off with 95% CIs over seeds,
    compute (trained-layer and total FLOPs, CPU-seconds), on the front, recommended."""
    if table.empty or "batch_size" not in table:
        return []
    primary = ctx.final_datasets()[0]
    prefix = primary.replace("/", "_")
    accuracy, tradeoff = f"{prefix}_{CROSS_MAP}", f"{prefix}_{TRADEOFF}"
    margin = ctx.spec.report.accuracy_tolerance
    lines = ["", f"Accuracy against compute per cell ({primary}; 95% CIs over the cell's seeds; FLOPs of the training "
             f"steps, trained layers forward + backward, and of every layer run; 'recommended': the cheapest batch "
             f"size in trained-layer FLOPs within {margin:g} cross-lingual mAP of the best at that language count):", "",
             "| languages | batch | steps | pairs | runs | cross mAP | multi - cross mAP | TFLOPs trained | TFLOPs all "
             "| CPU-s | front | recommended |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in table.to_dict("records"):
        if row.get(CELL) == ZERO_SHOT:
            lines.append(f"| untrained model | | | | | {_interval(row, accuracy)} | {_interval(row, tradeoff)} "
                         "| | | | | |")
            continue
        tera = lambda column: f"{row[column] / 1e12:.2f}" if np.isfinite(row.get(column, np.nan)) else "-"  # noqa: E731
        cpu = f"{row['cpu_s']:.0f}" if np.isfinite(row.get("cpu_s", np.nan)) else "-"
        lines.append(f"| {int(row['num_languages'])} | {int(row['batch_size'])} | {int(row['steps'])} "
                     f"| {int(row['pairs_seen']):,} | {int(row['n'])} | {_interval(row, accuracy)} "
                     f"| {_interval(row, tradeoff)} | {tera('flops_trained')} | {tera('flops')} | {cpu} "
                     f"| {_yes(row.get('on_front'))} | {_yes(row.get('recommended'))} |")
    lines.append("")
    return lines


def findings(ctx: ReportContext, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Whether batch size is confounded with the data seen (from the frozen study), the
    recommendation per language count and what the compute measure is."""
    from study.questions.common import pairs_per_trial

    lines = []
    seen = pairs_per_trial(ctx.spec, BATCH)
    if len(seen) >= 2:
        totals = {p for pairs in seen.values() for p in pairs}
        if len(totals) == 1:
            lines.append(f"- Training pairs seen held constant across batch sizes (steps x batch = {totals.pop():,}): "
                         "batch size is not confounded with the amount of data.")
        else:
            lines.append("- Training pairs seen differ across batch sizes ("
                         + "; ".join(f"batch {b}: {', '.join(f'{p:,}' for p in seen[b])}" for b in sorted(seen))
                         + "): a larger batch also sees more data, so batch size is confounded with the amount of data.")
    recommendations = tables.get("batch_recommendation", pd.DataFrame())
    if len(recommendations):
        measure = recommendations["cost_measure"].iloc[0]
        what = ("model FLOPs of the trained layers (hybridir/flops.py)" if measure == "flops_trained"
                else "worker-seconds (this run recorded no FLOPs)")
        lines.append(f"- Recommended batch size per language count (the cheapest in {what} within "
                     f"{recommendations['tolerance'].iloc[0]:g} cross-lingual mAP of the best, point estimates; the "
                     "recommended-batch claims test it): " + "; ".join(
                         f"{int(r['num_languages'])} languages: batch {r['recommended_batch_size']} "
                         f"({r[CROSS_MAP]:.4f} vs best batch {r['best_batch_size']} {r['best_cross_map']:.4f}, "
                         f"cost x{r['cost_vs_best']:.2f} of the best's)" for r in recommendations.to_dict("records")))
    lines += cost_spread_lines(tables.get("batch_frontier", pd.DataFrame()), recommendations)
    lines += frontier_markdown(ctx, tables.get("batch_frontier", pd.DataFrame()),
                               tables.get("batch_recommendation", pd.DataFrame()))
    exposure = tables.get("batch_exposure", pd.DataFrame())
    shares = [c for c in exposure.columns if c.startswith("share_")] if len(exposure) else []
    if shares and exposure[shares].notna().any().any():
        by_langs = exposure.groupby("num_languages")[shares].mean()
        lines.append("- Share of the training pairs involving each evaluation language (recorded exposure, mean over "
                     "batch sizes and seeds): " + "; ".join(
                         f"{int(langs)} languages: " + ", ".join(f"{c[len('share_'):]} {v:.1%}" for c, v in row.items())
                         for langs, row in by_langs.iterrows()))
    return lines


def cost_spread_lines(table: pd.DataFrame, recommendations: pd.DataFrame) -> list[str]:
    """How much the batch sizes' costs differ per language count (largest / smallest cell mean)
    in trained-layer FLOPs and in CPU-seconds of the steps; and, where the recommended batch size
    is the most accurate one, that the recommended-vs-best claim holds by construction there."""
    if table.empty or "batch_size" not in table:
        return []
    trained = table[table[RUN] == TRAINED] if RUN in table else table
    parts = []
    for langs, group in trained.groupby("num_languages"):
        spread = []
        for column, name in (("flops_trained", "trained-layer FLOPs"), ("cpu_s", "CPU-s")):
            values = group[column].dropna() if column in group else pd.Series(dtype=float)
            if len(values) >= 2 and values.min() > 0:
                spread.append(f"{name} x{values.max() / values.min():.2f}")
        if spread:
            parts.append(f"{int(langs)} languages: " + ", ".join(spread))
    lines = []
    if parts:
        lines.append("- Cost spread across batch sizes at equal pairs seen (largest / smallest cell mean): "
                     + "; ".join(parts) + ". FLOPs count the tokens processed, not the steps, so at equal pairs "
                     "they differ only by padding; a larger batch saves CPU time only where it uses the cores better.")
    if len(recommendations):
        same = recommendations[recommendations["recommended_batch_size"] == recommendations["best_batch_size"]]
        if len(same):
            lines.append("- Where the recommended batch size is also the most accurate ("
                         + ", ".join(f"{int(n)} languages" for n in same["num_languages"])
                         + "), the recommended-vs-best claim compares a cell with itself: it holds by construction "
                         "and is no evidence; the batch-size comparisons above are the test.")
    return lines


register(Question(
    name="batch", summary="Q2: language count x batch size: the multilingual / cross-lingual trade-off and accuracy "
                          "per unit of compute at equal pairs seen",
    build=build, findings=findings,
    selectors={"recommended": Selector(axis=BATCH, description="batch size", cells=recommended_cells)},
))
