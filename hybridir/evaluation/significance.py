"""Paired comparisons of study cells on per-query LAReQA results, pooling seeds.

A study cell (one point of a grid) is represented by S >= 1 runs (seeds); each run's final
evaluation gives per-query rows (``LareqaResult.per_query``). This module turns the rows of
several cells into one linear contrast ``sum_c w_c * statistic_c`` (a difference A - B:
weights +1 / -1; a slope over an axis: OLS weights), with

* a point estimate that reproduces the LAReQA summary numbers exactly (per-run statistic =
  the macro average over language-pair cells of per-cell means, see :func:`run_statistic`);
* a 95% CI and a p-value that carry both sources of variance, seeds (the replication unit of
  training, per cell) and items (the replication unit of evaluation, paired across cells: the
  item id is a question shared by all languages), from the crossed seeds x items variance
  decomposition of :mod:`hybridir.evaluation.seed_item_variance` with a small-sample reference:
  the generalized pivotal quantity (default, ``method="gpq"``) or a t reference on
  Satterthwaite's degrees of freedom (``method="satterthwaite"``);
* Holm's correction over the comparisons of one report, the minimum detectable difference,
  and a verdict for a directional or equivalence claim.

The previous method (a two-level percentile bootstrap for the CI, a sign-flip test on
seed-averaged item contrasts for p) stays reachable as ``method="bootstrap-legacy"``: its
false positive rate at 2 seeds per cell is several times the nominal 5% (bench/calibration.py).

Formulas: docs/metrics.md, "Paired comparisons and verdicts". Pure numpy / pandas / scipy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from hybridir.evaluation.seed_item_variance import GeneralizedPivot, TReference, contrast_variance
from hybridir.evaluation.vocabulary import (
    AP,
    BITEXT,
    CANDIDATE_LANG,
    CORRECT_AT_1,
    DATASET,
    MULTI,
    QUERY_ID,
    QUERY_LANG,
    RANK_DISTANCE,
    SETTING,
    SETTINGS,
    public_metric,
)
from hybridir.evaluation.vocabulary import summary_key as reported_key

# The setting of bitext per-query rows (hybridir.evaluation.bitext): one per direction.
BITEXT_SETTING = BITEXT
# Per-query columns a contrast can be computed on; rank_distance exists in the multi setting only.
MEASURES = (AP, "r@1", "p@1", "f1@1", "r@10", "p@10", "f1@10", "ndcg@10", RANK_DISTANCE)
# The columns of bitext rows (correct@1: accuracy@1; ap: reciprocal rank).
BITEXT_MEASURES = (CORRECT_AT_1, AP)
LOWER_IS_BETTER = frozenset({RANK_DISTANCE})
Direction = Literal["greater", "less", "equivalent"]
Outcome = Literal["supported", "contradicted", "inconclusive"]
Method = Literal["gpq", "satterthwaite", "bootstrap-legacy"]
METHODS = ("gpq", "satterthwaite", "bootstrap-legacy")
DEFAULT_METHOD: Method = "gpq"

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
CELL_KEYS = [QUERY_LANG, CANDIDATE_LANG]
ITEM = QUERY_ID


def summary_key(setting: str, measure: str) -> str:
    """The ``LareqaResult.summary`` key that :func:`run_statistic` reproduces."""
    if measure == RANK_DISTANCE:
        return RANK_DISTANCE
    if setting == BITEXT_SETTING and measure == CORRECT_AT_1:
        return "accuracy"
    return reported_key(setting, public_metric(measure))


def _check_rows(per_query: pd.DataFrame, setting: str, measure: str) -> None:
    if setting not in (*SETTINGS, BITEXT_SETTING):
        raise ValueError(f"setting {setting!r} unknown; choose from {(*SETTINGS, BITEXT_SETTING)}")
    if setting == BITEXT_SETTING:
        if measure not in BITEXT_MEASURES:
            raise ValueError(f"measure {measure!r} does not exist in bitext rows; choose from {BITEXT_MEASURES}")
    elif measure not in MEASURES:
        raise ValueError(f"measure {measure!r} unknown; choose from {MEASURES}")
    if measure == RANK_DISTANCE and setting != MULTI:
        raise ValueError(f"measure 'rank_distance' exists in the multi setting only, not {setting!r}")
    missing = sorted({SETTING, *CELL_KEYS, ITEM, measure} - set(per_query.columns))
    if missing:
        raise ValueError(f"per-query rows lack columns {missing} (have {list(per_query.columns)})")
    if DATASET in per_query.columns and per_query[DATASET].nunique() > 1:
        raise ValueError(f"per-query rows mix datasets {sorted(per_query[DATASET].unique())}; pass one dataset")


def _usable_rows(per_query: pd.DataFrame, setting: str, measure: str) -> pd.DataFrame:
    _check_rows(per_query, setting, measure)
    rows = per_query[per_query[SETTING] == setting]
    # Rank distance is undefined (NaN) for single-relevant queries; the summary skips them.
    return rows[rows[measure].notna()]


def item_contributions(
    per_query: pd.DataFrame, setting: str, measure: str, items: Sequence[Hashable] | None = None
) -> pd.Series:
    """d_item: each item's share of the run statistic, indexed by item id; they sum to it.

    Row r of language-pair cell k gets weight 1 / (K * n_k) (K cells, n_k rows in k), so
    ``sum(d_item)`` is the macro average over cells of the per-cell means, i.e. the LAReQA
    summary value. For rank_distance the cells are the query languages and NaN rows are left
    out (as in the summary). ``items``: restrict to these ids first (rows of other items are
    dropped and the weights recomputed on what is left, so the statistic stays a proper macro
    average over the shared items).
    """
    rows = _usable_rows(per_query, setting, measure)
    if items is not None:
        rows = rows[rows[ITEM].isin(set(items))]
    if rows.empty:
        raise ValueError(f"no per-query rows for setting={setting!r}, measure={measure!r}")
    keys = [QUERY_LANG] if measure == RANK_DISTANCE else CELL_KEYS
    cell_size = rows.groupby(keys, sort=False)[ITEM].transform("size").to_numpy(dtype=float)
    n_cells = rows.groupby(keys, sort=False).ngroups
    weighted = rows[measure].to_numpy(dtype=float) / (n_cells * cell_size)
    return pd.Series(weighted, index=rows[ITEM].to_numpy()).groupby(level=0, sort=True).sum()


def run_statistic(per_query: pd.DataFrame, setting: str, measure: str) -> float:
    """The statistic of one run: equals ``LareqaResult.summary[summary_key(setting, measure)]``."""
    return float(item_contributions(per_query, setting, measure).sum())


def difference_weights(a: str, b: str) -> dict[str, float]:
    """Contrast weights of A - B."""
    if a == b:
        raise ValueError(f"a difference needs two different cells, got {a!r} twice")
    return {a: 1.0, b: -1.0}


def slope_weights(axis_values: Mapping[str, float]) -> dict[str, float]:
    """OLS slope weights ``(x_c - mean x) / sum (x - mean x)^2``: ``sum_c w_c y_c`` is the
    least-squares slope of y on x over the cells (one point per cell)."""
    x = np.asarray(list(axis_values.values()), dtype=float)
    if len(x) < 2 or not np.all(np.isfinite(x)) or np.ptp(x) == 0:
        raise ValueError(f"a slope needs >= 2 cells with distinct finite axis values, got {dict(axis_values)}")
    centred = x - x.mean()
    return dict(zip(axis_values, centred / (centred @ centred)))


def minimum_detectable_difference(
    standard_error: float, alpha: float = ALPHA, power: float = POWER, df: float = float("inf")
) -> float:
    """(q_{1-alpha/2} + q_{power}) * SE: the true |contrast| a two-sided level-alpha test
    detects with probability ``power``; q are quantiles of t with ``df`` degrees of freedom
    (the normal when df is infinite)."""
    ppf = stats.norm.ppf if not np.isfinite(df) else (lambda q: stats.t.ppf(q, df))
    return float((ppf(1 - alpha / 2) + ppf(power)) * standard_error)


def design_mdd(
    weights: Mapping[str, float], seeds: Mapping[str, int] | int, seed_sd: float, item_se: float = 0.0,
    n_items: int | None = None, alpha: float = ALPHA, power: float = POWER,
) -> float:
    """The minimum detectable difference of a planned design (before it runs): see
    :func:`hybridir.evaluation.seed_item_variance.design_standard_error` for the arguments."""
    from hybridir.evaluation.seed_item_variance import design_standard_error

    se, df = design_standard_error(weights, seeds, seed_sd, item_se, n_items)
    return minimum_detectable_difference(se, alpha, power, df)


def holm(p_values: Sequence[float], *, skip_nan: bool = False) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels ``multipletests(method="holm")``).

    ``skip_nan``: NaN entries (comparisons without a test, e.g. 1 seed per cell) stay NaN and
    are not counted in the family."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p
    tested = np.isfinite(p) if skip_nan else np.ones(p.shape, dtype=bool)
    if np.any(~np.isfinite(p[tested])) or np.any((p[tested] < 0) | (p[tested] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    adjusted = np.full(p.shape, np.nan)
    if tested.any():
        adjusted[tested] = multipletests(p[tested], method="holm")[1]
    return adjusted


def display_digits(*values: float | None, digits: int = 4, significant: int = 2) -> int:
    """Decimals to print ``values`` with: ``digits``, or more when the largest finite non-zero
    magnitude among them would otherwise keep fewer than ``significant`` significant digits (a
    slope per added language of 2e-5 prints as -0.000022, not -0.0000)."""
    magnitudes = [abs(float(v)) for v in values
                  if isinstance(v, (int, float)) and math.isfinite(v) and v != 0]
    if not magnitudes:
        return digits
    return max(digits, significant - 1 - math.floor(math.log10(max(magnitudes))))


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str


@dataclass(frozen=True)
class ContrastResult:
    """One linear contrast over study cells; see :func:`paired_contrast`.

    ``p_value`` tests ``hypothesis``: "contrast = 0" (two-sided) without a margin; with an
    equivalence margin m, the equivalence test (TOST) when |estimate| <= m, else the one-sided
    test of exceeding the margin on the estimate's side. ``p_holm`` = ``p_value`` until
    :func:`apply_holm` adjusts it within a family of comparisons.
    """

    estimate: float
    ci_low: float
    ci_high: float
    standard_error: float
    p_value: float
    p_holm: float
    hypothesis: str
    margin: float | None
    n_items: int
    n_items_dropped: int
    n_seeds: dict[str, int]
    cell_statistics: dict[str, float]
    seed_spread: dict[str, float | None]
    per_seed_contrasts: dict[Hashable, float] | None
    mdd: float
    weights: dict[str, float]
    setting: str
    measure: str
    confidence: float = CONFIDENCE
    ci_method: str = ""
    df: float = float("inf")
    seed_se: float = float("nan")
    item_se: float = float("nan")
    method: str = ""
    item_contrasts: np.ndarray = field(default=None, repr=False, compare=False)

    @property
    def min_seeds(self) -> int:
        return min(self.n_seeds.values())

    def ci_text(self, digits: int | None = None) -> str:
        """The CI as text; never "nan": says why when there is no interval. ``digits``: decimals
        (default: :func:`display_digits` of the bounds, 4 unless they are below 0.001)."""
        if not (np.isfinite(self.ci_low) and np.isfinite(self.ci_high)):
            if self.min_seeds < 2 and self.method != "bootstrap-legacy":
                return "no interval (1 seed per cell: seed-to-seed variance unknown)"
            return "no interval (no resampling distribution)"
        digits = display_digits(self.ci_low, self.ci_high) if digits is None else digits
        return f"[{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"

    def verdict(self, direction: Direction, margin: float | None = None) -> Verdict:
        """supported / contradicted / inconclusive, with the reason (docs/metrics.md).

        supported: every cell has >= 2 seeds, the CI lies entirely on the claimed side (of 0;
        for ``equivalent``: inside [-margin, margin]) and the Holm-adjusted p < 0.05;
        contradicted: the CI lies entirely on the other side (outside the margin) with Holm
        p < 0.05; else inconclusive.
        """
        if direction not in ("greater", "less", "equivalent"):
            raise ValueError(f"direction {direction!r} unknown; choose greater, less or equivalent")
        if direction == "equivalent":
            if margin is None or margin <= 0:
                raise ValueError(f"an equivalence verdict needs margin > 0, got {margin!r}")
            if self.margin is None or not np.isclose(self.margin, margin):
                raise ValueError(
                    f"this result tests {self.hypothesis!r}; compute it with margin={margin} for an equivalence verdict"
                )
        elif self.margin is not None:
            raise ValueError(f"this result tests {self.hypothesis!r}; compute it without a margin for {direction!r}")
        alpha = 1 - self.confidence
        detect = f"design could detect |d| >= {self.mdd:.3g}"
        few = sorted(cell for cell, n in self.n_seeds.items() if n < 2)
        if few:
            counts = sorted({self.n_seeds[c] for c in few})
            return Verdict("inconclusive", f"{'/'.join(map(str, counts))} seed per cell ({', '.join(few)}): "
                                           "seed-to-seed spread unknown")
        if self.n_items < 2:
            return Verdict("inconclusive", f"{self.n_items} shared item: no item-level uncertainty")
        low, high = self.ci_low, self.ci_high
        ci = self.ci_text()
        significant = self.p_holm < alpha
        p_text = f"Holm p = {self.p_holm:.3g}"
        if direction == "equivalent":
            inside = -margin <= low and high <= margin
            outside = high < -margin or low > margin
            if inside and significant:
                return Verdict("supported", f"CI {ci} inside ±{margin:g}, {p_text}")
            if outside and significant:
                return Verdict("contradicted", f"CI {ci} outside ±{margin:g}, {p_text}")
            if inside or outside:
                return Verdict("inconclusive", f"CI {ci} {'inside' if inside else 'outside'} ±{margin:g} but "
                                               f"{p_text} >= {alpha:g}")
            return Verdict("inconclusive", f"CI {ci} overlaps the margin ±{margin:g} ({detect})")
        claimed_side = low > 0 if direction == "greater" else high < 0
        other_side = high < 0 if direction == "greater" else low > 0
        if claimed_side and significant:
            return Verdict("supported", f"CI {ci} {'above' if direction == 'greater' else 'below'} 0, {p_text}")
        if other_side and significant:
            return Verdict("contradicted", f"CI {ci} {'below' if direction == 'greater' else 'above'} 0, {p_text}")
        if claimed_side or other_side:
            return Verdict("inconclusive", f"CI {ci} excludes 0 but {p_text} >= {alpha:g}")
        return Verdict("inconclusive", f"CI includes 0 ({detect})")


Runs = Mapping[Hashable, pd.DataFrame] | Sequence[pd.DataFrame]


def _as_seed_mapping(cell: str, runs: Runs) -> dict[Hashable, pd.DataFrame]:
    """A cell's runs keyed by seed; a plain sequence is keyed by position."""
    mapping = dict(runs) if isinstance(runs, Mapping) else dict(enumerate(runs))
    if not mapping:
        raise ValueError(f"cell {cell!r} has no runs")
    return mapping


