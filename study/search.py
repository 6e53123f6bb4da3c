"""Search: a complete grid over the scaling axes, Optuna (TPE, seeded) within each cell,
ASHA pruning within each cell.

Why not one OptunaSearch over everything: TPE would choose axis values itself and leave
curves with holes. Why not one ASHA: a trial on 128 languages would be pruned for
scoring below a 5-language trial although it answers a different question. So both the
searcher and the scheduler keep one independent instance per grid cell, inside a single
Tune experiment (one resume path, concurrency across cells on a cluster).

A trial's config is ``{"phase", "cell", "axes": {path: value}, "tuned": {path: value},
"seed"}``; :func:`study.trial.run_trial` turns it into a TrainConfig.
"""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace
from typing import Any, Callable

import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.spec import StudySpec, TunedParam
from study.vocabulary import SEARCH, STEP, TUNED_PREFIX, intermediate_metric, prefixed_columns


def optuna_distribution(param: TunedParam) -> optuna.distributions.BaseDistribution:
    """A study's tuned-parameter declaration as an Optuna distribution."""
    if param.distribution == "loguniform":
        return optuna.distributions.FloatDistribution(param.low, param.high, log=True)
    if param.distribution == "uniform":
        return optuna.distributions.FloatDistribution(param.low, param.high)
    if param.distribution == "int":
        return optuna.distributions.IntDistribution(int(param.low), int(param.high))
    return optuna.distributions.CategoricalDistribution(param.values)


def startup_trials(samples_per_cell: int) -> int:
    """TPE's random start-up trials for a cell's budget.

    Optuna's default (10) turns a cell with fewer samples into pure random search; a third
    of the budget (at least 1, at most Optuna's 10) leaves the rest to the model.
    """
    return max(1, min(10, samples_per_cell // 3))


def discrete_space_size(spec: StudySpec) -> int | None:
    """How many distinct tuned configurations exist (None: a continuous space)."""
    size = 1
    for param in spec.tune.values():
        if param.distribution == "choice":
            size *= len(param.values)
        elif param.distribution == "int":
            size *= int(param.high) - int(param.low) + 1
        else:
            return None
    return size


class CellGridSearch(Searcher):
    """Hands out ``samples_per_cell`` trials for every grid cell, round-robin over cells,
    each cell's tuned values suggested by its own seeded OptunaSearch (TPE).

    In a discrete space TPE proposes configurations it has already tried (a repeat would
    train the same config and seed again); those are told back to Optuna with the known
    outcome and asked again, until the cell's space is exhausted.
    """

    MAX_REDRAWS = 100

    def __init__(self, spec: StudySpec):
        super().__init__(metric=intermediate_metric(spec), mode=spec.search.mode)
        self._cells = spec.cells() or [{}]
        self._budget = spec.search.samples_per_cell
        space = {path: optuna_distribution(p) for path, p in spec.tune.items()}
        self._optuna = [
            OptunaSearch(
                space=space,
                metric=self.metric,
                mode=self.mode,
                sampler=optuna.samplers.TPESampler(
                    seed=spec.search.seed + index, n_startup_trials=startup_trials(self._budget)
                ),
                study_name=f"cell-{index}",
            )
            if space
            else None
            for index in range(len(self._cells))
        ]
        self._space_size = discrete_space_size(spec) if space else None
        self._issued = 0
        self._remaining = [self._budget] * len(self._cells)
        self._owner: dict[str, int] = {}
        # Per cell: tuned config (as sorted JSON) -> last known objective (None: running).
        self._tried: list[dict[str, float | None]] = [{} for _ in self._cells]
        self._config_of: dict[str, str] = {}
        self._optuna_id: dict[str, str] = {}
        self._redraws = 0

    @property
    def total_trials(self) -> int:
        return len(self._cells) * self._budget

    @property
    def remaining_trials(self) -> int:
        return sum(self._remaining)

    def skip_finished(self, rows: list[dict]) -> int:
        """Count trials the study already finished (rows of its results table) against their
        cells' budgets and tell each cell's Optuna their outcomes, so a study whose Tune state
        was lost continues where its results stand. Returns how many were skipped."""
        skipped = 0
        for row in rows:
            cell = int(row["cell"])
            if not 0 <= cell < len(self._cells) or self._remaining[cell] == 0:
                continue
            self._remaining[cell] -= 1
            skipped += 1
            searcher = self._optuna[cell]
            if searcher is None:
                continue
            tuned = prefixed_columns(row, TUNED_PREFIX)
            value = row.get(self.metric)
            missing = value is None or value != value  # NaN
            searcher.add_evaluated_point(tuned, None if missing else float(value), error=missing)
            self._tried[cell][json.dumps(tuned, sort_keys=True)] = None if missing else float(value)
        return skipped

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # Metric and mode come from the study, never from TuneConfig defaults.
        return True

    def suggest(self, trial_id: str) -> dict | None:
        open_cells = [c for c in range(len(self._cells)) if self._remaining[c] > 0]
        if not open_cells:
            return Searcher.FINISHED
        # Round-robin over the cells that still have budget.
        cell = next((c for c in open_cells if c >= self._issued % len(self._cells)), open_cells[0])
        self._issued = cell + 1
        self._remaining[cell] -= 1
        self._owner[trial_id] = cell
        tuned = self._suggest_new(cell, trial_id)
        return {"phase": SEARCH, "cell": cell, "axes": self._cells[cell], "tuned": tuned, "seed": None}

    def _suggest_new(self, cell: int, trial_id: str) -> dict:
        searcher = self._optuna[cell]
        if searcher is None:
            return {}
        tried = self._tried[cell]
        exhausted = self._space_size is not None and len(tried) >= self._space_size
        for attempt in range(self.MAX_REDRAWS):
            # Each ask gets its own Optuna trial id; the Tune trial keeps the accepted one.
            optuna_id = trial_id if attempt == 0 else f"{trial_id}#redraw{attempt}"
            tuned = searcher.suggest(optuna_id)
            config = json.dumps(tuned, sort_keys=True)
            if exhausted or config not in tried:
                break
            # A repeat: tell Optuna its known objective (FAIL while the first run is still
            # going) so TPE learns from it, then ask again.
            known = tried[config]
            searcher.on_trial_complete(
                optuna_id, result=None if known is None else {self.metric: known}, error=known is None
            )
            self._redraws += 1
        tried.setdefault(config, None)
        self._optuna_id[trial_id] = optuna_id
        self._config_of[trial_id] = config
        return tuned

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        searcher = self._cell_searcher(trial_id)
        if searcher and self.metric in result:
            searcher.on_trial_result(self._optuna_id.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        searcher = self._cell_searcher(trial_id)
        if searcher:
            searcher.on_trial_complete(self._optuna_id.get(trial_id, trial_id), result=result, error=error)
        config = self._config_of.get(trial_id)
        if config is not None and result and self.metric in result and not error:
            self._tried[self._owner[trial_id]][config] = float(result[self.metric])

    def _cell_searcher(self, trial_id: str) -> OptunaSearch | None:
        cell = self._owner.get(trial_id)
        return None if cell is None else self._optuna[cell]

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))


class FixedConfigSearch(Searcher):
    """Runs a prepared list of trial configs once each (the ``--seeds`` re-runs)."""

    @property
    def total_trials(self) -> int:
        return len(self._configs)

    @property
    def remaining_trials(self) -> int:
        return len(self._configs) - self._issued

    def skip_finished(self, rows: list[dict]) -> int:
        """Drop configs whose (cell, seed) the results table already holds."""
        done = {(int(row["cell"]), int(row["seed"])) for row in rows}
        pending = self._configs[self._issued:]
        kept = [c for c in pending if (int(c["cell"]), int(c["seed"])) not in done]
        self._configs = self._configs[: self._issued] + kept
        return len(pending) - len(kept)

    def __init__(self, configs: list[dict], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self._configs = list(configs)
        self._issued = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict | None:
        if self._issued >= len(self._configs):
            return Searcher.FINISHED
        self._issued += 1
        return self._configs[self._issued - 1]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))


