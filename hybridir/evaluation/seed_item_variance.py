"""The variance of a contrast of study cells when seeds and items (questions) are crossed.

A study cell c is trained with S_c seeds; every run is scored on the same n items. Its
per-query rows reduce to a matrix ``D_c[s, i]`` (seed s, item i: the item's share of the run
statistic, so ``T_{c,s} = sum_i D_c[s, i]``). A linear contrast with weights ``lambda_c``
estimates

    theta_hat = sum_c lambda_c * mean_s T_{c,s} = sum_i e_i,    e_i = sum_c lambda_c * mean_s D_c[s, i].

Model (per cell, two-way random effects without replication, Searle, Casella & McCulloch 1992,
ch. 4; Montgomery, *Design and Analysis of Experiments*, sec. 13.2):

    D_c[s, i] = mu_c + beta_{c,i} + gamma_{c,s} + eps_{c,s,i}

with item effects beta (shared by the cells through the item: the pairing), seed effects gamma
(independent between cells: separate trainings) and residual eps (seed x item interaction).
Then, with b_i = sum_c lambda_c beta_{c,i} of variance sigma2_b,

    Var(theta_hat) = n sigma2_b + sum_c lambda_c^2 (n^2 sigma2_gamma_c + n sigma2_eps_c) / S_c.

Its unbiased estimate is a signed sum of independent mean squares (expected-mean-square
algebra of the two-way ANOVA):

    A_c = var_s(T_{c,s}) / S_c                       (seed term, df S_c - 1)
    B   = n * var_i(e_i)                             (paired item term, df n - 1)
    R_c = n * MS_resid_c / S_c                       (residual, df (S_c - 1)(n - 1))
    V   = sum_c lambda_c^2 A_c + max(B - sum_c lambda_c^2 R_c, 0)

(B contains the residual once more, E[B] = n sigma2_b + sum_c lambda_c^2 n sigma2_eps_c / S_c,
so it is subtracted; the item part is truncated at 0.) The seed term can instead be pooled
over cells, ``sigma2_T = sum_c (S_c - 1) var_c / sum_c (S_c - 1)`` with df ``sum_c (S_c - 1)``.

Small-sample reference: the seed term has S_c - 1 degrees of freedom (1 at 2 seeds), so a
normal reference is far too narrow. Two references are provided:

* :func:`satterthwaite_df` (Satterthwaite 1946; Welch 1947) for a t reference;
* :class:`GeneralizedPivot`: the generalized pivotal quantity (Weerahandi 1993, JASA 88:899;
  Krishnamoorthy & Mathew 2009, *Statistical Tolerance Regions*, sec. 1.4; Krishnamoorthy &
  Lu 2003 for sums of variance components): each mean square m_k with df nu_k is replaced by
  ``m_k nu_k / chi2_{nu_k}`` (independent draws), giving V*, and the pivot of theta is
  ``theta_hat - Z sqrt(V*)``. Its quantiles are the CI; its tail probabilities at the null
  value the generalized p-value. Z is integrated out exactly
  (``P(pivot <= q) = mean Phi((q - theta_hat) / sqrt(V*))``), so only the chi-square draws
  carry Monte-Carlo error.

Pure numpy / scipy. Formulas and the calibration: docs/metrics.md, bench/calibration.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats


@dataclass(frozen=True)
class CellAnova:
    """Two-way ANOVA without replication of one cell's (seeds x items) matrix ``D[s, i]``."""

    n_seeds: int
    n_items: int
    seed_variance: float  # var_s(T_s), T_s = sum_i D[s, i] (ddof 1); nan with one seed
    ms_item: float
    ms_resid: float  # nan with one seed

    @property
    def seed_df(self) -> int:
        return self.n_seeds - 1

    @property
    def resid_df(self) -> int:
        return (self.n_seeds - 1) * (self.n_items - 1)


