"""Statistics and plotting shared by the report builders.

Per grid cell, a report uses the ``--seeds`` re-runs of the cell's best configuration
when they exist (mean and 95% t-interval over seeds), else the best completed search
trial (n = 1, no interval), by the study's one selection rule (:mod:`study.selection`: the
search objective, never the final test metrics; ties to the earlier-finished trial).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from hybridir.evaluation.vocabulary import (  # noqa: E402
    AP,
    CANDIDATE_LANG,
    CROSS,
    DATASET,
    MAP,
    MONO,
    MULTI,
    MULTILINGUAL,
    QUERY_LANG,
    RANK_DISTANCE,
    SETTING,
    public_metric,
)
from study.results import ResultStore  # noqa: E402
from study.selection import best_trials  # noqa: E402
from study.spec import StudySpec  # noqa: E402
from study.vocabulary import (  # noqa: E402
    CELL,
    COMPLETED,
    PHASE,
    PHASES,
    RUN,
    SEARCH,
    SEEDS,
    STATUS,
    STEP,
    TRAINED,
    TRIAL_ID,
    ZERO_SHOT,
    axis_column,
    final_key,
    intermediate_metric,
)


@dataclass
class ReportContext:
    """What every builder reads: the study, its stored results, where to write."""

    spec: StudySpec
    store: ResultStore
    trials: pd.DataFrame
    history: pd.DataFrame
    out_dir: Path

    @property
    def settings(self):
        """The question's own ``report:`` settings (its :class:`study.question.QuestionSettings`)."""
        return self.spec.report.settings

    @property
    def completed(self) -> pd.DataFrame:
        if self.trials.empty:
            return self.trials
        return self.trials[self.trials[STATUS] == COMPLETED]

    def final_datasets(self) -> list[str]:
        return [final.dataset for final in self.spec.evaluation.final]