class PerCellASHA(FIFOScheduler):
    """One asynchronous successive-halving scheduler per grid cell, on the study step.

    Tune pickles the scheduler at the start and does not save its state, so a restored
    study would prune against empty rungs; instead the rungs are refilled lazily from the
    study's own report history (``history_source()`` -> rows) the first time it is needed.
    """

    def __init__(self, spec: StudySpec, history_source: Callable[[], list[dict]] = list):
        super().__init__()
        self._spec = spec
        self._metric = intermediate_metric(spec)
        self._max_t = [spec.train_config(cell).max_steps for cell in spec.cells() or [{}]]
        self._history_source = history_source
        self._cells: dict[Any, AsyncHyperBandScheduler] | None = None

    def _make(self, cell: int) -> AsyncHyperBandScheduler:
        asha = self._spec.search.asha
        max_t = self._max_t[cell]
        return AsyncHyperBandScheduler(
            time_attr=STEP,
            metric=self._metric,
            mode=self._spec.search.mode,
            max_t=max_t,
            grace_period=min(asha.grace_period, max_t),
            reduction_factor=asha.reduction_factor,
            brackets=1,
            # A trial reaching max_t still sends its final-evaluation report at the same
            # step; stopping it at max_t would cut that report off.
            stop_last_trials=False,
        )

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def _schedulers(self) -> dict[Any, AsyncHyperBandScheduler]:
        if self._cells is None:
            self._cells = {}
            for row in self._history_source():
                if row.get("phase") != SEARCH or row.get(self._metric) is None:
                    continue
                scheduler = self._scheduler_of(int(row["cell"]))
                trial = SimpleNamespace(trial_id=row["trial_id"])
                value = scheduler._metric_op * float(row[self._metric])
                scheduler._brackets[0].on_result(trial, int(row[STEP]), value)
        return self._cells

    def _scheduler_of(self, cell: int) -> AsyncHyperBandScheduler:
        if cell not in self._cells:
            self._cells[cell] = self._make(cell)
        return self._cells[cell]

    def _cell(self, tune_controller, trial) -> AsyncHyperBandScheduler:
        self._schedulers()
        scheduler = self._scheduler_of(int(trial.config["cell"]))
        if trial.trial_id not in scheduler._trial_info:
            scheduler.on_trial_add(tune_controller, trial)
        return scheduler

    def on_trial_add(self, tune_controller, trial) -> None:
        self._cell(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._cell(tune_controller, trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._cell(tune_controller, trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial) -> None:
        self._cell(tune_controller, trial)._trial_info.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._cell(tune_controller, trial)._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return "Per-cell ASHA: " + "; ".join(
            f"cell {k}: {s.debug_string()}" for k, s in self._schedulers().items()
        )


def max_concurrent_trials(spec: StudySpec, cluster: dict[str, float]) -> int:
    """How many trials fit at once: the study's cap, else the cluster's CPUs (or GPUs)
    divided by one trial's need, never more than the trial slots (``tune_driver``)."""
    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    workers = spec.resources.num_workers
    if spec.resources.use_gpu:
        fit = int(cluster.get("GPU", 0) // workers)
    else:
        fit = int(cluster.get("CPU", 0) // (workers * spec.resources.cpus_per_worker))
    slots = int(cluster.get("tune_driver", fit))
    return max(1, min(fit, slots))
