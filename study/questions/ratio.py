"""Q5: how does the X-X share alpha trade off robustness on low-resource languages?

Per alpha and final dataset: each low-resource language's cross-lingual mAP (its queries
against every other language's candidates, the mean of its matrix row off the diagonal)
and multilingual mAP, the worst language, the spread across languages, rank distance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hybridir.evaluation.vocabulary import CROSS_MAP, DATASET, MAP, MONO_MAP, MULTILINGUAL, MULTI_MAP, RANK_DISTANCE
from hybridir.languages import canonical
from pydantic import Field

from study.question import Question, QuestionSettings, register
from study.questions.common import (
    ReportContext,
    add_zero_shot,
    mean_ci,
    plot_curves,
    representative_trials,
    zero_shot_matrices,
)
from study.vocabulary import CELL, TRIAL_ID, axis_column, tuned_column

AXIS = "batching.alpha"


def _alpha(ctx: ReportContext, row: pd.Series) -> float:
    """alpha of a trial: the axis value, else the tuned value, else the base setting."""
    for column in (axis_column(AXIS), tuned_column(AXIS)):
        if column in row and pd.notna(row[column]):
            return float(row[column])
    return ctx.spec.base_config.batching.effective_alpha


def per_language_rows(ctx: ReportContext) -> pd.DataFrame:
    """One row per (trial, dataset, low-resource language) from the stored matrices."""
    wanted = [canonical(code) for code in ctx.settings.low_resource_languages]
    rows = []
    for cell, group in representative_trials(ctx).items():
        for _, trial in group.iterrows():
            for dataset, tables in ctx.store.matrices(trial[TRIAL_ID]).items():
                cross = tables.get(MAP)
                multi = tables.get(MULTILINGUAL)
                for lang in wanted:
                    if cross is None or lang not in cross.index:
                        continue
                    rows.append({CELL: cell, TRIAL_ID: trial[TRIAL_ID], "alpha": _alpha(ctx, trial),
                                 DATASET: dataset, "language": lang, **_language_values(cross, multi, lang)})
    return pd.DataFrame(rows)


def _language_values(cross: pd.DataFrame, multi: pd.DataFrame | None, lang: str) -> dict:
    """One language's row of the matrices: cross (its row off the diagonal), mono, multi, bias."""
    off_diagonal = cross.loc[lang].drop(labels=[lang], errors="ignore")
    in_multi = multi is not None and lang in multi.index
    return {
        CROSS_MAP: float(off_diagonal.mean()),
        MONO_MAP: float(cross.loc[lang, lang]) if lang in cross.columns else np.nan,
        MULTI_MAP: float(multi.loc[lang, MAP]) if in_multi else np.nan,
        RANK_DISTANCE: float(multi.loc[lang, RANK_DISTANCE]) if in_multi and RANK_DISTANCE in multi else np.nan,
    }


def _zero_shot_rows(ctx: ReportContext) -> tuple[list[dict], list[dict]]:
    """The untrained model's ratio rows and per-language rows (empty without a zero-shot run)."""
    wanted = [canonical(code) for code in ctx.settings.low_resource_languages]
    summary, per_language = [], []
    for dataset, tables in zero_shot_matrices(ctx).items():
        cross, multi = tables.get(MAP), tables.get(MULTILINGUAL)
        values = {lang: _language_values(cross, multi, lang) for lang in wanted if cross is not None and lang in cross.index}
        if not values:
            continue
        per_language += [{DATASET: dataset, "language": lang, **v} for lang, v in values.items()]
        crosses = {lang: v[CROSS_MAP] for lang, v in values.items()}
        worst = min(crosses, key=crosses.get)
        summary.append({
            DATASET: dataset, "languages": " ".join(values), "mean_cross_map": np.mean(list(crosses.values())),
            "worst_language": worst, "worst_cross_map": crosses[worst],
            "spread_max_minus_min": max(crosses.values()) - min(crosses.values()),
            "spread_std": float(np.std(list(crosses.values()))),
            "mean_multi_map": np.mean([v[MULTI_MAP] for v in values.values()]),
            RANK_DISTANCE: np.mean([v[RANK_DISTANCE] for v in values.values()]),
            **{f"cross_map/{lang}": value for lang, value in crosses.items()},
        })
    return summary, per_language


