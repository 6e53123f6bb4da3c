"""Q5: how does the X-X share alpha affect robustness on low-resource languages?

Robustness is followed per language (``report.low_resource_languages``) on every final set that
evaluates the language, with one statistic per evaluator kind, computed from the stored
per-query rows exactly as the claims compute it (:func:`hybridir.evaluation.significance.
run_statistic` on the rows involving the language: the macro average over its language pairs):

* LAReQA sets (XQuAD-R, MLQA-R, AfriQA): cross-lingual mAP of the pairs involving the language;
* bitext sets (FLORES, Tatoeba): accuracy@1 of the directions involving the language.

Per alpha and dataset: each language's value (mean over seeds), the low-resource mean, the worst
language with a 95% t-interval over the seeds' per-run minimum, and the spread. The criterion for
"low-resource" is a published one (:mod:`hybridir.language_resources`: Joshi et al. 2020 classes
0 to ``report.max_resource_class``); the report lists every evaluated language with its class and
whether it meets the criterion.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from hybridir.data.registry import eval_set_kind, eval_set_languages
from hybridir.evaluation.significance import run_statistic
from hybridir.evaluation.vocabulary import BITEXT, CANDIDATE_LANG, CORRECT_AT_1, CROSS, AP, DATASET, QUERY_LANG, SETTING
from hybridir.language_resources import CLASS_NAMES, classify, criterion_text
from hybridir.languages import canonical
from study.question import Question, QuestionSettings, register
from study.questions.common import ReportContext, add_zero_shot, mean_ci, plot_curves, representative_trials, zero_shot_info
from study.vocabulary import CELL, TRIAL_ID, ZERO_SHOT, axis_column, tuned_column

AXIS = "batching.alpha"
# evaluator kind -> (the name of the followed statistic, its per-query setting and column)
STATISTICS = {"lareqa": ("cross_map", CROSS, AP), "bitext": ("bitext_accuracy", BITEXT, CORRECT_AT_1)}


def _alpha(ctx: ReportContext, row: pd.Series) -> float:
    """alpha of a trial: the axis value, else the tuned value, else the base setting."""
    for column in (axis_column(AXIS), tuned_column(AXIS)):
        if column in row and pd.notna(row[column]):
            return float(row[column])
    return ctx.spec.base_config.batching.effective_alpha


def _followed(ctx: ReportContext) -> list[str]:
    return [canonical(code) for code in ctx.settings.low_resource_languages]


def language_values(rows: pd.DataFrame, dataset: str, languages: list[str]) -> list[dict]:
    """One row per followed language the per-query rows of ``dataset`` involve: the dataset
    kind's statistic on the pairs involving that language."""
    kind = eval_set_kind(dataset)
    if kind not in STATISTICS or rows.empty:
        return []
    name, setting, column = STATISTICS[kind]
    part = rows[(rows[DATASET] == dataset) & (rows[SETTING] == setting)] if DATASET in rows else rows[:0]
    if column not in part:
        return []
    part = part[part[column].notna()]
    out = []
    for lang in languages:
        involving = part[(part[QUERY_LANG] == lang) | (part[CANDIDATE_LANG] == lang)]
        if involving.empty:
            continue
        out.append({DATASET: dataset, "metric": name, "language": lang,
                    "value": run_statistic(involving, setting, column)})
    return out


def per_language_rows(ctx: ReportContext) -> pd.DataFrame:
    """One row per (trial, dataset, followed language) from the stored per-query rows."""
    wanted = _followed(ctx)
    rows = []
    for cell, group in representative_trials(ctx).items():
        for _, trial in group.iterrows():
            if not ctx.store.has_per_query(trial[TRIAL_ID]):
                continue
            per_query = ctx.store.per_query(trial[TRIAL_ID])
            for dataset in ctx.final_datasets():
                for value in language_values(per_query, dataset, wanted):
                    rows.append({CELL: cell, TRIAL_ID: trial[TRIAL_ID], "alpha": _alpha(ctx, trial), **value})
    return pd.DataFrame(rows)


