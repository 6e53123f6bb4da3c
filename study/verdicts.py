"""Verdicts on a study's claims: paired statistics on the stored per-query results.

Each claim of ``study.yaml`` (:class:`study.spec.Claim`) becomes a linear contrast over grid
cells (A - B, or an OLS slope over an axis), computed by
:func:`hybridir.evaluation.significance.paired_contrast` on the per-query rows of each
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

from hybridir.evaluation.significance import (
    LOWER_IS_BETTER,
    ContrastResult,
    apply_holm,
    paired_contrast,
    run_statistic,
    slope_weights,
)
from hybridir.languages import canonical
from study.question import get_question, selector_keywords
from study.questions.common import ReportContext, representative_trials
from study.spec import Claim
from study.vocabulary import SEEDS

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
        """{seed label: per-query rows of the claim's dataset} of one cell; raises
        ClaimNotTestable when the cell has no run with per-query results."""
        group = self.representatives.get(cell)
        if group is None or group.empty:
            raise ClaimNotTestable(f"cell {cell_label(self.ctx, cell)} has no completed run yet")
        runs = {}
        for _, trial in group.iterrows():
            rows = self._trial_rows(trial["trial_id"])
            if rows is None:
                continue
            rows = rows[rows["dataset"] == claim.dataset] if "dataset" in rows else rows
            if claim.involving:
                wanted = {canonical(code) for code in claim.involving}
                rows = rows[rows["query_lang"].isin(wanted) | rows["candidate_lang"].isin(wanted)]
            if rows.empty:
                continue
            # Seed re-runs share seeds across cells (paired per-seed contrasts); a search
            # trial stands alone under its own id.
            seed = trial.get("seed")
            fixed_config = not self.ctx.spec.tune  # every run of the cell is the same config
            if fixed_config and pd.isna(seed):
                seed = self.ctx.spec.base_seed  # a search trial runs at the base seed
            paired = trial.get("phase") == SEEDS or fixed_config
            label = int(seed) if paired and pd.notna(seed) else str(trial["trial_id"])
            runs[label] = rows
        if not runs:
            raise ClaimNotTestable(
                f"cell {cell_label(self.ctx, cell)}: no per-query results for {claim.dataset} "
                f"({len(group)} run(s), results/per_query/<trial_id>.parquet missing)"
            )
        return runs


def _matching_cells(ctx: ReportContext, selector: dict) -> list[int]:
    cells = ctx.spec.cells() or [{}]
    return [i for i, axes in enumerate(cells)
            if all(axes.get(path) == value for path, value in selector.items() if value not in selector_keywords())]


def _chosen_cells(ctx: ReportContext, runs: _Runs, claim: Claim, selector: dict) -> list[int]:
    """The cells one side of a comparison stands for (a keyword picks one per group)."""
    matching = _matching_cells(ctx, selector)
    keyword_axes = [path for path, value in selector.items() if value in selector_keywords()]
    if not keyword_axes:
        return matching
    path = keyword_axes[0]
    keyword = selector[path]
    cells = ctx.spec.cells()
    open_axes = [p for p in ctx.spec.axes if p not in selector]
    groups: dict[tuple, list[int]] = {}
    for cell in matching:
        groups.setdefault(tuple(repr(cells[cell][p]) for p in open_axes), []).append(cell)
    owner = selector_keywords()[keyword]
    if owner is not None:  # a question's own keyword (study.question.Selector)
        rule = get_question(owner).selectors[keyword]
        selected = rule.cells(ctx)
        chosen = []
        for members in groups.values():
            picks = [c for c in members if c in selected]
            if not picks:
                raise ClaimNotTestable(f"no {keyword} {rule.description} yet among "
                                       f"{[cell_label(ctx, c) for c in members]}")
            chosen += picks
        return chosen
    chosen = []
    for members in groups.values():
        scored = {}
        for cell in members:
            try:
                frames = runs.cell_runs(cell, claim).values()
            except ClaimNotTestable:
                continue
            scored[cell] = np.mean([run_statistic(f, claim.setting, claim.measure) for f in frames])
        if not scored:
            raise ClaimNotTestable(f"no cell with results among {[cell_label(ctx, c) for c in members]}")
        pick = min if claim.measure in LOWER_IS_BETTER else max
        chosen.append(pick(scored, key=scored.get))
    return chosen


def claim_weights(ctx: ReportContext, runs: _Runs, claim: Claim) -> dict[int, float]:
    """cell -> contrast weight (cells of weight 0 dropped)."""
    weights: dict[int, float] = {}
    if claim.compare is not None:
        for selector, sign in ((claim.compare.a, 1.0), (claim.compare.b, -1.0)):
            cells = _chosen_cells(ctx, runs, claim, selector)
            if not cells:
                raise ClaimNotTestable(f"no grid cell matches {selector}")
            for cell in cells:
                weights[cell] = weights.get(cell, 0.0) + sign / len(cells)
    else:
        axis, cells = claim.slope.axis, ctx.spec.cells()
        members = [c for c in _matching_cells(ctx, claim.slope.where) if cells[c][axis] >= claim.slope.from_]
        by_x: dict[float, list[int]] = {}
        for cell in members:
            by_x.setdefault(float(cells[cell][axis]), []).append(cell)
        per_x = slope_weights({x: x for x in by_x})
        for x, group in by_x.items():  # other open axes: averaged at each x
            for cell in group:
                weights[cell] = per_x[x] / len(group)
    weights = {cell: w for cell, w in weights.items() if abs(w) > 1e-12}
    if not weights:
        raise SameCells(", ".join(cell_label(ctx, c) for c in _chosen_cells(ctx, runs, claim, claim.compare.a)))
    return weights


def _cells_text(ctx: ReportContext, claim: Claim, weights: dict[int, float]) -> str:
    if claim.slope is not None:
        values = sorted({ctx.spec.cells()[c][claim.slope.axis] for c in weights})
        return f"slope over {claim.slope.axis} = {', '.join(map(str, values))}"
    side = lambda sign: " + ".join(cell_label(ctx, c) for c, w in weights.items() if np.sign(w) == sign)  # noqa: E731
    return f"({side(1)}) - ({side(-1)})"


def compute_verdicts(ctx: ReportContext, n_resamples: int = 4000, n_permutations: int = 9999) -> pd.DataFrame:
    """One row per claim: the contrast, its CI, Holm p over all tested claims, the verdict."""
    runs = _Runs(ctx)
    tested: list[tuple[int, ContrastResult]] = []
    rows: list[dict] = []
    for index, claim in enumerate(ctx.spec.claims):
        row = {"claim": claim.id, "statement": claim.statement, "dataset": claim.dataset, "setting": claim.setting,
               "measure": claim.measure, "direction": claim.direction, "margin": claim.margin,
               "involving": " ".join(claim.involving or [])}
        try:
            if claim.untestable:
                raise ClaimNotTestable(f"not testable in this run: {claim.untestable}")
            weights = claim_weights(ctx, runs, claim)
            cell_runs = {cell_label(ctx, c): runs.cell_runs(c, claim) for c in weights}
            result = paired_contrast(
                cell_runs, {cell_label(ctx, c): w for c, w in weights.items()}, claim.setting, claim.measure,
                margin=claim.margin if claim.direction == "equivalent" else None,
                n_resamples=n_resamples, n_permutations=n_permutations, seed=index,
            )
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
        claim = ctx.spec.claims[[c.id for c in ctx.spec.claims].index(rows[position]["claim"])]
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
    columns = ["claim", "statement", "dataset", "setting", "measure", "involving", "direction", "margin", "cells",
               "estimate", "ci_low", "ci_high", "ci", "standard_error", "p_value", "p_holm", "hypothesis", "n_items",
               "n_items_dropped", "n_seeds", "min_seeds", "max_seeds", "cell_statistics", "seed_spread", "per_seed_contrasts",
               "mdd", "ci_method", "df", "seed_se", "item_se", "verdict", "reason"]
    return pd.DataFrame(rows, columns=columns)


def write_verdicts(ctx: ReportContext, out_dir: Path) -> pd.DataFrame:
    table = compute_verdicts(ctx)
    table.to_csv(Path(out_dir) / VERDICT_FILE, index=False)
    return table


def _number(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and np.isfinite(value) else ""


def verdict_markdown(table: pd.DataFrame) -> list[str]:
    """The report's opening table; a claim without a number says why instead."""
    if table.empty:
        return ["No claims in this study (add `claims:` to its YAML, see study/README.md)."]
    lines = ["| claim | cells | metric | difference | 95% CI | p (Holm) | n items x n seeds | verdict "
             "| smallest detectable difference |", "|" + "---|" * 9]
    for row in table.to_dict("records"):
        metric = f"{row['dataset']} {row['setting']} {'mAP' if row['measure'] == 'ap' else row['measure']}"
        if row.get("involving"):
            metric += f" (pairs with {row['involving']})"
        claim = f"**{row['claim']}**: {row['statement']} ({row['direction']}"
        claim += f", margin {row['margin']:g})" if row["direction"] == "equivalent" else ")"
        if row["verdict"] == NOT_TESTED or pd.isna(row.get("min_seeds")):
            cells = row.get("cells") if isinstance(row.get("cells"), str) else ""
            lines.append(f"| {claim} | {cells} | {metric} | {_number(row.get('estimate'))} | | | | "
                         f"**{row['verdict']}**: {row['reason']} | |")
            continue
        low, high = int(row["min_seeds"]), int(row["max_seeds"])
        seeds_text = f"{low}" if low == high else f"{low}-{high}"
        lines.append(
            f"| {claim} | {row['cells']} | {metric} | {_number(row['estimate'])} | {row['ci']} | "
            f"{_number(row['p_holm'], 3)} | {int(row['n_items'])} x {seeds_text} | **{row['verdict']}**: {row['reason']} | "
            f"{_number(row['mdd'])} |"
        )
    lines += ["", "Difference: seed-averaged statistic of the cells (as the LAReQA summary computes it, on the "
              "items all cells share), combined by the claim's contrast. CI and p: one generalized pivotal "
              "quantity over the variance components of seeds (pooled over the cells, S - 1 degrees of freedom "
              "per cell: few seeds widen the interval) and questions (paired across cells), p Holm-adjusted "
              "over the claims above; 1 seed per cell gives no interval (seed-to-seed variance unknown); "
              "smallest detectable difference: 80% power, two-sided 0.05 on t with the contrast's effective "
              "degrees of freedom (docs/metrics.md, \"Paired comparisons and verdicts\"; calibration: "
              "bench/README.md)."]
    return lines


