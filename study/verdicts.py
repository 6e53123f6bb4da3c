"""Verdicts on a study's claims: paired statistics on the stored per-query results.

Each claim of ``study.yaml`` (:class:`study.spec.Claim`) becomes a linear contrast over grid
cells (A - B, an OLS slope over an axis on a linear or log scale, or arbitrary weights such as
an interaction; :func:`study.spec.claim_cell_weights`) of a per-run statistic (one metric, a
combination of settings within each run, the worst language of a set, or the difference of
two datasets; :mod:`hybridir.evaluation.claim_statistics`), computed by
:func:`hybridir.evaluation.significance.contrast_from_matrices` on the per-query rows of each
cell's representative runs (:func:`study.questions.common.representative_trials`: the
``--seeds`` re-runs of the cell's best configuration, else its best search trial), with the
seed x question variance components and a generalized pivotal quantity. Holm's
correction runs over all claims of the report. Output: ``reports/<study>/verdict.csv`` and
the verdict table that opens ``report.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hybridir.evaluation.claim_statistics import ClaimStatistic, measure_column, run_values, statistic_matrices
from hybridir.evaluation.significance import ContrastResult, apply_holm, contrast_from_matrices, display_digits
from hybridir.evaluation.vocabulary import AP, CANDIDATE_LANG, DATASET, QUERY_LANG, SETTING
from hybridir.languages import canonical
from study.question import get_question, selector_keywords
from study.questions.common import ReportContext, representative_trials
from study.spec import Claim, claim_cell_weights
from study.vocabulary import CLAIM, MEASURE, PHASE, SEED, SEEDS, TRIAL_ID

VERDICT_FILE = "verdict.csv"
NOT_TESTED = "not tested"


class ClaimNotTestable(Exception):
    """The stored results cannot test a claim (yet); the message says why."""


class SameCells(Exception):
    """Both sides resolve to the same cells (e.g. the recommended batch size IS the best)."""


def cell_label(ctx: ReportContext, cell: int) -> str:
    axes = (ctx.spec.cells() or [{}])[cell]
    return ", ".join(f"{path}={value}" for path, value in axes.items()) or "the single cell"


class _Runs:
    """Per-query rows of each cell's representative runs, for one (dataset, languages) view."""

    def __init__(self, ctx: ReportContext):
        self.ctx = ctx
        self.representatives = representative_trials(ctx)
        self._frames: dict[str, pd.DataFrame | None] = {}

    def _trial_rows(self, trial_id: str) -> pd.DataFrame | None:
        if trial_id not in self._frames:
            try:
                self._frames[trial_id] = self.ctx.store.per_query(trial_id)
            except FileNotFoundError:
                self._frames[trial_id] = None
        return self._frames[trial_id]

    def cell_runs(self, cell: int, claim: Claim) -> dict:
        """{seed label: per-query rows of the claim's dataset} of one cell (its ``involving``
        pairs only); raises ClaimNotTestable when the cell has no run with per-query results."""
        runs = self.run_frames(cell, claim, datasets=[claim.dataset])
        if claim.involving:
            wanted = {canonical(code) for code in claim.involving}
            runs = {label: rows[rows[QUERY_LANG].isin(wanted) | rows[CANDIDATE_LANG].isin(wanted)]
                    for label, rows in runs.items()}
            runs = {label: rows for label, rows in runs.items() if not rows.empty}
            if not runs:
                raise ClaimNotTestable(f"cell {cell_label(self.ctx, cell)}: no per-query rows involving "
                                       f"{' '.join(claim.involving)} on {claim.dataset}")
        return runs

    def run_frames(self, cell: int, claim: Claim, datasets: list[str] | None = None) -> dict:
        """{seed label: per-query rows of the claim's datasets (every one of them present)} of
        one cell; raises ClaimNotTestable when the cell has no such run."""
        datasets = claim.datasets if datasets is None else datasets
        group = self.representatives.get(cell)
        if group is None or group.empty:
            raise ClaimNotTestable(f"cell {cell_label(self.ctx, cell)} has no completed run yet")
        runs = {}
        for _, trial in group.iterrows():
            rows = self._trial_rows(trial[TRIAL_ID])
            if rows is None:
                continue
            if DATASET in rows:
                rows = rows[rows[DATASET].isin(datasets)]
                if set(rows[DATASET].unique()) != set(datasets):
                    continue  # a run without one of the datasets has no within-run difference
            elif len(datasets) > 1:
                continue
            if rows.empty:
                continue
            # Seed re-runs share seeds across cells (paired per-seed contrasts); a search
            # trial stands alone under its own id.
            seed = trial.get(SEED)
            fixed_config = not self.ctx.spec.tune  # every run of the cell is the same config
            if fixed_config and pd.isna(seed):
                seed = self.ctx.spec.base_seed  # a search trial runs at the base seed
            paired = trial.get(PHASE) == SEEDS or fixed_config
            label = int(seed) if paired and pd.notna(seed) else str(trial[TRIAL_ID])
            runs[label] = rows
        if not runs:
            raise ClaimNotTestable(
                f"cell {cell_label(self.ctx, cell)}: no per-query results for {' and '.join(datasets)} "
                f"({len(group)} run(s), results/per_query/<trial_id>.parquet missing)"
            )
        return runs