def resource_table(ctx: ReportContext) -> pd.DataFrame:
    """Every language the final evaluation scores, per dataset, with its resource class and
    whether it meets the criterion (and whether the report follows it)."""
    followed = set(_followed(ctx))
    rows = []
    for final in ctx.spec.evaluation.final:
        languages = final.languages or eval_set_languages(final.dataset) or []
        for row in classify(languages, ctx.settings.max_resource_class):
            rows.append({DATASET: final.dataset, **row, "followed": row["language"] in followed})
    return pd.DataFrame(rows)


def _summary(per_language: pd.DataFrame, low_resource: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per alpha and dataset: mean, low-resource mean, worst language with its CI over seeds,
    spread, each language; per alpha, dataset and language: the mean over seeds)."""
    by_language = (per_language.groupby(["alpha", DATASET, "metric", "language"], as_index=False)
                   .agg(value=("value", "mean"), n_seeds=(TRIAL_ID, "nunique")))
    rows = []
    for (alpha, dataset, metric), group in by_language.groupby(["alpha", DATASET, "metric"], sort=True):
        worst = group.loc[group["value"].idxmin()]
        runs = per_language[(per_language["alpha"] == alpha) & (per_language[DATASET] == dataset)]
        per_seed_worst = runs.groupby(TRIAL_ID)["value"].min()
        mean, low, high, n = mean_ci(per_seed_worst)
        low_group = group[group["language"].isin(low_resource)]
        row = {"alpha": alpha, DATASET: dataset, "metric": metric, "languages": " ".join(group["language"]),
               "mean": group["value"].mean(),
               "low_resource_mean": low_group["value"].mean() if len(low_group) else np.nan,
               "worst_language": worst["language"], "worst": worst["value"],
               "worst_per_seed_mean": mean, "worst_per_seed_ci_low": low, "worst_per_seed_ci_high": high,
               "spread_max_minus_min": group["value"].max() - group["value"].min(),
               "spread_std": group["value"].std(ddof=0), "n_seeds": n}
        row.update({f"{metric}/{lang}": value for lang, value in zip(group["language"], group["value"])})
        rows.append(row)
    return pd.DataFrame(rows), by_language


def _zero_shot(ctx: ReportContext, low_resource: set[str]) -> tuple[list[dict], list[dict]]:
    """The untrained model's summary rows and per-language rows (empty without a zero-shot run)."""
    if zero_shot_info(ctx) is None or not ctx.store.has_per_query(ZERO_SHOT):
        return [], []
    per_query = ctx.store.per_query(ZERO_SHOT)
    values = [v for dataset in ctx.final_datasets() for v in language_values(per_query, dataset, _followed(ctx))]
    if not values:
        return [], []
    frame = pd.DataFrame(values).assign(alpha=np.nan, **{TRIAL_ID: ZERO_SHOT})
    summary, by_language = _summary(frame.assign(alpha=-1.0), low_resource)
    keep = ["mean", "low_resource_mean", "worst_language", "worst", "spread_max_minus_min"]
    summary = summary[[DATASET, "metric", *keep, *[c for c in summary if "/" in c]]]
    return summary.to_dict("records"), by_language.drop(columns=["alpha", "n_seeds"]).to_dict("records")