def _block_centred(values: np.ndarray, blocks: np.ndarray | None) -> np.ndarray:
    """``values`` (last axis: items) minus the mean of each item block (one block: the mean)."""
    if blocks is None:
        return values - values.mean(axis=-1, keepdims=True)
    out = np.empty_like(values)
    for block in np.unique(blocks):
        part = blocks == block
        out[..., part] = values[..., part] - values[..., part].mean(axis=-1, keepdims=True)
    return out


def _check_blocks(blocks, n: int) -> np.ndarray | None:
    if blocks is None:
        return None
    blocks = np.asarray(blocks)
    if blocks.shape != (n,):
        raise ValueError(f"item_blocks needs one label per item ({n}), got shape {blocks.shape}")
    sizes = np.unique(blocks, return_counts=True)[1]
    if sizes.min() < 2:
        raise ValueError(f"every item block needs >= 2 items, got sizes {sizes.tolist()}")
    return blocks


def cell_anova(matrix: np.ndarray, item_blocks=None) -> CellAnova:
    """``item_blocks``: a label per item column for independent item sets side by side (the
    two datasets of a cross-dataset claim); the seed x item residual is then taken within each
    block (each block has its own seed effect), df (S - 1)(n - B)."""
    d = np.asarray(matrix, dtype=float)
    if d.ndim != 2 or d.shape[1] < 2 or d.shape[0] < 1:
        raise ValueError(f"a cell needs a (seeds x items) matrix with >= 1 seed and >= 2 items, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("a cell's item matrix has non-finite values")
    s, n = d.shape
    item_means = d.mean(axis=0)
    ms_item = float(s * np.var(item_means, ddof=1))
    if s < 2:
        return CellAnova(s, n, float("nan"), ms_item, float("nan"))
    totals = d.sum(axis=1)
    blocks = _check_blocks(item_blocks, n)
    n_blocks = 1 if blocks is None else len(np.unique(blocks))
    # D - row mean - column mean + grand mean, row and grand means per block
    resid = _block_centred(d - item_means[None, :], blocks)
    ms_resid = float((resid ** 2).sum() / ((s - 1) * (n - n_blocks)))
    return CellAnova(s, n, float(np.var(totals, ddof=1)), ms_item, ms_resid)


@dataclass(frozen=True)
class Component:
    """One signed term of the variance estimate: ``sign * value`` with ``df`` degrees of freedom."""

    name: str
    value: float
    df: float
    sign: int = 1


@dataclass(frozen=True)
class ContrastVariance:
    """The estimated variance of a contrast and its parts (see the module docstring)."""

    seed_components: tuple[Component, ...]
    item_component: Component
    resid_components: tuple[Component, ...]
    pooled_seeds: bool

    @property
    def seed_part(self) -> float:
        return float(sum(c.value for c in self.seed_components))

    @property
    def item_part(self) -> float:
        """Paired item variance net of the residual, truncated at 0."""
        return max(self.item_component.value - sum(c.value for c in self.resid_components), 0.0)

    @property
    def variance(self) -> float:
        return self.seed_part + self.item_part

    @property
    def standard_error(self) -> float:
        return float(np.sqrt(self.variance))

    @property
    def df(self) -> float:
        """Satterthwaite's effective degrees of freedom of ``variance``."""
        return satterthwaite_df(self)


def contrast_variance(
    matrices: Mapping[str, np.ndarray], weights: Mapping[str, float], *, pool_seeds: bool = False,
    item_blocks=None,
) -> ContrastVariance:
    """The variance components of ``sum_c w_c mean_s sum_i D_c[s, i]`` (items paired across cells).

    Every cell needs >= 2 seeds, or (``pool_seeds``) at least one cell with >= 2 seeds; the
    matrices must have the same items in the same column order. ``item_blocks``: a label per
    item column when the columns are independent item sets side by side (two datasets): the
    item term is then the sum of the blocks' own terms, ``B = n sum_k sum_{i in k} (e_i -
    mean_k e)^2 / (n - K)`` (df n - K), and the residual is taken within each block.
    """
    if set(weights) != set(matrices):
        raise ValueError(f"weights name cells {sorted(weights, key=str)} but matrices has {sorted(matrices, key=str)}")
    anova = {cell: cell_anova(m, item_blocks) for cell, m in matrices.items()}
    n_items = {a.n_items for a in anova.values()}
    if len(n_items) != 1:
        raise ValueError(f"cells have different numbers of items {sorted(n_items)}; join them on shared items first")
    n = n_items.pop()
    lam2 = {cell: float(weights[cell]) ** 2 for cell in matrices}
    active = [cell for cell in matrices if lam2[cell] > 0]
    if pool_seeds:
        df = sum(anova[c].seed_df for c in active)
        if df < 1:
            raise ValueError("pooled seed variance needs at least one cell with >= 2 seeds")
        pooled = sum(anova[c].seed_df * anova[c].seed_variance for c in active if anova[c].n_seeds >= 2) / df
        seed = (Component("seed (pooled)", pooled * sum(lam2[c] / anova[c].n_seeds for c in active), df),)
    else:
        few = [c for c in active if anova[c].n_seeds < 2]
        if few:
            raise ValueError(f"cells {few} have 1 seed: their seed-to-seed variance is unknown")
        seed = tuple(Component(f"seed {c}", lam2[c] * anova[c].seed_variance / anova[c].n_seeds, anova[c].seed_df)
                     for c in active)
    e = sum(float(weights[c]) * np.asarray(matrices[c], dtype=float).mean(axis=0) for c in matrices)
    blocks = _check_blocks(item_blocks, n)
    n_blocks = 1 if blocks is None else len(np.unique(blocks))
    centred = _block_centred(np.asarray(e, dtype=float), blocks)
    item = Component("item (paired)", float(n * (centred ** 2).sum() / (n - n_blocks)), n - n_blocks)
    resid = tuple(Component(f"residual {c}", lam2[c] * n * anova[c].ms_resid / anova[c].n_seeds,
                            (anova[c].n_seeds - 1) * (n - n_blocks), -1)
                  for c in active if anova[c].n_seeds >= 2)
    return ContrastVariance(seed, item, resid, pool_seeds)


def satterthwaite_df(cv: ContrastVariance) -> float:
    """Satterthwaite (1946): ``V^2 / sum_k v_k^2 / nu_k`` over the signed components (the
    residual only while the item part is not truncated)."""
    parts = list(cv.seed_components)
    if cv.item_part > 0:
        parts += [cv.item_component, *cv.resid_components]
    denominator = sum(c.value ** 2 / c.df for c in parts if c.df > 0)
    if denominator <= 0:
        return float("inf")
    return float(cv.variance ** 2 / denominator)


class _Reference:
    """Interval and tail probabilities from a distribution of the contrast given ``cdf``."""

    estimate: float

    def cdf(self, q: float) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def quantile(self, p: float) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def interval(self, confidence: float) -> tuple[float, float]:
        tail = (1 - confidence) / 2
        return self.quantile(tail), self.quantile(1 - tail)

    def p_value(self, null: float = 0.0, alternative: str = "two-sided") -> float:
        """p-value of H0: theta = null (two-sided), theta <= null ("greater") or theta >=
        null ("less"), from the reference distribution's tails at ``null``."""
        below = self.cdf(null)  # P(pivot <= null): evidence against theta > null
        if alternative == "greater":
            return below
        if alternative == "less":
            return 1.0 - below
        if alternative != "two-sided":
            raise ValueError(f"alternative {alternative!r} unknown")
        return float(min(1.0, 2 * min(below, 1.0 - below)))


class GeneralizedPivot(_Reference):
    """The generalized pivotal quantity ``theta_hat - Z sqrt(V*)`` of a contrast.

    V* replaces every variance component m_k (df nu_k) by ``m_k nu_k / chi2_{nu_k}`` and
    recombines them as the estimate does (item part net of the residual, truncated at 0).
    ``draws`` chi-square draws per component from ``rng``; Z is integrated analytically.
    """

    def __init__(self, estimate: float, cv: ContrastVariance, *, draws: int = 20000,
                 rng: np.random.Generator | int | None = 0):
        rng = np.random.default_rng(rng)

        def star(c: Component) -> np.ndarray:
            if c.value == 0 or not np.isfinite(c.df):
                return np.full(draws, c.value)
            return c.value * c.df / rng.chisquare(c.df, size=draws)

        seed = sum((star(c) for c in cv.seed_components), np.zeros(draws))
        item = star(cv.item_component) - sum((star(c) for c in cv.resid_components), np.zeros(draws))
        self.estimate = float(estimate)
        self.scale = np.sqrt(seed + np.maximum(item, 0.0))

    def cdf(self, q: float) -> float:
        """P(pivot <= q)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (q - self.estimate) / self.scale
        z = np.where(self.scale > 0, z, np.where(q >= self.estimate, np.inf, -np.inf))
        return float(special.ndtr(z).mean())

    def quantile(self, p: float) -> float:
        if not 0 < p < 1:
            raise ValueError(f"quantile level must lie in (0, 1), got {p}")
        spread = float(np.max(self.scale))
        if spread == 0:
            return self.estimate
        width = spread * max(1.0, -special.ndtri(min(p, 1 - p))) * 2
        low, high = self.estimate - width, self.estimate + width
        while self.cdf(low) > p:
            low -= width
        while self.cdf(high) < p:
            high += width
        return float(optimize.brentq(lambda q: self.cdf(q) - p, low, high, xtol=1e-12 * max(spread, 1e-300)))

    def standard_error(self) -> float:
        """SD of the pivot (Z integrated): sqrt(E[V*])."""
        return float(np.sqrt(np.mean(self.scale ** 2)))


class TReference(_Reference):
    """``theta_hat + t_nu * SE`` with Satterthwaite's nu: the same interface as GeneralizedPivot."""

    def __init__(self, estimate: float, cv: ContrastVariance):
        self.estimate = float(estimate)
        self.se = cv.standard_error
        self.df = cv.df

    def cdf(self, q: float) -> float:
        if self.se == 0:
            return float(q >= self.estimate)
        return float(stats.t.cdf((q - self.estimate) / self.se, self.df))

    def quantile(self, p: float) -> float:
        return float(self.estimate + self.se * stats.t.ppf(p, self.df))

    def standard_error(self) -> float:
        return self.se


def design_standard_error(
    weights: Mapping[str, float], seeds: Mapping[str, int] | int, seed_sd: float, item_se: float = 0.0,
    n_items: int | None = None,
) -> tuple[float, float]:
    """(SE, Satterthwaite df) a planned design gives a contrast, before it runs.

    seed_sd: SD over seeds of one cell's run statistic (as measured on earlier runs, e.g.
    ``sqrt(CellAnova.seed_variance)``); item_se: the contrast's paired item term
    (``sqrt(ContrastVariance.item_part)`` of an earlier run of the same contrast, 0 when
    unknown); seeds: per cell or one count for every cell. The seed variance is pooled over
    the cells (the default of the verdicts), df = sum_c (S_c - 1) for it.
    """
    counts = {cell: (seeds if isinstance(seeds, int) else seeds[cell]) for cell in weights}
    if min(counts.values()) < 2:
        raise ValueError(f"a design needs >= 2 seeds per cell to estimate the seed variance, got {counts}")
    if seed_sd < 0 or item_se < 0:
        raise ValueError(f"seed_sd and item_se must be >= 0, got {seed_sd}, {item_se}")
    seed_part = seed_sd ** 2 * sum(float(w) ** 2 / counts[c] for c, w in weights.items())
    seed_df = sum(n - 1 for c, n in counts.items() if weights[c] != 0)
    item_part = item_se ** 2
    variance = seed_part + item_part
    if variance == 0:
        return 0.0, float("inf")
    item_df = (n_items - 1) if n_items else float("inf")
    denominator = seed_part ** 2 / seed_df + (item_part ** 2 / item_df if np.isfinite(item_df) else 0.0)
    return float(np.sqrt(variance)), float(variance ** 2 / denominator) if denominator > 0 else float("inf")
