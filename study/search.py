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

import pickle
from types import SimpleNamespace
from typing import Any, Callable

import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.spec import StudySpec, TunedParam

STEP = "study_step"  # the study's own step counter: ASHA's time_attr survives restores


def optuna_distribution(param: TunedParam) -> optuna.distributions.BaseDistribution:
    """A study's tuned-parameter declaration as an Optuna distribution."""
    if param.distribution == "loguniform":
        return optuna.distributions.FloatDistribution(param.low, param.high, log=True)
    if param.distribution == "uniform":
        return optuna.distributions.FloatDistribution(param.low, param.high)
    if param.distribution == "int":
        return optuna.distributions.IntDistribution(int(param.low), int(param.high))
    return optuna.distributions.CategoricalDistribution(param.values)


def intermediate_metric(spec: StudySpec) -> str:
    """The reported key ASHA and Optuna compare."""
    return f"inter/{spec.search.metric}"


class CellGridSearch(Searcher):
    """Hands out ``samples_per_cell`` trials for every grid cell, round-robin over cells,
    each cell's tuned values suggested by its own seeded OptunaSearch."""

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
                seed=spec.search.seed + index,
                study_name=f"cell-{index}",
            )
            if space
            else None
            for index in range(len(self._cells))
        ]
        self._issued = 0
        self._owner: dict[str, int] = {}

    @property
    def total_trials(self) -> int:
        return len(self._cells) * self._budget

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # Metric and mode come from the study, never from TuneConfig defaults.
        return True

    def suggest(self, trial_id: str) -> dict | None:
        if self._issued >= self.total_trials:
            return Searcher.FINISHED
        cell = self._issued % len(self._cells)
        self._issued += 1
        self._owner[trial_id] = cell
        searcher = self._optuna[cell]
        tuned = searcher.suggest(trial_id) if searcher else {}
        return {"phase": "search", "cell": cell, "axes": self._cells[cell], "tuned": tuned, "seed": None}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        searcher = self._cell_searcher(trial_id)
        if searcher and self.metric in result:
            searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        searcher = self._cell_searcher(trial_id)
        if searcher:
            searcher.on_trial_complete(trial_id, result=result, error=error)

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
                if row.get("phase") != "search" or row.get(self._metric) is None:
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