def build(ctx: ReportContext) -> dict[str, pd.DataFrame]:
    resources = resource_table(ctx)
    low_resource = set(resources.loc[resources["low_resource"], "language"]) if len(resources) else set()
    per_language = per_language_rows(ctx)
    if per_language.empty:
        return {"ratio": pd.DataFrame(), "ratio_per_language": per_language, "ratio_resource_levels": resources}
    table, by_language = _summary(per_language, low_resource)
    by_language["joshi_class"] = [next(iter(classify([lang])))["joshi_class"] for lang in by_language["language"]]
    by_language["low_resource"] = by_language["language"].isin(low_resource)
    for (dataset, metric), group in table.groupby([DATASET, "metric"]):
        plot_curves(group.rename(columns={"worst_per_seed_mean": "worst", "worst": "worst_of_means",
                                          "worst_per_seed_ci_low": "worst_ci_low",
                                          "worst_per_seed_ci_high": "worst_ci_high"}),
                    "alpha", "worst", None, ctx.out_dir / f"ratio_worst_{dataset}.png",
                    f"{ctx.spec.name}: worst followed language's {metric} vs alpha ({dataset}; 95% CI over seeds)",
                    xlabel="alpha (share of X-X batches)")
        plot_curves(by_language[by_language[DATASET] == dataset], "alpha", "value", "language",
                    ctx.out_dir / f"ratio_per_language_{dataset}.png",
                    f"{ctx.spec.name}: per-language {metric} vs alpha ({dataset})",
                    xlabel="alpha (share of X-X batches)")
    zero_summary, zero_languages = _zero_shot(ctx, low_resource)
    if zero_summary:  # the untrained starting model, and every row's change against it
        metrics = ["mean", "low_resource_mean", "worst", *[c for c in table.columns if "/" in c]]
        table = add_zero_shot(table, zero_summary, metrics, [DATASET, "metric"])
        by_language = add_zero_shot(by_language, zero_languages, ["value"], [DATASET, "metric", "language"])
    return {"ratio": table, "ratio_per_language": by_language, "ratio_resource_levels": resources}


def findings(ctx: ReportContext, tables: dict[str, pd.DataFrame]) -> list[str]:
    """The low-resource criterion and, per evaluation set, which evaluated languages meet it."""
    max_class = ctx.settings.max_resource_class
    resources = tables.get("ratio_resource_levels")
    if resources is None or resources.empty:
        resources = resource_table(ctx)
    lines = [f"- Criterion: {criterion_text(max_class)}; table in hybridir/language_resources.py."]
    for dataset, group in resources.groupby(DATASET, sort=False):
        meets = group[group["low_resource"]]
        others = group[~group["low_resource"]]

        def listed(frame: pd.DataFrame) -> str:
            return ", ".join(f"{r.language} ({'unclassified' if pd.isna(r.joshi_class) else int(r.joshi_class)})"
                             for r in frame.itertuples()) or "none"

        lines.append(f"- {dataset}: meet it: {listed(meets)}; do not: {listed(others)}.")
    followed = [lang for lang in _followed(ctx)]
    stand_ins = sorted({r.language for r in resources.itertuples() if r.language in followed and not r.low_resource})
    if stand_ins:
        classes = {r.language: r.joshi_class for r in resources.itertuples()}
        lines.append("- Followed but NOT low-resource by this criterion (stand-ins for lower-resource languages): "
                     + ", ".join(f"{lang} (class {int(classes[lang])}: {CLASS_NAMES[int(classes[lang])]})"
                                 if pd.notna(classes[lang]) else f"{lang} (unclassified)" for lang in stand_ins) + ".")
    return lines


class RatioSettings(QuestionSettings):
    low_resource_languages: list[str] = Field(
        default_factory=lambda: ["th", "hi", "el", "tr", "vi"],
        description="the languages whose per-language statistics the report follows, on every final set that "
        "evaluates them (each must be evaluated by evaluation.final)",
    )
    max_resource_class: int = Field(
        2, ge=0, le=5, description="the low-resource criterion: Joshi et al. 2020 classes 0 to this "
        "(hybridir/language_resources.py)")


def check(spec) -> None:
    """Every followed language is scored by the final evaluation."""
    from study.checks import StudyConfigError, canonical_code, final_languages

    evaluated = final_languages(spec)
    for index, code in enumerate(spec.report.settings.low_resource_languages):
        if canonical_code(code, f"report.low_resource_languages[{index}]") not in evaluated:
            raise StudyConfigError(
                f"report.low_resource_languages[{index}]: {code!r} is not evaluated by evaluation.final"
            )


register(Question(
    name="ratio", summary="Q5: the X-X share alpha vs robustness on low-resource languages",
    build=build, settings=RatioSettings, check=check, findings=findings,
))