def claim_statistic(claim: Claim) -> ClaimStatistic:
    """The per-run statistic of a claim (:mod:`hybridir.evaluation.claim_statistics`)."""
    datasets = {claim.dataset: 1.0}
    if claim.minus_dataset:
        datasets[claim.minus_dataset] = -1.0
    return ClaimStatistic(
        measure=claim.measure, metrics=claim.settings, datasets=datasets,
        worst_of=tuple(canonical(code) for code in claim.worst_language) if claim.worst_language else None,
        involving=tuple(canonical(code) for code in claim.involving) if claim.involving else None,
    )


def _pick_from_results(ctx: ReportContext, runs: _Runs, claim: Claim):
    """A keyword selector's choice among the members of one group, from the results: the
    question's own rule ("recommended"), or the cell of best claim statistic ("best")."""
    statistic = claim_statistic(claim)

    def pick(keyword: str, path: str, members: list[int]) -> list[int]:
        owner = selector_keywords()[keyword]
        if owner is not None:  # a question's own keyword (study.question.Selector)
            rule = get_question(owner).selectors[keyword]
            picks = [c for c in members if c in rule.cells(ctx)]
            if not picks:
                raise ClaimNotTestable(f"no {keyword} {rule.description} yet among "
                                       f"{[cell_label(ctx, c) for c in members]}")
            return picks
        scored = {}
        for cell in members:
            try:
                scored[cell] = float(np.mean(list(run_values(runs.run_frames(cell, claim), statistic).values())))
            except (ClaimNotTestable, ValueError):
                continue
        if not scored:
            raise ClaimNotTestable(f"no cell with results among {[cell_label(ctx, c) for c in members]}")
        best = min if statistic.lower_is_better else max
        return [best(scored, key=scored.get)]

    return pick


def claim_weights(ctx: ReportContext, runs: _Runs, claim: Claim) -> dict[int, float]:
    """cell -> contrast weight (cells of weight 0 dropped), keyword selectors resolved from the
    results. Without results (planning): :func:`study.spec.claim_cell_weights`."""
    try:
        raw = claim_cell_weights(ctx.spec, claim, pick=_pick_from_results(ctx, runs, claim), drop_zero=False)
    except ValueError as exc:
        raise ClaimNotTestable(str(exc)) from None
    weights = {cell: w for cell, w in raw.items() if abs(w) > 1e-12}
    if not weights:  # e.g. the recommended batch size IS the best: a difference of 0 by construction
        raise SameCells(", ".join(cell_label(ctx, c) for c in raw))
    return weights


def _cells_text(ctx: ReportContext, claim: Claim, weights: dict[int, float]) -> str:
    if claim.slope is not None:  # every axis value of the range (an OLS weight may be 0)
        values = sorted({v for v in ctx.spec.axes[claim.slope.axis] if claim.slope.covers(v)})
        scale = "" if claim.slope.scale == "linear" else f" ({claim.slope.scale} scale)"
        return f"slope over {claim.slope.axis} = {', '.join(map(str, values))}{scale}"
    if claim.contrast is not None:
        return " ".join(f"{'-' if w < 0 else '+'}{abs(w):.3g} ({cell_label(ctx, c)})" for c, w in weights.items())
    side = lambda sign: " + ".join(cell_label(ctx, c) for c, w in weights.items() if np.sign(w) == sign)  # noqa: E731
    return f"({side(1)}) - ({side(-1)})"


