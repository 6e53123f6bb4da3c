"""Q1: does zero-shot cross-lingual retrieval degrade as training languages grow past 40?

Per language count and final dataset: cross-lingual mAP, F1@k, multilingual mAP (with CIs
over seeds), the change relative to the reference count (40 by default), and per dataset
the least-squares slope per added language beyond the reference with its 95% CI;
XQuAD-R vs MLQA-R side by side.
"""

from __future__ import annotations

import pandas as pd

from pydantic import Field

from hybridir.evaluation.vocabulary import CROSS_MAP, DATASET, MULTI_MAP
from study.question import Question, QuestionSettings, register
from study.questions.common import (
    ReportContext,
    add_zero_shot,
    fit_slope,
    plot_curves,
    representative_trials,
    summarize,
    zero_shot_info,
    zero_shot_metric,
)
from study.vocabulary import CELL, ZERO_SHOT, axis_column, final_key, final_prefix

AXIS = "data.num_languages"
METRICS = (CROSS_MAP, "cross_f1@10", MULTI_MAP)


def build(ctx: ReportContext) -> dict[str, pd.DataFrame]:
    axis = axis_column(AXIS)
    rows = []
    for dataset in ctx.final_datasets():
        metrics = [final_key(dataset, m) for m in METRICS]
        table = summarize(ctx, metrics)
        if table.empty or axis not in table:
            continue
        table = table.rename(columns={axis: "num_languages"})
        table = table.rename(columns=lambda c: c.replace(f"{final_prefix(dataset)}/", ""))
        table.insert(1, DATASET, dataset)
        rows.append(table)
    if not rows:
        return {"languages": pd.DataFrame(), "languages_slope": pd.DataFrame()}
    table = pd.concat(rows, ignore_index=True).sort_values([DATASET, "num_languages"])

    wanted = ctx.settings.reference_languages
    counts = sorted(table["num_languages"].unique())
    # The reference is the requested count when swept, else the nearest swept count below it
    # (a scaled-down run); the column says which one was used.
    below = [c for c in counts if c <= wanted]
    reference = below[-1] if below else counts[0]
    table["reference_languages"] = reference
    for metric in METRICS:
        ref = table[table["num_languages"] == reference].set_index(DATASET)[metric]
        table[f"{metric}_change_vs_ref"] = table[metric] - table[DATASET].map(ref)
        table[f"{metric}_change_vs_ref_pct"] = 100 * table[f"{metric}_change_vs_ref"] / table[DATASET].map(ref)

    # Slopes on every trial (seed re-runs count individually), counts >= reference only.
    slopes = []
    per_trial = pd.concat(representative_trials(ctx).values(), ignore_index=True)
    for dataset in table[DATASET].unique():
        beyond = per_trial[per_trial[axis] >= reference]
        for metric in METRICS:
            column = final_key(dataset, metric)
            if column not in beyond:
                continue
            fit = fit_slope(beyond[axis] - reference, beyond[column])
            slopes.append({DATASET: dataset, "metric": metric, "reference_languages": reference,
                           "max_languages": counts[-1], **fit})
    slope_table = pd.DataFrame(slopes)
    if len(slope_table) and slope_table[DATASET].nunique() > 1:
        first = slope_table[DATASET].unique()[0]
        base = slope_table[slope_table[DATASET] == first].set_index("metric")["slope"]
        slope_table[f"slope_minus_{first}"] = slope_table["slope"] - slope_table["metric"].map(base)

    for metric in METRICS:
        plot_curves(table, "num_languages", metric, DATASET, ctx.out_dir / f"languages_{metric.replace('@', 'at')}.png",
                    f"{ctx.spec.name}: {metric} vs number of training languages (ref {reference})",
                    xlabel="training languages", logx=True)
    info = zero_shot_info(ctx)
    if info:  # the untrained starting model per dataset, and every row's change against it
        zero_rows = [{CELL: ZERO_SHOT, DATASET: d, **{m: zero_shot_metric(info, d, m) for m in METRICS}}
                     for d in table[DATASET].unique()]
        table = add_zero_shot(table, zero_rows, list(METRICS), [DATASET])
    return {"languages": table.reset_index(drop=True), "languages_slope": slope_table}


class LanguagesSettings(QuestionSettings):
    reference_languages: int = Field(40, ge=1, description="the language count the change is relative to")


def findings(ctx: ReportContext, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Which regime the design is in (from the frozen study): a fixed total budget, where more
    training languages dilute each language's share, or exposure that grows with the count."""
    from study.questions.common import pairs_per_trial

    seen = pairs_per_trial(ctx.spec, AXIS)
    if len(seen) < 2:
        return []
    counts = sorted(seen)
    if all(len(p) == 1 for p in seen.values()) and len({p[0] for p in seen.values()}) == 1:
        total = seen[counts[0]][0]
        shares = ", ".join(f"{n}: ~{total / n:,.0f}" for n in counts)
        return [f"- Regime: **fixed total budget** ({total:,} training pairs per trial at every language count): "
                f"the axis measures dilution; pairs per training language, if spread evenly, {shares}."]
    per_language = {n: [p / n for p in seen[n]] for n in counts}
    if all(len(v) == 1 for v in per_language.values()) and len({round(v[0]) for v in per_language.values()}) == 1:
        return [f"- Regime: **fixed exposure per training language** (~{per_language[counts[0]][0]:,.0f} pairs each; "
                "steps grow with the count)."]
    return ["- Regime: the training budget changes with the language count but not in proportion to it "
            "(neither a fixed total nor a fixed per-language exposure): "
            + "; ".join(f"{n} languages: {', '.join(f'{p:,}' for p in seen[n])} pairs" for n in counts)]


register(Question(
    name="languages", summary="Q1: does cross-lingual retrieval degrade as training languages grow past 40?",
    build=build, settings=LanguagesSettings, findings=findings,
))
