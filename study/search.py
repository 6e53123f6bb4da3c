"""Search: a complete grid over the scaling axes, Optuna (TPE, seeded) within each cell,
ASHA pruning within each cell.

Why not one OptunaSearch over everything: TPE would choose axis values itself and leave
curves with holes. Why not one ASHA: a trial on 128 languages would be pruned for
scoring below a 5-language trial although it answers a different question. So both the
searcher and the scheduler keep one independent instance per grid cell, inside a single
Tune experiment (one resume path, concurrency across cells on a cluster).

A trial's config is ``{"phase", "cell", "axes": {path: value}, "tuned": {path: value},
"seed"}``; :func:`study.trial.run_trial` turns it into a TrainConfig.

Each cell's Optuna study is kept in an Optuna storage (by default the journal file
``<study dir>/optuna.journal``; or an RDB URL), which optuna-dashboard opens as it is. The
searcher drives Optuna's ask/tell itself rather than through Ray's OptunaSearch: it needs the
study step (not Tune's training_iteration, which restarts on a restored trial) as the key of
intermediate values, user attributes on every trial, and to find its trials again in the
storage after a restore.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Callable

import optuna
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search import Searcher

from study.console import say
from study.ray_internals import asha_forget_trial, asha_knows_trial, asha_record_result
from study.spec import StudySpec, TunedParam
from study.storage import open_optuna_storage
from study.vocabulary import (
    CELL,
    CONFIG_AXES,
    CONFIG_TUNED,
    PHASE,
    SEARCH,
    SEED,
    STEP,
    TRIAL_ID,
    TUNED_PREFIX,
    axis_column,
    intermediate_metric,
    prefixed_columns,
)


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


# --- Optuna storage --------------------------------------------------------------------------

# Where: study.storage (Ray-free, so the pre-Ray checks open it without this module's Ray imports).

# User attributes of the Optuna studies and trials (what the dashboard shows beside them).
TUNE_TRIAL_ID = "tune_trial_id"  # the Tune trial (and results/ row) whose outcome the trial holds
REDRAW_OF = "redraw_of"  # a repeated proposal: number of the earlier trial with the same values
REDRAW_FOR = "redraw_for"  # ... asked while choosing the values of this Tune trial
ABANDONED = "abandoned"  # why a trial no Tune trial will finish was marked failed
SOURCE = "source"  # "results": told from results/ after Tune's own state was lost
FROM_RESULTS = "results"


def config_key(tuned: dict) -> str:
    """A tuned configuration as a comparable key (sorted JSON)."""
    return json.dumps(tuned, sort_keys=True)


class CellGridSearch(Searcher):
    """Hands out ``samples_per_cell`` trials for every grid cell, round-robin over cells,
    each cell's tuned values suggested by its own seeded Optuna study (TPE).

    The cells' studies live in an Optuna storage (``storage``: a journal file path or an RDB
    URL; None keeps them in memory), named ``<study_name>/search/cell-<k>``, the cell's axis
    values in the study's user attributes. Every trial Tune runs is one Optuna trial with the
    user attribute ``tune_trial_id``, its intermediate values keyed by the study step. The
    storage is written on every ask, report and tell, so it is the source of truth when the
    searcher is restored from Tune's (possibly older) checkpoint; the checkpoint holds the
    searcher's own bookkeeping and the samplers' random state, never the storage itself.

    In a discrete space TPE proposes configurations it has already tried (a repeat would
    train the same config and seed again); those are told back to Optuna with the known
    outcome (failed while the first run is still going) and asked again, until the cell's
    space is exhausted. The repeats stay in the study, marked ``redraw_of`` (the earlier
    trial's number) and ``redraw_for`` (the Tune trial being chosen), so the dashboard shows
    what TPE learned from.
    """

    MAX_REDRAWS = 100
    # Re-read from the storage on every open: never pickled, never trusted from a checkpoint.
    _READ_BACK = ("_studies", "_study_ids", "_trial_number", "_tried", "_first_try")

    def __init__(self, spec: StudySpec, storage: str | None = None, study_name: str | None = None):
        super().__init__(metric=intermediate_metric(spec), mode=spec.search.mode)
        self._study_name = study_name or spec.name
        self._cells = spec.cells() or [{}]
        self._budget = spec.search.samples_per_cell
        self._space = {path: optuna_distribution(p) for path, p in spec.tune.items()}
        self._space_size = discrete_space_size(spec) if self._space else None
        self._samplers = [
            optuna.samplers.TPESampler(seed=spec.search.seed + index, n_startup_trials=startup_trials(self._budget))
            for index in range(len(self._cells))
        ]
        self._storage_location = storage
        self._storage: optuna.storages.BaseStorage | None = None
        self._issued = 0
        self._remaining = [self._budget] * len(self._cells)
        # Tune trial id -> cell, for every trial counted against a cell's budget (suggested
        # here or skipped as finished): the trials Tune's state (or results/) accounts for.
        self._owner: dict[str, int] = {}
        self._redraws = 0
        self._reset_read_back()

    def _reset_read_back(self) -> None:
        self._studies: list[optuna.Study | None] | None = None  # None: not opened yet
        self._study_ids: list[int | None] = []
        # Tune trial id -> its Optuna trial's number in its cell's study.
        self._trial_number: dict[str, int] = {}
        # Per cell: tuned config key -> last known objective (None: running or failed).
        self._tried: list[dict[str, float | None]] = []
        # Per cell: tuned config key -> number of the first trial that ran it.
        self._first_try: list[dict[str, int]] = []

    @property
    def total_trials(self) -> int:
        return len(self._cells) * self._budget

    @property
    def remaining_trials(self) -> int:
        return sum(self._remaining)

    def study_name_of(self, cell: int) -> str:
        """The Optuna study name of a grid cell."""
        return f"{self._study_name}/{SEARCH}/cell-{cell}"

    def cell_study(self, cell: int) -> optuna.Study | None:
        """A grid cell's Optuna study (None: nothing is tuned)."""
        self._open()
        return self._studies[cell]

    # --- opening and reading back ----------------------------------------------------------

    def _open(self) -> None:
        """Open the storage and each cell's study, then read the searcher's view back from it.

        Opened on first use rather than in the constructor: the driver builds a fresh searcher
        even when Tune then restores its own from ``tuner.pkl``, and only the searcher that
        drives the experiment may decide which running trials are lost."""
        if self._studies is not None:
            return
        if not self._space:
            self._studies = [None] * len(self._cells)
            return
        if self._storage is None:
            self._storage = open_optuna_storage(self._storage_location)
        self._studies = [self._open_cell_study(cell) for cell in range(len(self._cells))]
        self._study_ids = [self._storage.get_study_id_from_name(s.study_name) for s in self._studies]
        self._tried = [{} for _ in self._cells]
        self._first_try = [{} for _ in self._cells]
        for cell, study in enumerate(self._studies):
            self._read_back(cell, study)
        lost = [trial_id for trial_id in self._owner if trial_id not in self._trial_number]
        if lost:
            say(f"warning: the Optuna storage {self._storage_location or '(in memory)'} lacks "
                  f"{len(lost)} trial(s) the searcher counted (e.g. {lost[0]}); was it moved or replaced? "
                  "Their outcomes will not reach TPE.", flush=True)

    def _open_cell_study(self, cell: int) -> optuna.Study:
        direction = "minimize" if self.mode == "min" else "maximize"
        study = optuna.create_study(
            storage=self._storage,
            sampler=self._samplers[cell],
            pruner=optuna.pruners.NopPruner(),  # ASHA prunes, per cell (PerCellASHA)
            study_name=self.study_name_of(cell),
            direction=direction,
            load_if_exists=True,
        )
        described = self._cell_description(cell)
        if not study.user_attrs:
            for key, value in described.items():
                study.set_user_attr(key, value)
            _save_dashboard_note(study, described["description"])
        else:
            # A storage shared by several studies (an RDB server) could hold a different study
            # of the same name; continuing it would mix two experiments' trials.
            # Compared as the storage returns them (JSON: tuples come back as lists).
            expected = json.loads(json.dumps({k: v for k, v in described.items() if k != "description"}))
            stored = {key: study.user_attrs.get(key) for key in expected}
            if stored != expected or study.direction.name.lower() != direction:
                raise ValueError(
                    f"Optuna study {study.study_name!r} in {self._storage_location} belongs to another study "
                    f"({stored}, {study.direction.name.lower()}); expected {expected}, {direction}. "
                    "Give this study another name or storage."
                )
        return study

    def _cell_description(self, cell: int) -> dict[str, Any]:
        axes = self._cells[cell]
        values = ", ".join(f"{path}={value}" for path, value in axes.items()) or "no scaling axes"
        description = (
            f"Grid cell {cell} of {len(self._cells)} ({values}) of study {self._study_name!r}, phase {SEARCH}: "
            f"TPE over {', '.join(self._space)}, {self._budget} trial(s), objective {self.metric} ({self.mode}). "
            f"Trials carry {TUNE_TRIAL_ID} (the Tune trial and its results/ row) and intermediate values by "
            f"study step; {REDRAW_OF} marks a repeated proposal told back with its known outcome, "
            f"{ABANDONED} a trial the driver lost."
        )
        return {
            "study": self._study_name,
            PHASE: SEARCH,
            CELL: cell,
            **{axis_column(path): value for path, value in axes.items()},
            "objective": self.metric,
            "samples_per_cell": self._budget,
            "description": description,
        }

    def _read_back(self, cell: int, study: optuna.Study) -> None:
        """The cell's Tune trials as the storage has them; running ones no Tune trial will
        report to (the searcher's state does not count them) are marked failed."""
        tried, first_try = self._tried[cell], self._first_try[cell]
        for trial in study.get_trials(deepcopy=False):
            trial_id = trial.user_attrs.get(TUNE_TRIAL_ID)
            if trial_id is None or ABANDONED in trial.user_attrs:
                continue  # a redraw, or a trial lost earlier
            if trial.state == optuna.trial.TrialState.RUNNING and trial_id not in self._owner:
                # Suggested after the checkpoint Tune restored (or in an experiment that was
                # moved aside): Tune gives its budget to a new trial instead.
                self._storage.set_trial_user_attr(
                    self._storage_trial_id(cell, trial.number), ABANDONED,
                    "running when the driver stopped; the resumed experiment does not continue it",
                )
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                continue
            self._trial_number[trial_id] = trial.number
            key = config_key(trial.params)
            first_try.setdefault(key, trial.number)
            tried.setdefault(key, None)
            if trial.state == optuna.trial.TrialState.COMPLETE:
                tried[key] = trial.value

    def _storage_trial_id(self, cell: int, number: int) -> int:
        return self._storage.get_trial_id_from_study_id_trial_number(self._study_ids[cell], number)

    # --- Tune's Searcher interface ---------------------------------------------------------

    def skip_finished(self, rows: list[dict]) -> int:
        """Count trials the study already finished (rows of its results table) against their
        cells' budgets, so a study whose Tune state was lost continues where its results stand.

        A row whose Tune trial the cell's study already holds (``tune_trial_id``) is not told
        again; any other row is added to the study with its outcome. Returns how many rows
        were counted (rows already counted, or beyond a cell's budget, are not)."""
        self._open()
        skipped = 0
        for row in rows:
            cell = int(row[CELL])
            trial_id = row.get(TRIAL_ID)
            if not 0 <= cell < len(self._cells) or self._remaining[cell] == 0 or trial_id in self._owner:
                continue
            self._remaining[cell] -= 1
            skipped += 1
            if trial_id is not None:
                self._owner[trial_id] = cell
            study = self._studies[cell]
            if study is None or trial_id in self._trial_number:
                continue
            tuned = prefixed_columns(row, TUNED_PREFIX)
            value = row.get(self.metric)
            missing = value is None or value != value  # NaN
            attrs = {**self._trial_attrs(cell), SOURCE: FROM_RESULTS}
            if trial_id is not None:
                attrs[TUNE_TRIAL_ID] = trial_id
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL if missing else optuna.trial.TrialState.COMPLETE,
                value=None if missing else float(value),
                params=tuned,
                distributions=self._space,
                user_attrs=attrs,
            ))
            number = self._storage.get_n_trials(self._study_ids[cell]) - 1
            if trial_id is not None:
                self._trial_number[trial_id] = number
            key = config_key(tuned)
            self._first_try[cell].setdefault(key, number)
            self._tried[cell][key] = None if missing else float(value)
        return skipped

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # Metric and mode come from the study, never from TuneConfig defaults.
        return True

    def suggest(self, trial_id: str) -> dict | None:
        open_cells = [c for c in range(len(self._cells)) if self._remaining[c] > 0]
        if not open_cells:
            return Searcher.FINISHED
        self._open()
        # Round-robin over the cells that still have budget.
        cell = next((c for c in open_cells if c >= self._issued % len(self._cells)), open_cells[0])
        self._issued = cell + 1
        self._remaining[cell] -= 1
        self._owner[trial_id] = cell
        tuned = self._suggest_new(cell, trial_id)
        return {PHASE: SEARCH, CELL: cell, CONFIG_AXES: self._cells[cell], CONFIG_TUNED: tuned, SEED: None}

    def _trial_attrs(self, cell: int) -> dict[str, Any]:
        return {CELL: cell, PHASE: SEARCH, **{axis_column(p): v for p, v in self._cells[cell].items()}}

    def _suggest_new(self, cell: int, trial_id: str) -> dict:
        study = self._studies[cell]
        if study is None:
            return {}
        tried, first_try = self._tried[cell], self._first_try[cell]
        exhausted = self._space_size is not None and len(tried) >= self._space_size
        for attempt in range(self.MAX_REDRAWS):
            trial = study.ask(fixed_distributions=self._space)
            tuned = dict(trial.params)
            key = config_key(tuned)
            if exhausted or key not in tried or attempt == self.MAX_REDRAWS - 1:
                break
            # A repeat: tell Optuna its known objective (FAIL while the first run is still
            # going) so TPE learns from it, then ask again.
            trial.set_user_attr(REDRAW_OF, first_try[key])
            trial.set_user_attr(REDRAW_FOR, trial_id)
            known = tried[key]
            if known is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, known)
            self._redraws += 1
        for name, value in {TUNE_TRIAL_ID: trial_id, **self._trial_attrs(cell)}.items():
            trial.set_user_attr(name, value)
        tried.setdefault(key, None)
        first_try.setdefault(key, trial.number)
        self._trial_number[trial_id] = trial.number
        return tuned

    def _optuna_trial(self, trial_id: str) -> tuple[int, optuna.Study, int] | None:
        """(cell, study, trial number) of a Tune trial, None when Optuna has no trial for it."""
        cell = self._owner.get(trial_id)
        if cell is None:
            return None
        self._open()
        study, number = self._studies[cell], self._trial_number.get(trial_id)
        return None if study is None or number is None else (cell, study, number)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        located = self._optuna_trial(trial_id)
        if located is None or self.metric not in result or STEP not in result:
            return
        cell, _, number = located
        try:
            # Keyed by the study step: Tune's training_iteration restarts on a restored trial.
            self._storage.set_trial_intermediate_value(
                self._storage_trial_id(cell, number), int(result[STEP]), float(result[self.metric])
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # a restored trial re-reporting a step after its outcome reached the storage

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        located = self._optuna_trial(trial_id)
        if located is None:
            return
        cell, study, number = located
        result = result or {}
        value = result.get(self.metric)
        if value is not None and value == value:
            state, values = optuna.trial.TrialState.COMPLETE, float(value)
        else:
            # No objective: stopped before its first evaluation (pruned), or failed (an error,
            # or a NaN objective, which Optuna cannot rank).
            failed = error or value is not None
            state, values = (optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.PRUNED), None
        storage_id = self._storage_trial_id(cell, number)
        if STEP in result:
            try:
                self._storage.set_trial_user_attr(storage_id, STEP, int(result[STEP]))
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
        # A restored trial finishing again keeps the outcome the storage already holds.
        study.tell(number, values, state=state, skip_if_finished=True)
        told = self._storage.get_trial(storage_id)
        if told.state == optuna.trial.TrialState.COMPLETE:
            self._tried[cell][config_key(told.params)] = told.value

    # --- Tune's checkpoint -----------------------------------------------------------------

    def __getstate__(self) -> dict:
        """The searcher without its storage connection or what is read back from it; an
        in-memory storage (unit tests) has no other copy, so it travels along."""
        state = self.__dict__.copy()
        for name in self._READ_BACK:
            state.pop(name, None)
        if self._storage_location is not None:
            state["_storage"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        if "_optuna" in state:
            raise ValueError(
                "this searcher state was saved by an older study/search.py (Optuna in memory, no storage); "
                "resume moves the Tune experiment aside and continues from results/"
            )
        self.__dict__.update(state)
        self._reset_read_back()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__getstate__(), handle)

    def restore(self, checkpoint_path: str) -> None:
        """Tune's checkpoint of the searcher, then the cells' studies read back from storage."""
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        self.__setstate__(state)
        self._open()


def _save_dashboard_note(study: optuna.Study, text: str) -> None:
    """The study's description as its optuna-dashboard note, when the dashboard is installed
    (it is not a dependency of the study; the description is a user attribute either way)."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    save_note(study, text)


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
        done = {(int(row[CELL]), int(row[SEED])) for row in rows}
        pending = self._configs[self._issued:]
        kept = [c for c in pending if (int(c[CELL]), int(c[SEED])) not in done]
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
                if row.get(PHASE) != SEARCH or row.get(self._metric) is None:
                    continue
                asha_record_result(self._scheduler_of(int(row[CELL])), row[TRIAL_ID], int(row[STEP]),
                                   float(row[self._metric]))
        return self._cells

    def _scheduler_of(self, cell: int) -> AsyncHyperBandScheduler:
        if cell not in self._cells:
            self._cells[cell] = self._make(cell)
        return self._cells[cell]

    def _cell(self, tune_controller, trial) -> AsyncHyperBandScheduler:
        self._schedulers()
        scheduler = self._scheduler_of(int(trial.config[CELL]))
        if not asha_knows_trial(scheduler, trial.trial_id):
            scheduler.on_trial_add(tune_controller, trial)
        return scheduler

    def on_trial_add(self, tune_controller, trial) -> None:
        self._cell(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._cell(tune_controller, trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._cell(tune_controller, trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial) -> None:
        asha_forget_trial(self._cell(tune_controller, trial), trial.trial_id)

    def on_trial_remove(self, tune_controller, trial) -> None:
        asha_forget_trial(self._cell(tune_controller, trial), trial.trial_id)

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