def item_matrices(
    runs: Mapping[str, Runs], setting: str, measure: str
) -> tuple[dict[str, np.ndarray], dict[str, list[Hashable]], list[Hashable], int]:
    """Per cell a (seeds x shared items) matrix of d_item, the seed labels, the shared item ids
    (inner join over every run of every cell) and how many items the join dropped."""
    by_cell = {cell: _as_seed_mapping(cell, cell_runs) for cell, cell_runs in runs.items()}
    item_sets = []
    for cell, seeds in by_cell.items():
        for seed, frame in seeds.items():
            rows = _usable_rows(frame, setting, measure)
            if rows.empty:
                raise ValueError(f"cell {cell!r}, seed {seed!r}: no per-query rows for {setting} {measure}")
            item_sets.append(set(rows[ITEM]))
    shared = sorted(set.intersection(*item_sets), key=str)
    dropped = len(set.union(*item_sets)) - len(shared)
    if not shared:
        raise ValueError(f"the cells {sorted(by_cell)} share no item for {setting} {measure}")
    matrices = {
        cell: np.vstack([item_contributions(frame, setting, measure, shared).reindex(shared).to_numpy()
                         for frame in seeds.values()])
        for cell, seeds in by_cell.items()
    }
    return matrices, {cell: list(seeds) for cell, seeds in by_cell.items()}, shared, dropped