def build(ctx: ReportContext) -> dict[str, pd.DataFrame]:
    per_language = per_language_rows(ctx)
    if per_language.empty:
        return {"ratio": pd.DataFrame(), "ratio_per_language": per_language}
    # Across seeds first (mean per language), then across languages.
    by_language = (
        per_language.groupby(["alpha", DATASET, "language"], as_index=False)
        .agg(**{m: (m, "mean") for m in (CROSS_MAP, MULTI_MAP, MONO_MAP, RANK_DISTANCE)}, n_seeds=(TRIAL_ID, "nunique"))
    )
    rows = []
    for (alpha, dataset), group in by_language.groupby(["alpha", DATASET], sort=True):
        worst = group.loc[group[CROSS_MAP].idxmin()]
        seeds = per_language[(per_language["alpha"] == alpha) & (per_language[DATASET] == dataset)]
        per_seed_worst = seeds.groupby(TRIAL_ID)[CROSS_MAP].min()
        mean, low, high, n = mean_ci(per_seed_worst)
        row = {
            "alpha": alpha, DATASET: dataset, "languages": " ".join(group["language"]),
            "mean_cross_map": group[CROSS_MAP].mean(),
            "worst_language": worst["language"], "worst_cross_map": worst[CROSS_MAP],
            "worst_cross_map_ci_low": low, "worst_cross_map_ci_high": high,
            "spread_max_minus_min": group[CROSS_MAP].max() - group[CROSS_MAP].min(),
            "spread_std": group[CROSS_MAP].std(ddof=0),
            "mean_multi_map": group[MULTI_MAP].mean(),
            RANK_DISTANCE: group[RANK_DISTANCE].mean(), "n_seeds": n,
        }
        row.update({f"cross_map/{lang}": value for lang, value in zip(group["language"], group[CROSS_MAP])})
        rows.append(row)
    table = pd.DataFrame(rows)
    for dataset, group in table.groupby(DATASET):
        plot_curves(group.rename(columns={"worst_cross_map": "worst"}).assign(
            worst_ci_low=group["worst_cross_map_ci_low"], worst_ci_high=group["worst_cross_map_ci_high"]),
            "alpha", "worst", None, ctx.out_dir / f"ratio_worst_{dataset}.png",
            f"{ctx.spec.name}: worst low-resource language cross-lingual mAP vs alpha ({dataset})",
            xlabel="alpha (share of X-X batches)")
        plot_curves(by_language[by_language[DATASET] == dataset], "alpha", CROSS_MAP, "language",
                    ctx.out_dir / f"ratio_per_language_{dataset}.png",
                    f"{ctx.spec.name}: per-language cross-lingual mAP vs alpha ({dataset})",
                    xlabel="alpha (share of X-X batches)")
    zero_summary, zero_languages = _zero_shot_rows(ctx)
    if zero_summary:  # the untrained starting model, and every row's change against it
        metrics = ["mean_cross_map", "worst_cross_map", "mean_multi_map", RANK_DISTANCE,
                   *[c for c in table.columns if c.startswith("cross_map/")]]
        table = add_zero_shot(table, zero_summary, metrics, [DATASET])
        by_language = add_zero_shot(by_language, zero_languages, [CROSS_MAP, MULTI_MAP, MONO_MAP, RANK_DISTANCE],
                                    [DATASET, "language"])
    return {"ratio": table, "ratio_per_language": by_language}


class RatioSettings(QuestionSettings):
    low_resource_languages: list[str] = Field(
        default_factory=lambda: ["th", "hi", "el", "tr", "vi"],
        description="the languages whose cross-lingual mAP the report follows (each must be evaluated)",
    )


def check(spec) -> None:
    """Every low-resource language is scored by the final evaluation."""
    from study.checks import StudyConfigError, canonical_code, final_languages

    evaluated = final_languages(spec)
    for index, code in enumerate(spec.report.settings.low_resource_languages):
        if canonical_code(code, f"report.low_resource_languages[{index}]") not in evaluated:
            raise StudyConfigError(
                f"report.low_resource_languages[{index}]: {code!r} is not evaluated by evaluation.final"
            )


register(Question(
    name="ratio", summary="Q5: the X-X share alpha vs robustness on low-resource languages",
    build=build, settings=RatioSettings, check=check,
))
