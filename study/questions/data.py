"""Q3: how much in-language training data does a target language need?

The virtual axis ``data.pairs_per_target_language`` caps the training pairs of
``report.target_languages`` (the others keep all theirs). Per data size: nDCG@10 of every
language pair that involves a target language (query or candidate side), from the final
evaluation's per-pair matrices, averaged over seeds, and mAP beside it; per target language the
mean over its pairs (both metrics, 95% t-intervals over seeds); the growth curve per target
language (``data_growth``: the least-squares slope per doubling of the in-language pairs over
the numeric sizes > 0, every trial a point, with its 95% interval; the claims' verdicts carry
the seed-and-question inference); heatmaps of the full matrix per data size.

What a target language actually trained on at each data size (``data_exposure``, and the
``exposure_*`` columns of ``data_per_target``): per trial the training loop records
``HybridBatchSampler.exposure`` as ``train/exposure/<lang>/<field>`` (X-X batches, X-X pairs,
X-Y pairs with the language as query and as passage); the report shows the mean over the
cell's representative trials. Trials of runs that predate that record have no such columns:
their exposure is NaN with ``n_trials_with_exposure`` 0, never a made-up 0. ``exposure_epochs``
= training pairs with the language on either side / its in-language pairs: nominal passes over
its data (batches draw independently, so a pass does not mean every pair was drawn); NaN where
the size is 0 or a word ("all": the pool's size is not in the study).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hybridir.batching import EXPOSURE_FIELDS, exposure_key
from hybridir.evaluation.vocabulary import CANDIDATE_LANG, DATASET, QUERY_LANG
from hybridir.languages import canonical
from pydantic import Field

from study.question import Question, QuestionSettings, register
from study.questions.common import (
    ReportContext,
    add_zero_shot,
    fit_slope,
    mean_ci,
    plot_curves,
    plot_heatmap,
    representative_trials,
    zero_shot_matrices,
)
from study.vocabulary import EXPOSURE_PREFIX, TARGET_PAIRS_AXIS, TRIAL_ID, ZERO_SHOT, train_key

METRIC = "ndcg@10"  # the question's metric
METRICS = (METRIC, "map")  # mAP beside it (LAReQA's own summary metric)


def _size(value) -> float:
    """Data size for sorting and plotting: "all" / missing -> +inf is not plottable, use NaN."""
    if value is None or value == "all" or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    return float(value)


def _size_label(size) -> int | str:
    return "all" if size in (None, "all") else int(size)


def _exposure_column(lang: str, field: str) -> str:
    """The trials-table column of one exposure count (the training loop's metric under ``train/``)."""
    return train_key(exposure_key(lang, field))


def _exposure_languages(trials: pd.DataFrame) -> list[str]:
    """Languages with recorded exposure, for a study without report.target_languages."""
    prefix, suffix = EXPOSURE_PREFIX, f"/{EXPOSURE_FIELDS[0]}"
    return sorted(c[len(prefix) : -len(suffix)] for c in trials.columns if c.startswith(prefix) and c.endswith(suffix))


def exposure_table(ctx: ReportContext, representatives: dict[int, pd.DataFrame], languages: list[str]) -> pd.DataFrame:
    """Per data size and language: mean exposure over the cell's trials that recorded it."""
    rows = []
    for cell, group in representatives.items():
        size = ctx.spec.cells()[cell].get(TARGET_PAIRS_AXIS) if ctx.spec.cells() else None
        for lang in languages:
            row = {"pairs_per_target_language": _size_label(size), "size_sort": _size(size), "target_language": lang}
            recorded = pd.Series(True, index=group.index)
            for field in EXPOSURE_FIELDS:
                column = _exposure_column(lang, field)
                values = pd.to_numeric(group[column], errors="coerce") if column in group else pd.Series(dtype=float)
                recorded &= values.reindex(group.index).notna()
                row[f"exposure_{field}"] = float(values.mean()) if values.notna().any() else np.nan
            row["n_trials_with_exposure"] = int(recorded.sum())
            involving = sum(row[f"exposure_{field}"] for field in ("xx_pairs", "xy_query_pairs", "xy_passage_pairs"))
            numeric = _size(size)
            row["exposure_epochs"] = involving / numeric if numeric == numeric and numeric > 0 else np.nan
            rows.append(row)
    columns = ["pairs_per_target_language", "size_sort", "target_language",
               *(f"exposure_{field}" for field in EXPOSURE_FIELDS), "exposure_epochs", "n_trials_with_exposure"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["target_language", "size_sort"], na_position="last")


def _with_zero_shot(ctx: ReportContext, table: pd.DataFrame, per_target: pd.DataFrame,
                    targets: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The untrained model's rows (pairs_per_target_language "zero-shot") and every row's change
    against it, per language pair and per target language."""
    pair_rows: dict[tuple, dict] = {}
    target_rows: dict[tuple, dict] = {}
    for dataset, tables in zero_shot_matrices(ctx).items():
        for metric in METRICS:
            matrix = tables.get(metric)
            if matrix is None:
                continue
            for lang in targets or sorted(matrix.index):
                involved = [matrix.loc[q, c] for q in matrix.index for c in matrix.columns
                            if lang in (q, c) and pd.notna(matrix.loc[q, c])]
                if involved:
                    target_rows.setdefault((dataset, lang), {
                        "pairs_per_target_language": ZERO_SHOT, DATASET: dataset, "target_language": lang,
                    })[f"mean_{metric}"] = float(np.mean(involved))
            for q in matrix.index:
                for c in matrix.columns:
                    if (not targets or q in targets or c in targets) and pd.notna(matrix.loc[q, c]):
                        pair_rows.setdefault((dataset, q, c), {
                            "pairs_per_target_language": ZERO_SHOT, DATASET: dataset, QUERY_LANG: q, CANDIDATE_LANG: c,
                        })[metric] = float(matrix.loc[q, c])
    table = add_zero_shot(table, list(pair_rows.values()), list(METRICS), [DATASET, QUERY_LANG, CANDIDATE_LANG])
    per_target = add_zero_shot(per_target, list(target_rows.values()), [f"mean_{m}" for m in METRICS],
                               [DATASET, "target_language"])
    return table, per_target


def growth_table(pairs: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """Per dataset, target language and metric: the least-squares slope of the trial's mean over
    the pairs with the language against log2(in-language pairs), over the numeric sizes > 0
    (a gain per doubling), with its 95% interval (every trial one point)."""
    rows = []
    sized = pairs.assign(size_sort=pairs["pairs_per_target_language"].map(_size))
    sized = sized[sized["size_sort"] > 0]
    for dataset, part in sized.groupby(DATASET):
        for lang in targets or sorted(set(part[QUERY_LANG])):
            involved = part[(part[QUERY_LANG] == lang) | (part[CANDIDATE_LANG] == lang)]
            per_trial = involved.groupby([TRIAL_ID, "size_sort"])[list(METRICS)].mean().reset_index()
            if per_trial["size_sort"].nunique() < 2:
                continue
            for metric in METRICS:
                fit = fit_slope(np.log2(per_trial["size_sort"]), per_trial[metric])
                rows.append({DATASET: dataset, "target_language": lang, "metric": metric,
                             "from_pairs": int(per_trial["size_sort"].min()), "to_pairs": int(per_trial["size_sort"].max()),
                             "n_sizes": int(per_trial["size_sort"].nunique()),
                             **{k.replace("slope", "slope_per_doubling"): v for k, v in fit.items()}})
    return pd.DataFrame(rows)


def build(ctx: ReportContext) -> dict[str, pd.DataFrame]:
    targets = [canonical(code) for code in ctx.settings.target_languages or []]
    representatives = representative_trials(ctx)
    exposure = exposure_table(ctx, representatives, targets or _exposure_languages(ctx.completed))
    pair_rows = []
    for cell, group in representatives.items():
        size = ctx.spec.cells()[cell].get(TARGET_PAIRS_AXIS) if ctx.spec.cells() else None
        for _, trial in group.iterrows():
            for dataset, tables in ctx.store.matrices(trial[TRIAL_ID]).items():
                main = tables.get(METRIC)
                if main is None:
                    continue
                for query_lang in main.index:
                    for candidate_lang in main.columns:
                        if targets and query_lang not in targets and candidate_lang not in targets:
                            continue
                        value = main.loc[query_lang, candidate_lang]
                        if pd.notna(value):
                            row = {"pairs_per_target_language": _size_label(size), DATASET: dataset,
                                   QUERY_LANG: query_lang, CANDIDATE_LANG: candidate_lang,
                                   TRIAL_ID: trial[TRIAL_ID], METRIC: float(value)}
                            for metric in METRICS[1:]:
                                other = tables.get(metric)
                                row[metric] = (float(other.loc[query_lang, candidate_lang])
                                               if other is not None and query_lang in other.index
                                               and candidate_lang in other.columns else np.nan)
                            pair_rows.append(row)
    pairs = pd.DataFrame(pair_rows)
    if pairs.empty:
        return {"data": pairs, "data_per_target": pd.DataFrame(), "data_growth": pd.DataFrame(),
                "data_exposure": exposure.drop(columns="size_sort")}
    keys = ["pairs_per_target_language", DATASET, QUERY_LANG, CANDIDATE_LANG]
    table = pairs.groupby(keys, sort=False).agg(
        **{m: (m, "mean") for m in METRICS}, n_seeds=(TRIAL_ID, "nunique")).reset_index()
    table["size_sort"] = table["pairs_per_target_language"].map(_size)
    table = table.sort_values([DATASET, "size_sort", QUERY_LANG, CANDIDATE_LANG], na_position="last")

    per_target = []
    for (size, dataset), group in pairs.groupby(["pairs_per_target_language", DATASET], sort=False):
        for lang in targets or sorted(set(group[QUERY_LANG])):
            involved = group[(group[QUERY_LANG] == lang) | (group[CANDIDATE_LANG] == lang)]
            if involved.empty:
                continue
            row = {"pairs_per_target_language": size, "size_sort": _size(size), DATASET: dataset,
                   "target_language": lang}
            n = 0
            for metric in METRICS:
                per_trial = involved.groupby(TRIAL_ID)[metric].mean()
                mean, low, high, n_metric = mean_ci(per_trial)
                row.update({f"mean_{metric}": mean, f"mean_{metric}_ci_low": low, f"mean_{metric}_ci_high": high})
                n = max(n, n_metric)
            row.update({"n_seeds": n, "n_pairs": involved[[QUERY_LANG, CANDIDATE_LANG]].drop_duplicates().shape[0]})
            per_target.append(row)
    per_target = pd.DataFrame(per_target).sort_values([DATASET, "target_language", "size_sort"], na_position="last")
    # Next to each score, what the target language trained on at that size.
    per_target = per_target.merge(exposure.drop(columns=["size_sort", "n_trials_with_exposure"]),
                                  on=["pairs_per_target_language", "target_language"], how="left")

    for dataset, group in per_target.groupby(DATASET):
        finite = group.dropna(subset=["size_sort"])
        if len(finite):
            for metric in METRICS:
                suffix = "" if metric == METRIC else f"_{metric}"
                plot_curves(finite, "size_sort", f"mean_{metric}", "target_language",
                            ctx.out_dir / f"data_{dataset}{suffix}.png",
                            f"{ctx.spec.name}: {metric} of pairs with the target language vs in-language pairs ({dataset})",
                            xlabel="in-language training pairs per target language")
    for (size, dataset), group in table.groupby(["pairs_per_target_language", DATASET], sort=False):
        matrix = group.pivot(index=QUERY_LANG, columns=CANDIDATE_LANG, values=METRIC)
        plot_heatmap(matrix, ctx.out_dir / f"data_heatmap_{dataset}_{size}.png",
                     f"{METRIC}, {size} pairs per target language ({dataset})")
    growth = growth_table(pairs, targets)
    table, per_target = _with_zero_shot(ctx, table, per_target, targets)
    return {"data": table.drop(columns="size_sort"), "data_per_target": per_target.drop(columns="size_sort"),
            "data_growth": growth, "data_exposure": exposure.drop(columns="size_sort")}


def findings(ctx: ReportContext, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Whether every size was used up, from the recorded exposure (``data_exposure``): the
    nominal epochs over each target language's in-language pairs per size."""
    exposure = tables.get("data_exposure")
    if exposure is None or exposure.empty:
        return []
    recorded = exposure[exposure["n_trials_with_exposure"] > 0]
    if recorded.empty:
        return ["- Recorded exposure: none of these trials recorded train/exposure/* (runs that predate the "
                "record): how often each size's pairs were trained on is not known."]
    parts = []
    for lang, group in recorded.groupby("target_language", sort=False):
        sizes = []
        for row in group.itertuples():
            involving = row.exposure_xx_pairs + row.exposure_xy_query_pairs + row.exposure_xy_passage_pairs
            epochs = f"{row.exposure_epochs:.2f} epochs" if row.exposure_epochs == row.exposure_epochs else "epochs n/a"
            sizes.append(f"{row.pairs_per_target_language}: {involving:,.0f} pairs ({epochs})")
        parts.append(f"{lang}: " + ", ".join(sizes))
    lines = ["- Recorded exposure (train/exposure/*, mean over each size's trials): training pairs with the target "
             "language on either side, and nominal epochs over its in-language pairs (those pairs / its pairs; "
             "batches draw independently, so an epoch does not mean every pair was drawn): " + "; ".join(parts) + "."]
    epochs = recorded["exposure_epochs"].dropna()
    if len(epochs):
        least = recorded.loc[epochs.idxmin()]
        lines.append(f"- Fewest epochs: {least['exposure_epochs']:.2f} ({least['target_language']} at "
                     f"{least['pairs_per_target_language']} pairs)"
                     + (": every numeric size was trained on at least once in expectation." if epochs.min() >= 1 else
                        ": below 1, so at that size part of the in-language data was not used up; the curve there "
                        "measures exposure as much as data size."))
    return lines


class DataSettings(QuestionSettings):
    target_languages: list[str] | None = Field(
        None, description="languages whose in-language data the virtual axis data.pairs_per_target_language caps"
    )


register(Question(
    name="data", summary="Q3: how much in-language training data a target language needs",
    build=build, settings=DataSettings, findings=findings,
))