def mean_ci(values) -> tuple[float, float, float, int]:
    """Mean, 95% t-interval bounds and n of the finite values (bounds NaN when n < 2)."""
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(array)
    if n == 0:
        return np.nan, np.nan, np.nan, 0
    mean = float(array.mean())
    if n < 2:
        return mean, np.nan, np.nan, n
    half = float(stats.t.ppf(0.975, n - 1) * array.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half, n


def representative_trials(ctx: ReportContext) -> dict[int, pd.DataFrame]:
    """cell -> the completed rows that stand for it: seed re-runs, else the best search trial."""
    done = ctx.completed
    if done.empty:
        return {}
    objective = intermediate_metric(ctx.spec)
    chosen: dict[int, pd.DataFrame] = {}
    for cell, group in done.groupby(CELL, sort=True):
        if not ctx.spec.tune:
            # Nothing tuned: the search trial is the cell's one configuration at the base seed,
            # so it counts as a seed beside the re-runs (seeds N gives N + 1 runs per cell).
            chosen[int(cell)] = group[group[PHASE].isin(list(PHASES))]
            continue
        seeds = group[group[PHASE] == SEEDS]
        if len(seeds):
            chosen[int(cell)] = seeds
            continue
        best = best_trials(group, objective, ctx.spec.search.mode, phases=(SEARCH,))
        if len(best):
            chosen[int(cell)] = best
    return chosen


def cell_axes(ctx: ReportContext, cell: int) -> dict:
    cells = ctx.spec.cells() or [{}]
    return cells[cell]


def summarize(ctx: ReportContext, metrics: list[str]) -> pd.DataFrame:
    """One row per cell: axis values, then ``<metric>``, ``<metric>_ci_low|high`` and ``n``."""
    rows = []
    for cell, group in representative_trials(ctx).items():
        row = {CELL: cell, **{axis_column(k): v for k, v in cell_axes(ctx, cell).items()}}
        for metric in metrics:
            values = group[metric] if metric in group else []
            mean, low, high, n = mean_ci(list(values))
            row.update({metric: mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high})
            row["n"] = max(row.get("n", 0), n)
        rows.append(row)
    return pd.DataFrame(rows)


# --- the untrained starting model (results/zero_shot.json + per_query/zero-shot.parquet) ---
DELTA_SUFFIX = "_delta_vs_zero_shot"


def zero_shot_info(ctx: ReportContext) -> dict | None:
    """``{"model": ..., "metrics": {"final/<dataset>/<key>": value}}``, or None when the study
    stored no zero-shot evaluation."""
    reader = getattr(ctx.store, "zero_shot", None)
    return reader() if reader else None


def zero_shot_metric(info: dict, dataset: str, key: str) -> float:
    value = (info or {}).get("metrics", {}).get(final_key(dataset, key))
    return float(value) if value is not None else np.nan


def matrices_from_per_query(rows: pd.DataFrame) -> dict:
    """Per-query rows -> ``{dataset: {metric: query_lang x candidate_lang DataFrame,
    "multilingual": DataFrame by query language}}``, the layout of ``ResultStore.matrices``
    (cell means, AP reported as ``map``)."""
    out = {}
    metrics = [c for c in (AP, "r@1", "r@10", "f1@10", "ndcg@10") if c in rows]
    for dataset, part in rows.groupby(DATASET) if DATASET in rows else [("", rows)]:
        tables = {}
        pairwise = part[part[SETTING].isin([MONO, CROSS])]
        if len(pairwise):
            means = pairwise.groupby([QUERY_LANG, CANDIDATE_LANG])[metrics].mean()
            for metric in metrics:
                tables[public_metric(metric)] = means[metric].unstack(CANDIDATE_LANG)
        multi = part[part[SETTING] == MULTI]
        if len(multi):
            columns = metrics + ([RANK_DISTANCE] if RANK_DISTANCE in multi else [])
            tables[MULTILINGUAL] = multi.groupby(QUERY_LANG)[columns].mean().rename(columns={AP: MAP})
        out[dataset] = tables
    return out


def zero_shot_matrices(ctx: ReportContext) -> dict:
    """The untrained model's per-language-pair matrices (empty without a zero-shot evaluation)."""
    if zero_shot_info(ctx) is None:
        return {}
    return matrices_from_per_query(ctx.store.per_query(ZERO_SHOT))


def add_zero_shot(table: pd.DataFrame, zero_rows: list[dict], metrics: list[str], keys: list[str]) -> pd.DataFrame:
    """Prepend the zero-shot rows (``run`` = "zero-shot", trained rows "trained") and add
    ``<metric>_delta_vs_zero_shot`` = row value - the zero-shot value with the same ``keys``."""
    if not zero_rows or table.empty:
        return table
    zero = pd.DataFrame(zero_rows)
    metrics = [m for m in metrics if m in zero and m in table]
    reference = zero[keys + metrics].rename(columns={m: f"{m}__zero" for m in metrics})
    table = table.assign(**{RUN: TRAINED})
    table = table.merge(reference, on=keys, how="left") if keys else table.assign(
        **{f"{m}__zero": reference[f"{m}__zero"].iloc[0] for m in metrics})
    for metric in metrics:
        table[f"{metric}{DELTA_SUFFIX}"] = table[metric] - table.pop(f"{metric}__zero")
    # the zero-shot row's change against itself: 0 where it has a value, empty where it has none
    # (a metric column another row's metric fills)
    zero = zero.assign(**{RUN: ZERO_SHOT},
                       **{f"{m}{DELTA_SUFFIX}": zero[m].where(zero[m].isna(), 0.0) for m in metrics})
    merged = pd.concat([zero, table], ignore_index=True)
    # the trained table's own column order (its key columns, e.g. alpha, stay in front of its values)
    order = [*[c for c in table.columns if c != RUN], *[c for c in zero.columns if c not in table.columns and c != RUN]]
    return merged[[RUN, *order]]


def fit_slope(x, y) -> dict:
    """Least-squares line y = a + b x: slope b, its 95% t-interval, intercept, n."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        return {"slope": np.nan, "slope_ci_low": np.nan, "slope_ci_high": np.nan, "intercept": np.nan, "n_points": n}
    slope, intercept = np.polyfit(x, y, 1)
    if n > 2:
        residuals = y - (intercept + slope * x)
        se = np.sqrt(residuals @ residuals / (n - 2) / ((x - x.mean()) @ (x - x.mean())))
        half = stats.t.ppf(0.975, n - 2) * se
    else:
        half = np.nan  # two points fit exactly: no residual variance to estimate
    return {
        "slope": float(slope),
        "slope_ci_low": float(slope - half),
        "slope_ci_high": float(slope + half),
        "intercept": float(intercept),
        "n_points": n,
    }


def pareto_mask(maximize, minimize) -> np.ndarray:
    """True for points no other point beats on both (higher ``maximize``, lower ``minimize``)."""
    gain = np.asarray(maximize, dtype=float)
    cost = np.asarray(minimize, dtype=float)
    mask = np.ones(len(gain), dtype=bool)
    for i in range(len(gain)):
        dominated = (gain >= gain[i]) & (cost <= cost[i]) & ((gain > gain[i]) | (cost < cost[i]))
        mask[i] = not dominated.any()
    return mask


def plot_curves(frame: pd.DataFrame, x: str, metric: str, by: str | None, path: Path, title: str,
                xlabel: str | None = None, logx: bool = False) -> Path:
    """Line plot of ``metric`` vs ``x`` with 95% CI bands (where available), one line per ``by``."""
    fig, ax = plt.subplots(figsize=(6, 4))
    groups = frame.groupby(by, sort=True) if by else [(None, frame)]
    for label, group in groups:
        group = group.sort_values(x)
        xs = group[x].astype(float)
        ax.plot(xs, group[metric], marker="o", label=None if label is None else f"{by.split('/')[-1]}={label}")
        low, high = f"{metric}_ci_low", f"{metric}_ci_high"
        if low in group and group[low].notna().any():
            ax.fill_between(xs, group[low], group[high], alpha=0.2)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    if by:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG and free it (reports build many figures in one process)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_heatmap(matrix: pd.DataFrame, path: Path, title: str) -> Path:
    """A query-language x candidate-language heatmap with the values written in."""
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(matrix.columns), 1 + 0.45 * len(matrix.index)))
    image = ax.imshow(matrix.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, fontsize=7)
    ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=7)
    ax.set_xlabel("candidate language")
    ax.set_ylabel("query language")
    for (i, j), value in np.ndenumerate(matrix.to_numpy(dtype=float)):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=5, color="w")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=8)
    return save_figure(fig, path)


def plot_learning_curves(ctx: ReportContext, path: Path) -> Path | None:
    """The search objective over study steps for every trial (pruned ones end early)."""
    metric = intermediate_metric(ctx.spec)
    if ctx.history.empty or metric not in ctx.history:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for trial_id, group in ctx.history.dropna(subset=[metric]).groupby(TRIAL_ID):
        group = group.sort_values(STEP)
        ax.plot(group[STEP], group[metric], marker=".", alpha=0.7, label=f"{trial_id} (cell {group[CELL].iloc[0]})")
    ax.set_xlabel("study step")
    ax.set_ylabel(metric)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def pairs_per_trial(spec, axis: str) -> dict:
    """{value of ``axis``: sorted distinct training pairs a trial sees (max_steps x global batch)
    over the cells with that value} from the frozen study (the design, not the results)."""
    seen: dict = {}
    for cell in spec.cells() or [{}]:
        if axis not in cell:
            continue
        config = spec.train_config(cell)
        seen.setdefault(cell[axis], set()).add(config.max_steps * config.batching.batch_size)
    return {value: sorted(pairs) for value, pairs in seen.items()}


# The two figures with 95% CIs every report draws (study/report.py) and the findings document reuses.
FOREST_PLOT = "claims_forest.png"
CELLS_PLOT = "cells_with_ci.png"


def fine_tuning_text(spec, trials: pd.DataFrame) -> str:
    """Which layers trained (a deviation from the paper's full fine-tuning when partial): as
    the trials recorded it, else from the study's settings."""
    from study.vocabulary import MODEL_TRAINING

    recorded = sorted(set(trials.get(MODEL_TRAINING, pd.Series(dtype=str)).dropna()))
    if recorded:
        return "; ".join(recorded)
    values = {spec.base_config.model.train_layers, *spec.axes.get("model.train_layers", [])}
    values.discard(None)
    if not values and "model.train_layers" not in spec.tune:
        return "all layers fine-tuned (full fine-tuning)"
    tops = ", ".join(map(str, sorted(values))) or "tuned"
    return f"top {tops} layers fine-tuned, embeddings and lower layers frozen (partial fine-tuning, activation cache)"
