"""Q1: does zero-shot cross-lingual retrieval degrade as training languages grow past 40?

Per language count and final dataset: cross-lingual mAP, retrieval F1@10 (with the one relevant
passage of a cross-lingual LAReQA query it is 2/11 x R@10, not the QA F1 of extractive QA),
multilingual mAP (with CIs over seeds), the change relative to the reference count (40 by default), and per dataset
the least-squares slope per added language beyond the reference with its 95% CI;
XQuAD-R vs MLQA-R side by side.

Whether the axis binds (``languages_exposure``): per language count, from the exposure the
training loop recorded (``train/exposure/<lang>/<field>``, :meth:`HybridBatchSampler.exposure`),
the training pairs of a trial, the languages that got any, and the evaluation languages' (those
of ``evaluation.final``) share of the training texts (each pair has two: query and passage; an
X-X pair puts both in its language, an X-Y pair one in each), beside the share an even spread
over the trained languages would give. Trials that predate the record count as not recorded
(NaN, ``n_trials_with_exposure`` 0), never as a made-up 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pydantic import Field

from hybridir.batching import EXPOSURE_FIELDS
from hybridir.data.registry import eval_set_languages
from hybridir.languages import canonical

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
from study.vocabulary import CELL, EXPOSURE_PREFIX, ZERO_SHOT, axis_column, final_key, final_prefix

AXIS = "data.num_languages"
METRICS = (CROSS_MAP, "cross_f1@10", MULTI_MAP)


def evaluation_languages(spec) -> list[str]:
    """The languages of the final evaluation sets (a set without ``languages``: all of its own)."""
    langs: list[str] = []
    for final in spec.evaluation.final:
        for code in final.languages or eval_set_languages(final.dataset) or []:
            tag = canonical(code)
            if tag not in langs:
                langs.append(tag)
    return langs


def _exposure(trials: pd.DataFrame) -> dict[str, dict[str, pd.Series]]:
    """lang -> field -> the trials' recorded counts (NaN where a trial has none)."""
    out: dict[str, dict[str, pd.Series]] = {}
    for column in trials.columns:
        if not column.startswith(EXPOSURE_PREFIX):
            continue
        lang, _, field = column[len(EXPOSURE_PREFIX):].rpartition("/")
        if field in EXPOSURE_FIELDS and lang:
            out.setdefault(lang, {})[field] = pd.to_numeric(trials[column], errors="coerce")
    return out