def two_level_bootstrap(
    matrices: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = 4000,
    rng: np.random.Generator | int | None = 0,
    chunk: int = 250,
) -> tuple[float, float, float]:
    """Percentile CI and standard error of ``sum_c w_c * mean_s sum_i D_c[s, i]``.

    Each replicate draws n items with replacement (the SAME draw for every cell: items are
    paired) and, independently per cell, S_c seeds with replacement; returns
    (ci_low, ci_high, standard_error = SD of the replicates, ddof=1).
    """
    rng = np.random.default_rng(rng)
    n_items = next(iter(matrices.values())).shape[1]
    replicates = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        # Item multiplicities of `size` replicates at once: counts[b, i] = times item i is drawn.
        draws = rng.integers(0, n_items, size=(size, n_items)) + n_items * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n_items).reshape(size, n_items).astype(float)
        total = np.zeros(size)
        for cell, matrix in matrices.items():
            run_totals = counts @ matrix.T  # (size, S_c): each seed's statistic on the resampled items
            n_seeds = matrix.shape[0]
            picks = rng.integers(0, n_seeds, size=(size, n_seeds))
            total += weights[cell] * np.take_along_axis(run_totals, picks, axis=1).mean(axis=1)
        replicates[start : start + size] = total
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high), float(replicates.std(ddof=1))