def compute_verdicts(ctx: ReportContext, n_resamples: int = 4000, n_permutations: int = 9999) -> pd.DataFrame:
    """One row per claim: the contrast, its CI, Holm p over all tested claims, the verdict."""
    runs = _Runs(ctx)
    tested: list[tuple[int, ContrastResult]] = []
    rows: list[dict] = []
    for index, claim in enumerate(ctx.spec.claims):
        row = {CLAIM: claim.id, "statement": claim.statement, DATASET: claim.dataset_text,
               SETTING: claim.setting_text, MEASURE: claim.measure, "direction": claim.direction,
               "margin": claim.margin, "involving": " ".join(claim.involving or []),
               "worst_language": " ".join(claim.worst_language or []), "smallest_effect": claim.smallest_effect}
        try:
            if claim.untestable:
                raise ClaimNotTestable(f"not testable in this run: {claim.untestable}")
            weights = claim_weights(ctx, runs, claim)
            built = statistic_matrices({cell_label(ctx, c): runs.run_frames(c, claim) for c in weights},
                                       claim_statistic(claim))
            result = contrast_from_matrices(
                built.matrices, built.seed_labels, {cell_label(ctx, c): w for c, w in weights.items()},
                claim.setting_text, measure_column(claim.measure), n_items_dropped=built.n_items_dropped,
                item_blocks=built.item_blocks,
                margin=claim.margin if claim.direction == "equivalent" else None,
                n_resamples=n_resamples, n_permutations=n_permutations, seed=index,
            )
            if built.worst:
                row["worst_language_per_run"] = _worst_text(built.worst)
        except (ClaimNotTestable, ValueError) as exc:
            rows.append({**row, "verdict": NOT_TESTED, "reason": str(exc)})
            continue
        except SameCells as exc:
            # A difference of 0 by construction: nothing to test (and no p-value for Holm).
            same = claim.direction == "equivalent"
            rows.append({**row, "cells": str(exc), "estimate": 0.0, "verdict": "supported" if same else NOT_TESTED,
                         "reason": f"both sides are the same cells ({exc}): the difference is 0 by construction"})
            continue
        row["cells"] = _cells_text(ctx, claim, weights)
        rows.append(row)
        tested.append((len(rows) - 1, result))
    for (position, _), result in zip(tested, apply_holm([r for _, r in tested])):
        claim = ctx.spec.claims[[c.id for c in ctx.spec.claims].index(rows[position][CLAIM])]
        verdict = result.verdict(claim.direction, claim.margin if claim.direction == "equivalent" else None)
        rows[position].update({
            "estimate": result.estimate, "ci_low": result.ci_low, "ci_high": result.ci_high, "ci": result.ci_text(),
            "standard_error": result.standard_error, "p_value": result.p_value, "p_holm": result.p_holm,
            "hypothesis": result.hypothesis, "n_items": result.n_items, "n_items_dropped": result.n_items_dropped,
            "n_seeds": " ".join(f"{cell}: {n}" for cell, n in result.n_seeds.items()),
            "min_seeds": result.min_seeds, "max_seeds": max(result.n_seeds.values()),
            "cell_statistics": " ".join(f"{cell}: {v:.4f}" for cell, v in result.cell_statistics.items()),
            "seed_spread": " ".join(f"{cell}: {'unknown (1 seed)' if v is None else f'{v:.4f}'}"
                                    for cell, v in result.seed_spread.items()),
            "per_seed_contrasts": "" if result.per_seed_contrasts is None else " ".join(
                f"seed {s}: {v:.4f}" for s, v in result.per_seed_contrasts.items()),
            "mdd": result.mdd, "ci_method": result.ci_method, "df": result.df, "seed_se": result.seed_se,
            "item_se": result.item_se,
            "verdict": verdict.outcome, "reason": verdict.reason,
        })
        if claim.smallest_effect is not None and np.isfinite(result.mdd):
            rows[position]["detects_smallest_effect"] = bool(result.mdd <= claim.smallest_effect)
    columns = [CLAIM, "statement", DATASET, SETTING, MEASURE, "involving", "worst_language",
               "worst_language_per_run", "direction", "margin", "smallest_effect", "cells",
               "estimate", "ci_low", "ci_high", "ci", "standard_error", "p_value", "p_holm", "hypothesis", "n_items",
               "n_items_dropped", "n_seeds", "min_seeds", "max_seeds", "cell_statistics", "seed_spread", "per_seed_contrasts",
               "mdd", "detects_smallest_effect", "ci_method", "df", "seed_se", "item_se", "verdict", "reason"]
    return pd.DataFrame(rows, columns=columns)


def _worst_text(worst: dict) -> str:
    """How often each language was the worst, per dataset: "en x2, th x1" over the runs."""
    counts: dict[str | None, dict[str, int]] = {}
    for by_dataset in worst.values():
        for dataset, language in by_dataset.items():
            counts.setdefault(dataset, {})[language] = counts.setdefault(dataset, {}).get(language, 0) + 1
    parts = []
    for dataset, languages in counts.items():
        text = ", ".join(f"{lang} x{n}" for lang, n in sorted(languages.items(), key=lambda kv: (-kv[1], kv[0])))
        parts.append(f"{dataset}: {text}" if dataset and len(counts) > 1 else text)
    return "; ".join(parts)


def write_verdicts(ctx: ReportContext, out_dir: Path) -> pd.DataFrame:
    table = compute_verdicts(ctx)
    table.to_csv(Path(out_dir) / VERDICT_FILE, index=False)
    return table


