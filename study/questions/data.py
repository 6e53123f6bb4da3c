"""Q3: how much in-language training data does a target language need?

The virtual axis ``data.pairs_per_target_language`` caps the training pairs of
``report.target_languages`` (the others keep all theirs). Per data size: nDCG@10 of every
language pair that involves a target language (query or candidate side), from the final
evaluation's per-pair matrices, averaged over seeds; per target language the mean over its
pairs; heatmaps of the full matrix per data size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hybridir.languages import canonical
from study.questions.common import ReportContext, mean_ci, plot_curves, plot_heatmap, representative_trials
from study.spec import TARGET_PAIRS_AXIS

METRIC = "ndcg@10"


def _size(value) -> float:
    """Data size for sorting and plotting: "all" / missing -> +inf is not plottable, use NaN."""
    if value is None or value == "all" or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    return float(value)


def build(ctx: ReportContext) -> dict[str, pd.DataFrame]:
    targets = [canonical(code) for code in ctx.spec.report.target_languages or []]
    pair_rows = []
    for cell, group in representative_trials(ctx).items():
        size = ctx.spec.cells()[cell].get(TARGET_PAIRS_AXIS) if ctx.spec.cells() else None
        for _, trial in group.iterrows():
            for dataset, tables in ctx.store.matrices(trial["trial_id"]).items():
                matrix = tables.get(METRIC)
                if matrix is None:
                    continue
                for query_lang in matrix.index:
                    for candidate_lang in matrix.columns:
                        if targets and query_lang not in targets and candidate_lang not in targets:
                            continue
                        value = matrix.loc[query_lang, candidate_lang]
                        if pd.notna(value):
                            pair_rows.append({
                                "pairs_per_target_language": "all" if size in (None, "all") else int(size),
                                "dataset": dataset, "query_lang": query_lang, "candidate_lang": candidate_lang,
                                "trial_id": trial["trial_id"], METRIC: float(value),
                            })
    pairs = pd.DataFrame(pair_rows)
    if pairs.empty:
        return {"data": pairs, "data_per_target": pd.DataFrame()}
    keys = ["pairs_per_target_language", "dataset", "query_lang", "candidate_lang"]
    table = pairs.groupby(keys, sort=False).agg(
        **{METRIC: (METRIC, "mean")}, n_seeds=("trial_id", "nunique")).reset_index()
    table["size_sort"] = table["pairs_per_target_language"].map(_size)
    table = table.sort_values(["dataset", "size_sort", "query_lang", "candidate_lang"], na_position="last")

    per_target = []
    for (size, dataset), group in pairs.groupby(["pairs_per_target_language", "dataset"], sort=False):
        for lang in targets or sorted(set(group["query_lang"])):
            involved = group[(group["query_lang"] == lang) | (group["candidate_lang"] == lang)]
            if involved.empty:
                continue
            per_trial = involved.groupby("trial_id")[METRIC].mean()
            mean, low, high, n = mean_ci(per_trial)
            per_target.append({"pairs_per_target_language": size, "size_sort": _size(size), "dataset": dataset,
                               "target_language": lang, f"mean_{METRIC}": mean, f"mean_{METRIC}_ci_low": low,
                               f"mean_{METRIC}_ci_high": high, "n_seeds": n, "n_pairs": involved[["query_lang", "candidate_lang"]].drop_duplicates().shape[0]})
    per_target = pd.DataFrame(per_target).sort_values(["dataset", "target_language", "size_sort"], na_position="last")

    for dataset, group in per_target.groupby("dataset"):
        finite = group.dropna(subset=["size_sort"])
        if len(finite):
            plot_curves(finite, "size_sort", f"mean_{METRIC}", "target_language", ctx.out_dir / f"data_{dataset}.png",
                        f"{ctx.spec.name}: nDCG@10 of pairs with the target language vs in-language pairs ({dataset})",
                        xlabel="in-language training pairs per target language")
    for (size, dataset), group in table.groupby(["pairs_per_target_language", "dataset"], sort=False):
        matrix = group.pivot(index="query_lang", columns="candidate_lang", values=METRIC)
        plot_heatmap(matrix, ctx.out_dir / f"data_heatmap_{dataset}_{size}.png",
                     f"{METRIC}, {size} pairs per target language ({dataset})")
    return {"data": table.drop(columns="size_sort"), "data_per_target": per_target.drop(columns="size_sort")}