def _sign_flip_p(values: np.ndarray, alternative: str, n_resamples: int, rng) -> float:
    """Paired sign-flip randomisation test of sum(values) (exact when 2^n <= n_resamples)."""
    if np.allclose(values, 0.0):
        return 1.0  # every flip gives the same sum: no evidence in either direction
    result = stats.permutation_test(
        (values,), lambda x, axis: np.sum(x, axis=axis), permutation_type="samples", vectorized=True,
        n_resamples=n_resamples, alternative=alternative, rng=rng,
    )
    return float(result.pvalue)


@dataclass(frozen=True)
class Inference:
    """CI, SE and p-value of one contrast (see :func:`contrast_inference`)."""

    ci_low: float
    ci_high: float
    standard_error: float
    p_value: float
    hypothesis: str
    ci_method: str
    df: float = float("inf")
    seed_se: float = float("nan")
    item_se: float = float("nan")


def _hypothesis(estimate: float, margin: float | None) -> tuple[str, str, float]:
    """(hypothesis text, alternative, null value) of the test the verdict rules use."""
    if margin is None:
        return "contrast = 0 (two-sided)", "two-sided", 0.0
    if abs(estimate) <= margin:
        return f"|contrast| >= {margin:g} (equivalence, TOST)", "tost", margin
    side = 1.0 if estimate > 0 else -1.0
    return (f"|contrast| <= {margin:g} (one-sided, beyond the margin)", "greater" if side > 0 else "less",
            side * margin)