def number_text(value, digits: int | None = None, scale: tuple = (), significant: int = 2) -> str:
    """``value`` with ``digits`` decimals (default: display_digits of it and ``scale``); "" when
    missing (verdict tables and the findings' answers print numbers through it)."""
    if not (isinstance(value, (int, float)) and np.isfinite(value)):
        return ""
    digits = display_digits(value, *scale, significant=significant) if digits is None else digits
    return f"{value:.{digits}f}"


def verdict_markdown(table: pd.DataFrame) -> list[str]:
    """The report's opening table; a claim without a number says why instead."""
    if table.empty:
        return ["No claims in this study (add `claims:` to its YAML, see study/README.md)."]
    lines = ["| claim | cells | metric | difference | 95% CI | p (Holm) | n items x n seeds | verdict "
             "| smallest detectable difference |", "|" + "---|" * 9]
    for row in table.to_dict("records"):
        metric = f"{row[DATASET]} {row[SETTING]} {'mAP' if row[MEASURE] == AP else row[MEASURE]}"
        if _text(row.get("involving")):
            metric += f" (pairs with {row['involving']})"
        if _text(row.get("worst_language")):
            metric += f" (worst of {row['worst_language']}"
            metric += f"; worst per run: {row['worst_language_per_run']})" if _text(row.get("worst_language_per_run")) \
                else ")"
        claim = f"**{row[CLAIM]}**: {row['statement']} ({row['direction']}"
        claim += f", margin {row['margin']:g})" if row["direction"] == "equivalent" else ")"
        if row["verdict"] == NOT_TESTED or pd.isna(row.get("min_seeds")):
            cells = row.get("cells") if isinstance(row.get("cells"), str) else ""
            lines.append(f"| {claim} | {cells} | {metric} | {number_text(row.get('estimate'))} | | | | "
                         f"**{row['verdict']}**: {row['reason']} | |")
            continue
        low, high = int(row["min_seeds"]), int(row["max_seeds"])
        seeds_text = f"{low}" if low == high else f"{low}-{high}"
        reason = row["reason"]
        detects = row.get("detects_smallest_effect")
        if isinstance(detects, (bool, np.bool_)) and not detects:
            reason += (f"; design cannot detect the named effect (smallest detectable difference "
                       f"{number_text(row['mdd'], significant=3)} > smallest_effect {row['smallest_effect']:g})")
        lines.append(
            f"| {claim} | {row['cells']} | {metric} | {number_text(row['estimate'], scale=(row['ci_low'], row['ci_high']))} | {row['ci']} | "
            f"{number_text(row['p_holm'], 3)} | {int(row['n_items'])} x {seeds_text} | **{row['verdict']}**: {reason} | "
            f"{number_text(row['mdd'], significant=3)} |"
        )
    lines += ["", "Difference: seed-averaged statistic of the cells (as the LAReQA summary computes it, on the "
              "items all cells share), combined by the claim's contrast. CI and p: one generalized pivotal "
              "quantity over the variance components of seeds (pooled over the cells, S - 1 degrees of freedom "
              "per cell: few seeds widen the interval) and questions (paired across cells), p Holm-adjusted "
              "over the claims above; 1 seed per cell gives no interval (seed-to-seed variance unknown); "
              "smallest detectable difference: 80% power, two-sided 0.05 on t with the contrast's effective "
              "degrees of freedom (docs/metrics.md, \"Paired comparisons and verdicts\"; calibration: "
              "bench/README.md)."]
    special = table[(table[SETTING].astype(str).str.contains(" ")) | (table[DATASET].astype(str).str.contains(" - "))
                    | (table["worst_language"].fillna("").astype(str) != "")] if "worst_language" in table else table[:0]
    if not special.empty:
        lines += ["", "Claims on a combination of settings (\"multi - cross\"), on a difference of two datasets "
                  "(\"xquad-r - mlqa-r\", the same runs: per-run differences) or on the worst language of a set "
                  "(per run the minimum) use that per-run statistic in place of one metric (docs/metrics.md, "
                  "\"Claim statistics\")."]
    lines += comparable_notes(table)
    return lines


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def comparable_notes(table: pd.DataFrame) -> list[str]:
    """A sentence per claim whose statement calls the cells "comparable" but which is tested
    as a direction: a published "comparable" is an equivalence claim, and a difference that is
    not significant is no evidence of it."""
    notes = []
    for row in table.to_dict("records"):
        if "comparable" in str(row["statement"]).lower() and row["direction"] != "equivalent":
            notes.append(f"Claim **{row[CLAIM]}** says \"comparable\" but is tested as direction "
                         f"'{row['direction']}': a published \"comparable\" should be an equivalence claim "
                         "(`direction: equivalent` with a `margin`, the largest difference that still counts as "
                         "comparable); a difference that is not significant is not evidence that the cells are "
                         "comparable.")
    return ["", *notes] if notes else []


