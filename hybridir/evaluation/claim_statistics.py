"""The per-run statistic of a claim, as item contributions: ``T_s = sum_i D[s, i]``.

:func:`hybridir.evaluation.significance.item_matrices` turns the per-query rows of one run into
the contributions ``d_i`` of one metric (setting, measure) on one dataset. A claim may ask for
more than that, and every variant below is still one number per run that is a SUM over items,
so the crossed seeds x items inference of :func:`significance.contrast_inference` applies
unchanged (docs/metrics.md, "Claim statistics"):

* a combination of metrics within one run (``metrics = {"multi": 1, "cross": -1}``): the
  item's contributions to each metric, weighted, ``d_i = sum_m w_m d_i^(m)`` on the items
  every metric shares;
* the worst language of a named set (``worst_of``): per run, the statistic restricted to the
  rows involving each language L; the run's value is the minimum (maximum for lower-is-better
  measures) and its item contributions those of the argmin language (zero for the items that
  language lacks), so ``sum_i d_i`` is the minimum exactly;
* a difference across datasets (``datasets = {"xquad-r": 1, "mlqa-r": -1}``): the item axis is
  the disjoint union of the datasets' items (ids prefixed by the dataset), the B items entering
  with the sign -1, so each run's statistic is ``T_A,s - T_B,s`` (the same run: the seed term is
  the variance of the within-run difference); :attr:`StatisticMatrices.item_blocks` labels the
  columns by dataset, so that the item term is the sum of the two datasets' own item terms
  (independent question sets; ``contrast_inference(item_blocks=...)``).

Pure numpy / pandas.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hybridir.evaluation.significance import ITEM, LOWER_IS_BETTER, _usable_rows, item_contributions
from hybridir.evaluation.vocabulary import CANDIDATE_LANG, CORRECT_AT_1, DATASET, QUERY_LANG

# Claim measures whose per-query column has another name.
MEASURE_COLUMNS = {"accuracy": CORRECT_AT_1}


def measure_column(measure: str) -> str:
    """The per-query column of a claim measure (``accuracy`` -> ``correct@1`` of bitext rows)."""
    return MEASURE_COLUMNS.get(measure, measure)


@dataclass(frozen=True)
class ClaimStatistic:
    """What one run contributes to a claim.

    measure:   the claim's measure (one per-query column);
    metrics:   setting -> weight, combined within each run (one setting: ``{setting: 1.0}``);
    datasets:  dataset -> weight (``{name: 1.0}``; two datasets ``{a: 1, b: -1}``: the difference);
    worst_of:  languages: the per-run minimum over them (maximum for rank distance) of the
               statistic on the rows involving each one; None: all rows;
    involving: keep only rows whose query or candidate language is one of these (None: all).
    Language codes must already be canonical (the rows' codes).
    """

    measure: str
    metrics: Mapping[str, float]
    datasets: Mapping[str | None, float] = field(default_factory=lambda: {None: 1.0})
    worst_of: tuple[str, ...] | None = None
    involving: tuple[str, ...] | None = None

    def __post_init__(self):
        if not self.metrics or any(w == 0 for w in self.metrics.values()):
            raise ValueError(f"metrics needs >= 1 setting with a non-zero weight, got {dict(self.metrics)}")
        if not self.datasets or any(w == 0 for w in self.datasets.values()):
            raise ValueError(f"datasets needs >= 1 dataset with a non-zero weight, got {dict(self.datasets)}")
        if self.worst_of is not None and len(set(self.worst_of)) < 2:
            raise ValueError(f"a worst language needs >= 2 languages, got {list(self.worst_of)}")

    @property
    def column(self) -> str:
        return measure_column(self.measure)

    @property
    def lower_is_better(self) -> bool:
        return self.measure in LOWER_IS_BETTER


@dataclass
class StatisticMatrices:
    """Per cell a (seeds x items) matrix of the claim statistic's item contributions."""

    matrices: dict[Hashable, np.ndarray]
    seed_labels: dict[Hashable, list[Hashable]]
    items: list[Hashable]
    n_items_dropped: int
    # the dataset of each item column when there are several (independent item sets), else None
    item_blocks: list[str] | None = None
    # (cell, seed) -> {dataset: the argmin language} (worst-language statistics only)
    worst: dict[tuple[Hashable, Hashable], dict[str | None, str]] = field(default_factory=dict)


def _dataset_rows(frame: pd.DataFrame, dataset: str | None) -> pd.DataFrame:
    if dataset is None or DATASET not in frame.columns:
        return frame
    return frame[frame[DATASET] == dataset]


def _involving(rows: pd.DataFrame, languages: Sequence[str] | None) -> pd.DataFrame:
    if not languages:
        return rows
    wanted = set(languages)
    return rows[rows[QUERY_LANG].isin(wanted) | rows[CANDIDATE_LANG].isin(wanted)]


def _items(rows: pd.DataFrame, setting: str, column: str) -> set:
    return set(_usable_rows(rows, setting, column)[ITEM])


def _vector(rows: pd.DataFrame, stat: ClaimStatistic, items: list) -> np.ndarray:
    """Sum over the metrics of w_m * the item contributions on ``items`` (0 where an item has
    no row in ``rows``)."""
    total = np.zeros(len(items))
    for setting, weight in stat.metrics.items():
        usable = _usable_rows(rows, setting, stat.column)
        usable = usable[usable[ITEM].isin(set(items))]
        if usable.empty:
            raise ValueError(f"no per-query rows for setting={setting!r}, measure={stat.measure!r}")
        contributions = item_contributions(usable, setting, stat.column)
        total += weight * contributions.reindex(items).fillna(0.0).to_numpy()
    return total


def statistic_matrices(runs: Mapping[Hashable, Mapping[Hashable, pd.DataFrame]], stat: ClaimStatistic) -> StatisticMatrices:
    """The item matrices of ``stat`` for every cell (``runs``: cell -> {seed: the run's per-query
    rows, every dataset of ``stat`` in one frame with a ``dataset`` column}).

    Items are joined per dataset over every run of every cell and every metric (inner join, as
    :func:`significance.item_matrices`); a run or language without rows raises ValueError
    naming it."""
    prepared: dict[Hashable, dict[Hashable, dict]] = {}
    shared: dict[str | None, list] = {}
    dropped = 0
    for dataset in stat.datasets:
        item_sets = []
        for cell, seeds in runs.items():
            if not seeds:
                raise ValueError(f"cell {cell!r} has no runs")
            for seed, frame in seeds.items():
                rows = _involving(_dataset_rows(frame, dataset), stat.involving or stat.worst_of)
                where = f"cell {cell!r}, seed {seed!r}" + (f", dataset {dataset}" if dataset else "")
                if rows.empty:
                    raise ValueError(f"{where}: no per-query rows")
                for setting in stat.metrics:
                    found = _items(rows, setting, stat.column)
                    if not found:
                        raise ValueError(f"{where}: no per-query rows for {setting} {stat.measure}")
                    item_sets.append(found)
                prepared.setdefault(cell, {}).setdefault(seed, {})[dataset] = rows
        common = set.intersection(*item_sets)
        if not common:
            raise ValueError(f"the runs share no item{f' on {dataset}' if dataset else ''} for "
                             f"{' '.join(stat.metrics)} {stat.measure}")
        dropped += len(set.union(*item_sets)) - len(common)
        shared[dataset] = sorted(common, key=str)
    multi_dataset = len(stat.datasets) > 1
    items = [f"{d}/{i}" if multi_dataset else i for d in stat.datasets for i in shared[d]]
    matrices, labels, worst = {}, {}, {}
    for cell, seeds in prepared.items():
        rows_of_cell = []
        for seed, by_dataset in seeds.items():
            parts = []
            for dataset, sign in stat.datasets.items():
                rows = by_dataset[dataset]
                if stat.worst_of is None:
                    vector = _vector(rows, stat, shared[dataset])
                else:
                    per_language = {}
                    for language in stat.worst_of:
                        language_rows = _involving(rows, [language])
                        if language_rows.empty:
                            raise ValueError(f"cell {cell!r}, seed {seed!r}: no per-query rows involving {language}"
                                             + (f" on {dataset}" if dataset else ""))
                        per_language[language] = _vector(language_rows, stat, shared[dataset])
                    totals = {language: float(v.sum()) for language, v in per_language.items()}
                    pick = max if stat.lower_is_better else min
                    language = pick(totals, key=totals.get)
                    worst.setdefault((cell, seed), {})[dataset] = language
                    vector = per_language[language]
                parts.append(sign * vector)
            rows_of_cell.append(np.concatenate(parts))
        matrices[cell] = np.vstack(rows_of_cell)
        labels[cell] = list(seeds)
    blocks = [str(d) for d in stat.datasets for _ in shared[d]] if multi_dataset else None
    return StatisticMatrices(matrices, labels, items, dropped, blocks, worst)


def run_values(runs: Mapping[Hashable, pd.DataFrame], stat: ClaimStatistic) -> dict[Hashable, float]:
    """seed -> the per-run statistic of one cell's runs (joined on the items they share)."""
    result = statistic_matrices({"cell": runs}, stat)
    return dict(zip(result.seed_labels["cell"], result.matrices["cell"].sum(axis=1).tolist()))