def exposure_table(ctx: ReportContext, representatives: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Per language count: what the evaluation languages trained on, from the recorded exposure
    (mean over the count's trials that recorded it; see the module docstring)."""
    evaluated = evaluation_languages(ctx.spec)
    cells = ctx.spec.cells() or [{}]
    columns = ["num_languages", "evaluation_languages", "n_trials_with_exposure", "training_pairs",
               "languages_with_exposure", "eval_languages_text_share", "even_spread_share",
               "eval_language_texts_per_language"]
    rows = []
    for cell, group in sorted(representatives.items(), key=lambda item: cells[item[0]].get(AXIS, 0)):
        count = cells[cell].get(AXIS)
        counts = _exposure(group)
        zeros = pd.Series(0.0, index=group.index)
        recorded = pd.Series(False, index=group.index)
        pairs, texts_eval = zeros.copy(), zeros.copy()
        languages_seen, eval_seen = zeros.copy(), zeros.copy()
        for lang, fields in counts.items():
            values = {f: fields.get(f, zeros).reindex(group.index) for f in EXPOSURE_FIELDS}
            present = pd.concat(values.values(), axis=1).notna().any(axis=1)
            recorded |= present
            filled = {f: v.fillna(0.0) for f, v in values.items()}
            pairs += filled["xx_pairs"] + filled["xy_query_pairs"]  # every pair has one query language
            involving = filled["xx_pairs"] + filled["xy_query_pairs"] + filled["xy_passage_pairs"]
            languages_seen += (involving > 0).astype(float)
            if lang in evaluated:
                eval_seen += (involving > 0).astype(float)
                texts_eval += 2 * filled["xx_pairs"] + filled["xy_query_pairs"] + filled["xy_passage_pairs"]
        kept = recorded & (pairs > 0)
        row = {"num_languages": count, "evaluation_languages": " ".join(evaluated),
               "n_trials_with_exposure": int(kept.sum())}
        if kept.any():
            share = texts_eval[kept] / (2 * pairs[kept])
            row.update({"training_pairs": float(pairs[kept].mean()),
                        "languages_with_exposure": float(languages_seen[kept].mean()),
                        "eval_languages_text_share": float(share.mean()),
                        # the share if every trained language had the same exposure
                        "even_spread_share": float((eval_seen[kept] / languages_seen[kept]).mean()),
                        # training texts (queries and passages) in an evaluation language, per such language
                        "eval_language_texts_per_language": float(texts_eval[kept].mean() / len(evaluated))})
        else:
            row.update({"training_pairs": np.nan, "languages_with_exposure": np.nan,
                        "eval_languages_text_share": np.nan, "even_spread_share": np.nan,
                        "eval_language_texts_per_language": np.nan})
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def build(ctx: ReportContext) -> dict[str, pd.DataFrame]:
    axis = axis_column(AXIS)
    exposure = exposure_table(ctx, representative_trials(ctx))
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
        return {"languages": pd.DataFrame(), "languages_slope": pd.DataFrame(), "languages_exposure": exposure}
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
    return {"languages": table.reset_index(drop=True), "languages_slope": slope_table, "languages_exposure": exposure}


class LanguagesSettings(QuestionSettings):
    reference_languages: int = Field(40, ge=1, description="the language count the change is relative to")


def findings(ctx: ReportContext, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Which regime the design is in (from the frozen study): a fixed total budget, where more
    training languages dilute each language's share, or exposure that grows with the count; then
    what the evaluation languages actually trained on per count (the recorded exposure)."""
    return _regime_lines(ctx) + exposure_lines(tables.get("languages_exposure")) + _granularity_lines(ctx)


def _granularity_lines(ctx: ReportContext) -> list[str]:
    """How coarse the evaluation languages' exposure is: an X-X batch trains ONE language
    (hybridir/batching.py), so with few steps and many languages they expect less than one X-X
    batch a trial and their recorded share is mostly whether one fell on them."""
    cells = [cell for cell in ctx.spec.cells() if AXIS in cell]
    k = len(evaluation_languages(ctx.spec))
    if not cells or not k:
        return []
    parts = []
    for cell in sorted(cells, key=lambda c: c[AXIS]):
        config = ctx.spec.train_config(cell)
        if config.batching.mode != "hybrid":
            return []
        n = int(cell[AXIS])
        expected = config.batching.alpha * config.max_steps * min(k, n) / n
        parts.append(f"{n}: {expected:.2f}")
    return [f"- Granularity: an X-X batch trains one language (hybridir/batching.py), so the {k} evaluation "
            f"languages together expect alpha x steps x {k} / N X-X batches a trial at N training languages ("
            + ", ".join(parts) + "); where that is about 1 or less, their recorded share above is mostly whether "
            "an X-X batch fell on them (X-Y pairs draw their languages per pair and spread evenly)."]


def exposure_lines(exposure: pd.DataFrame | None) -> list[str]:
    """Whether the axis binds, from the recorded exposure (``languages_exposure``)."""
    if exposure is None or exposure.empty:
        return []
    recorded = exposure[exposure["n_trials_with_exposure"] > 0]
    langs = exposure["evaluation_languages"].iloc[0]
    if recorded.empty:
        return [f"- Recorded exposure: none of these trials recorded train/exposure/* (runs that predate the "
                f"record): the share of training the evaluation languages ({langs}) got is not known."]
    parts = [f"{int(row.num_languages)}: {100 * row.eval_languages_text_share:.1f}% "
             f"(even spread {100 * row.even_spread_share:.1f}%; {row.eval_language_texts_per_language:,.0f} texts each "
             f"of {row.training_pairs:,.0f} pairs, n={int(row.n_trials_with_exposure)})"
             for row in recorded.itertuples()]
    line = (f"- Recorded exposure (train/exposure/*, mean over each count's trials): share of the training texts "
            f"(queries and passages) in the evaluation languages ({langs}) by training-language count: "
            + "; ".join(parts) + ".")
    shares = recorded.set_index("num_languages")["eval_languages_text_share"]
    if len(shares) >= 2:
        first, last = shares.index[0], shares.index[-1]
        ratio = shares[first] / shares[last] if shares[last] > 0 else np.inf
        line += (f" From {int(first)} to {int(last)} languages their share falls {ratio:.1f}-fold"
                 if ratio > 1.05 else f" From {int(first)} to {int(last)} languages their share does not fall "
                 f"(x{shares[last] / shares[first]:.2f}): the axis does not dilute them")
        line += "."
    missing = exposure[exposure["n_trials_with_exposure"] == 0]
    if len(missing):
        line += f" Not recorded at {', '.join(str(int(n)) for n in missing['num_languages'])} languages."
    return [line]


def _regime_lines(ctx: ReportContext) -> list[str]:
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