def contrast_inference(
    matrices: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    *,
    margin: float | None = None,
    method: Method = DEFAULT_METHOD,
    pool_seeds: bool = True,
    confidence: float = CONFIDENCE,
    n_draws: int = 20000,
    n_resamples: int = 4000,
    n_permutations: int = 9999,
    rng: np.random.Generator | int | None = 0,
    force_two_level: bool = False,
    item_blocks: Sequence[Hashable] | None = None,
) -> Inference:
    """CI, SE and p-value of ``sum_c w_c mean_s sum_i D_c[s, i]`` from the item matrices.

    ``method``: "gpq" (generalized pivotal quantity over the seed x item variance components,
    the default), "satterthwaite" (t reference on Satterthwaite's df) or "bootstrap-legacy"
    (two-level percentile bootstrap + sign-flip p on seed-averaged item contrasts).
    ``pool_seeds`` (default): one seed variance pooled over the cells (df = sum_c (S_c - 1);
    exact under equal seed variances, docs/metrics.md); False: one per cell (needs >= 2 seeds
    in every cell, else pooled anyway).
    The seed-aware methods give no interval (NaN, p NaN) when every cell has 1 seed.
    ``item_blocks``: a label per item column for independent item sets side by side (the two
    datasets of a cross-dataset claim): the item term is the sum of the blocks' terms
    (:func:`hybridir.evaluation.seed_item_variance.contrast_variance`); seed-aware methods only.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r} unknown; choose from {METHODS}")
    rng = np.random.default_rng(rng)
    weights = {cell: float(w) for cell, w in weights.items()}
    item_contrasts = sum(weights[c] * np.asarray(matrices[c], dtype=float).mean(axis=0) for c in matrices)
    estimate = float(item_contrasts.sum())
    hypothesis, alternative, null = _hypothesis(estimate, margin)
    n = len(item_contrasts)
    if n < 2:
        nan = float("nan")
        return Inference(nan, nan, nan, 1.0 if method == "bootstrap-legacy" else nan, hypothesis,
                         "none (fewer than 2 shared items)")
    if method == "bootstrap-legacy":
        if item_blocks is not None:
            raise ValueError("item_blocks needs a seed-aware method (gpq or satterthwaite)")
        return _legacy_inference(matrices, weights, item_contrasts, hypothesis, alternative, null, confidence,
                                 n_resamples, n_permutations, rng, force_two_level)
    seeds = [np.asarray(m).shape[0] for c, m in matrices.items() if weights[c] != 0]
    if max(seeds) < 2:
        nan = float("nan")
        return Inference(nan, nan, nan, nan, hypothesis, "none (1 seed per cell: seed-to-seed variance unknown)")
    pooled = pool_seeds or min(seeds) < 2
    cv = contrast_variance(matrices, weights, pool_seeds=pooled, item_blocks=item_blocks)
    if method == "gpq":
        reference = GeneralizedPivot(estimate, cv, draws=n_draws, rng=rng)
        label = "generalized pivotal quantity"
    else:
        reference = TReference(estimate, cv)
        label = f"t on Satterthwaite df ({cv.df:.1f})"
    low, high = reference.interval(confidence)
    if alternative == "tost":
        p_value = max(reference.p_value(-null, "greater"), reference.p_value(null, "less"))
    else:
        p_value = reference.p_value(null, alternative)
    seeds_text = "seed variance pooled over cells" if pooled else "seed variance per cell"
    return Inference(
        low, high, cv.standard_error, float(p_value), hypothesis,
        f"{label}: seeds x items variance components ({seeds_text}; items paired)",
        df=cv.df, seed_se=float(np.sqrt(cv.seed_part)), item_se=float(np.sqrt(cv.item_part)),
    )


def _legacy_inference(matrices, weights, item_contrasts, hypothesis, alternative, null, confidence,
                      n_resamples, n_permutations, rng, force_two_level) -> Inference:
    """The method before the seed-aware one (kept for comparison, bench/calibration.py)."""
    one_run_each = all(np.asarray(m).shape[0] == 1 for m in matrices.values())
    if one_run_each and not force_two_level:
        boot = stats.bootstrap((item_contrasts,), lambda x, axis: np.sum(x, axis=axis), vectorized=True,
                               n_resamples=n_resamples, confidence_level=confidence, method="percentile", rng=rng)
        low, high = map(float, (boot.confidence_interval.low, boot.confidence_interval.high))
        se = float(boot.standard_error)
        ci_method = "scipy.stats.bootstrap over items (percentile; one run per cell)"
    else:
        low, high, se = two_level_bootstrap(matrices, weights, confidence=confidence, n_resamples=n_resamples, rng=rng)
        ci_method = "two-level bootstrap over seeds and items (percentile)"
    n = len(item_contrasts)
    if alternative == "two-sided":
        p_value = _sign_flip_p(item_contrasts, "two-sided", n_permutations, rng)
    elif alternative == "tost":
        # sum(e_i -/+ m/n) = estimate -/+ m: the sign-flip null placed at either margin.
        p_value = max(_sign_flip_p(item_contrasts - null / n, "less", n_permutations, rng),
                      _sign_flip_p(item_contrasts + null / n, "greater", n_permutations, rng))
    else:
        p_value = _sign_flip_p(item_contrasts - null / n, alternative, n_permutations, rng)
    return Inference(low, high, se, p_value, hypothesis, ci_method + " [legacy]")


def paired_contrast(
    runs: Mapping[str, Runs],
    weights: Mapping[str, float],
    setting: str,
    measure: str,
    *,
    margin: float | None = None,
    confidence: float = CONFIDENCE,
    method: Method = DEFAULT_METHOD,
    pool_seeds: bool = True,
    n_draws: int = 20000,
    n_resamples: int = 4000,
    n_permutations: int = 9999,
    seed: int = 0,
    force_two_level: bool = False,
) -> ContrastResult:
    """The contrast ``sum_c weights[c] * statistic_c`` over cells, items paired, seeds pooled.

    runs:    cell label -> its runs: {seed: per-query DataFrame} (seeds that match across cells
             are paired for the per-seed contrasts) or a list of DataFrames (keyed by position).
    weights: cell label -> weight (every cell of ``runs``); see difference_weights / slope_weights.
    margin:  an equivalence margin: p_value then tests equivalence (see ContrastResult).
    method / pool_seeds: see :func:`contrast_inference` (CI and p-value both come from it).
    ``n_resamples`` / ``n_permutations`` / ``force_two_level`` concern "bootstrap-legacy" only
    (its CI is scipy.stats.bootstrap when every cell has one run, unless ``force_two_level``).
    """
    if set(weights) != set(runs):
        raise ValueError(f"weights name cells {sorted(weights)} but runs has {sorted(runs)}")
    if margin is not None and margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    matrices, seed_labels, shared, dropped = item_matrices(runs, setting, measure)
    return contrast_from_matrices(
        matrices, seed_labels, weights, setting, measure, n_items_dropped=dropped, margin=margin,
        confidence=confidence, method=method, pool_seeds=pool_seeds, n_draws=n_draws, n_resamples=n_resamples,
        n_permutations=n_permutations, seed=seed, force_two_level=force_two_level,
    )


def contrast_from_matrices(
    matrices: Mapping[str, np.ndarray],
    seed_labels: Mapping[str, Sequence[Hashable]],
    weights: Mapping[str, float],
    setting: str,
    measure: str,
    *,
    n_items_dropped: int = 0,
    margin: float | None = None,
    confidence: float = CONFIDENCE,
    method: Method = DEFAULT_METHOD,
    pool_seeds: bool = True,
    n_draws: int = 20000,
    n_resamples: int = 4000,
    n_permutations: int = 9999,
    seed: int = 0,
    force_two_level: bool = False,
    item_blocks: Sequence[Hashable] | None = None,
) -> ContrastResult:
    """:func:`paired_contrast` from item matrices already built (``matrices``: cell -> (seeds x
    shared items) contributions, as :func:`item_matrices` or
    :func:`hybridir.evaluation.claim_statistics.statistic_matrices` give them; ``seed_labels``:
    cell -> the label of each matrix row; ``item_blocks``: see :func:`contrast_inference`).
    ``setting`` / ``measure`` only label the result."""
    if set(weights) != set(matrices):
        raise ValueError(f"weights name cells {sorted(weights)} but matrices has {sorted(matrices)}")
    if margin is not None and margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    weights = {cell: float(w) for cell, w in weights.items()}
    matrices = {cell: np.asarray(m, dtype=float) for cell, m in matrices.items()}
    # Per-run statistics on the shared items; the contrast of seed-averaged statistics.
    per_seed = {cell: matrix.sum(axis=1) for cell, matrix in matrices.items()}
    cell_statistics = {cell: float(values.mean()) for cell, values in per_seed.items()}
    estimate = float(sum(weights[c] * cell_statistics[c] for c in matrices))
    item_contrasts = sum(weights[c] * matrices[c].mean(axis=0) for c in matrices)
    inference = contrast_inference(
        matrices, weights, margin=margin, method=method, pool_seeds=pool_seeds, confidence=confidence,
        n_draws=n_draws, n_resamples=n_resamples, n_permutations=n_permutations, rng=seed,
        force_two_level=force_two_level, item_blocks=item_blocks,
    )
    seed_spread = {cell: float(values.std(ddof=1)) if len(values) >= 2 else None for cell, values in per_seed.items()}
    seed_labels = {cell: list(seed_labels[cell]) for cell in matrices}
    common_seeds = set.intersection(*(set(labels) for labels in seed_labels.values()))
    per_seed_contrasts = None
    if len(common_seeds) >= 2 and all(len(set(labels)) == len(common_seeds) for labels in seed_labels.values()):
        per_seed_contrasts = {
            s: float(sum(weights[c] * per_seed[c][seed_labels[c].index(s)] for c in matrices))
            for s in sorted(common_seeds, key=str)
        }
    se = inference.standard_error
    return ContrastResult(
        estimate=estimate, ci_low=inference.ci_low, ci_high=inference.ci_high, standard_error=se,
        p_value=inference.p_value, p_holm=inference.p_value, hypothesis=inference.hypothesis, margin=margin,
        n_items=next(iter(matrices.values())).shape[1], n_items_dropped=n_items_dropped,
        n_seeds={cell: matrix.shape[0] for cell, matrix in matrices.items()}, cell_statistics=cell_statistics,
        seed_spread=seed_spread, per_seed_contrasts=per_seed_contrasts,
        mdd=minimum_detectable_difference(se, df=inference.df) if np.isfinite(se) else float("nan"),
        weights=weights, setting=setting, measure=measure, confidence=confidence, ci_method=inference.ci_method,
        df=inference.df, seed_se=inference.seed_se, item_se=inference.item_se, method=method,
        item_contrasts=item_contrasts,
    )


def apply_holm(results: Sequence[ContrastResult]) -> list[ContrastResult]:
    """The same results with ``p_holm`` adjusted over the whole family (one report); a result
    without a p-value (1 seed per cell) keeps NaN and does not count in the family."""
    adjusted = holm([r.p_value for r in results], skip_nan=True)
    return [dataclasses.replace(r, p_holm=float(p)) for r, p in zip(results, adjusted)]
