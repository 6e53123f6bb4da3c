"""The study's Ray Tune callbacks: the driver side of :mod:`study.results` and of the console.

:class:`ResultsCallback` turns Tune's events into rows of the study's result store
(``results/history`` per report, ``results/trials`` per finished trial, the per-query file
copied from the storage path before the trial's row) and drops finished trials' Train
checkpoints, except each cell's best (the model ``study/export.py`` publishes). It is the
only part of the result handling that needs Ray; the store itself
(:class:`study.results.ResultStore`) and the reports read ``results/`` without it.

:class:`TrialConsole` prints one line per trial event (:mod:`study.console` formats them).
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from study.console import (
    describe_config,
    full_dict,
    headline_final,
    number,
    progress_line,
    say,
    metric_label,
    verbose_enabled,
)
import study.results as _results_module
from study.results import ResultStore, flatten_config, per_query_uri
from study.selection import best_trials
from study.storage import delete_subdirectories, join, read_file
from study.vocabulary import (
    CELL,
    CHECKPOINT_PREFIX,
    COMPLETED,
    ERROR,
    FINAL_PREFIX,
    FINISHED_AT,
    MATRICES,
    PER_QUERY_ROWS,
    PHASE,
    PRUNED,
    SEARCH,
    STATUS,
    STEP,
    TRIAL_ID,
    WALL_TIME,
    WORKER_SECONDS,
    train_run_name,
)


def _scalars(result: dict) -> dict:
    """The reported metrics worth a column: ``<prefix>/<name>`` scalars, NaN and the matrices left out."""
    return {
        key: value
        for key, value in result.items()
        if "/" in key and key != MATRICES and isinstance(value, (int, float, str, bool)) and not _nan(value)
    }


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


class ResultsCallback(Callback):
    """Tune driver callback: history row per report, trial row per finished trial."""

    def __init__(self, output_dir: Path, resources: dict, train_runs_dir: str | None = None,
                 experiment: str = SEARCH, storage: str | None = None,
                 keep_best: tuple[str, str] | None = None):
        self._output_dir = Path(output_dir)
        self._resources = resources
        # The storage's Train runs (a path or URI): a finished trial's Train checkpoints (the full
        # encoder, hundreds of MB each) are dropped unless resources.keep_checkpoints; results stay
        # in results/. None: nothing is dropped.
        self._train_runs_dir = train_runs_dir
        # (objective, mode): each cell's best completed trial keeps its final checkpoint, the
        # model `study/export.py` publishes; None drops every finished trial's checkpoints.
        self._keep_best = keep_best
        self._experiment = experiment
        # The study's storage path, where trials leave their per-query parquet (module doc).
        self._storage = storage
        self._store: ResultStore | None = None

    @property
    def store(self) -> ResultStore:
        # Created lazily: the callback is pickled into Tune's experiment state.
        if self._store is None:
            self._store = ResultStore(self._output_dir)
        return self._store

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if STEP not in result:
            return
        row = {TRIAL_ID: trial.trial_id, STEP: result[STEP], "time": time.time()}
        row.update(flatten_config(trial.config))
        row.update(_scalars(result))
        self.store.append_history(row)
        self.store.flush_history_csv()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, status=None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, status=ERROR)

    def _finish(self, trial, status: str | None) -> None:
        self.record(trial.trial_id, trial.config, dict(trial.last_result or {}), status)

    def record(self, trial_id: str, config: dict, result: dict, status: str | None) -> None:
        """Write one finished trial's row (and its matrices); drop its Train checkpoints."""
        has_final = any(key.startswith(FINAL_PREFIX) for key in result)
        status = status or (COMPLETED if has_final else PRUNED)
        wall = float(result.get("time_total_s") or 0.0)
        row = {TRIAL_ID: trial_id, STATUS: status, FINISHED_AT: time.time()}
        row.update(flatten_config(config))
        row.update(_scalars(result))
        row.update(
            {
                STEP: result.get(STEP),
                WALL_TIME: wall,
                "num_workers": self._resources["num_workers"],
                "use_gpu": self._resources["use_gpu"],
                "cpus_per_worker": self._resources["cpus_per_worker"],
                WORKER_SECONDS: wall * self._resources["num_workers"],
            }
        )
        matrices = json.loads(result[MATRICES]) if result.get(MATRICES) else None
        if has_final:
            # Before the trial's row: a row in trials.jsonl means its per-query file is here.
            self.collect_per_query(trial_id, result.get(PER_QUERY_ROWS))
        self.store.append_trial(row, matrices)
        if self._train_runs_dir and status in (COMPLETED, PRUNED):
            self._drop_checkpoints(trial_id, row)

    def _drop_checkpoints(self, trial_id: str, row: dict) -> None:
        """Free the disk of finished trials' checkpoints, except the cell's best trial's."""
        keep_best = getattr(self, "_keep_best", None)  # absent in callbacks pickled by older versions
        drop = {trial_id: self._experiment}
        if keep_best is not None and row[STATUS] == COMPLETED:
            metric, mode = keep_best
            trials = self.store.trials()
            cell = trials[(trials[CELL] == row[CELL]) & (trials[STATUS] == COMPLETED)]
            keep = set(best_trials(cell, metric, mode)[TRIAL_ID])
            drop = {t: phase for t, phase in zip(cell[TRIAL_ID], cell[PHASE]) if t not in keep}
        for trial, phase in drop.items():
            # Through study.storage: a local directory or a storage URI alike.
            delete_subdirectories(join(self._train_runs_dir, train_run_name(phase, trial)), CHECKPOINT_PREFIX)

    def collect_per_query(self, trial_id: str, expected_rows: float | None = None) -> bool:
        """Copy a finished trial's per-query parquet from the storage path into results/.
        False (with a warning naming the file) when it is missing or incomplete."""
        storage = getattr(self, "_storage", None)  # absent in callbacks pickled by older versions
        if storage is None:
            return False
        uri = per_query_uri(storage, self._experiment, trial_id)
        data = read_file(uri)
        if data is None:
            say(f"warning: trial {trial_id}: no per-query results at {uri}")
            return False
        import pyarrow.parquet

        rows = pyarrow.parquet.ParquetFile(io.BytesIO(data)).metadata.num_rows
        if expected_rows is not None and not _nan(expected_rows) and rows != int(expected_rows):
            say(f"warning: trial {trial_id}: {uri} has {rows} per-query rows, the trial "
                f"reported {int(expected_rows)}; not copied")
            return False
        self.store.write_per_query(trial_id, data)
        return True

    def backfill_per_query(self) -> int:
        """Fetch the per-query file of every completed trial of this experiment that has none
        in results/ (e.g. storage was briefly unreachable when it finished). Returns how many."""
        trials = self.store.trials()
        if trials.empty:
            return 0
        done = trials[(trials[PHASE] == self._experiment) & (trials[STATUS] == COMPLETED)]
        return sum(
            self.collect_per_query(trial_id, row.get(PER_QUERY_ROWS))
            for trial_id, row in zip(done[TRIAL_ID], done.to_dict("records"))
            if not self.store.has_per_query(trial_id)
        )

    def reconcile(self, grid) -> int:
        """Record trials Tune finished but this callback never saw (a driver stopped between
        the trial's end and the callback), from Tune's own stored results. Returns how many."""
        known = self.store.finished_trial_ids()
        added = 0
        for result in grid:
            metrics = dict(result.metrics or {})
            trial_id = metrics.get(TRIAL_ID)
            if not trial_id or trial_id in known:
                continue
            finished = result.error is not None or any(k.startswith(FINAL_PREFIX) for k in metrics) or metrics.get("done")
            if not finished:
                continue  # still running when the driver stopped: resumed later
            self.record(trial_id, result.config, metrics, ERROR if result.error is not None else None)
            say(f"trial {trial_id}: recorded from Tune's saved results (it finished while the driver was down)")
            added += 1
        return added


class TrialConsole(Callback):
    """One ``[study]`` line per trial event of one experiment (phase). Pickled into Tune's
    experiment state with the other callbacks, so a resumed study keeps its counts."""

    def __init__(self, experiment: str, total_trials: int, objective: str, base_seed: int,
                 max_steps: dict[int, int] | None = None, already_done: int = 0):
        self.experiment = experiment
        self.total = total_trials
        self.objective = objective
        self.base_seed = base_seed
        self.max_steps = max_steps or {}
        self._already_done = already_done  # kept from results/ after a broken Tune state
        self._started_at: dict[str, float] = {}

    @property
    def verbose(self) -> bool:
        # Read at each event, not stored: a restored study's callback follows this run's --verbose.
        return verbose_enabled()

    def _label(self, trial) -> str:
        return f"{self.experiment} trial {trial.trial_id}"

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started_at[trial.trial_id] = time.time()
        say(f"{self._label(trial)} started: {describe_config(trial.config, self.base_seed)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        say(f"{self._label(trial)} retried after a failure: {describe_config(trial.config, self.base_seed)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if STEP not in result or any(key.startswith(FINAL_PREFIX) for key in result):
            return  # the final report is the "completed" line
        max_steps = self.max_steps.get(trial.config.get(CELL))
        say(f"{self._label(trial)} {progress_line(result, max_steps, self.objective)}")
        if self.verbose:
            say(f"{self._label(trial)} {full_dict(result)}")

    def _done(self, trial, trials) -> str:
        # From Tune's own trial list, not a count kept here: a restored experiment's callback
        # is the one pickled when the experiment started.
        finished = {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")} | {trial.trial_id}
        return f"[{self._already_done + len(finished)}/{self.total} {self.experiment} trials done]"

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = dict(trial.last_result or {})
        started = self._started_at.get(trial.trial_id)
        seconds = result.get("time_total_s") or (time.time() - started if started else 0.0)
        final = headline_final(result)
        where = describe_config(trial.config, self.base_seed)
        if final:
            say(f"{self._label(trial)} completed ({seconds:.0f} s): {where}; {final} {self._done(trial, trials)}")
        else:
            value = number(result.get(self.objective))
            at = f" at step {result.get(STEP)}" if result.get(STEP) is not None else ""
            score = f" ({metric_label(self.objective)} {value:.4f})" if value is not None else ""
            say(f"{self._label(trial)} pruned{at}{score}: {where} {self._done(trial, trials)}")
        if self.verbose and result:
            say(f"{self._label(trial)} {full_dict(result)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        details = getattr(trial, "error_file", None) or getattr(trial, "path", None) or "Tune's experiment folder"
        say(f"{self._label(trial)} error: {describe_config(trial.config, self.base_seed)}; "
            f"details in {details} {self._done(trial, trials)}")


class TakeSignalsFromTune(Callback):
    """SIGINT back to :mod:`study.interrupt` once Tune's fit() has installed its own handler
    (Tune calls ``setup`` after that, in the driver's main thread); the first signal, SIGINT
    or SIGTERM, is then handed to Tune's handler: Tune saves its state and fit() returns."""

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info):
        from study import interrupt

        interrupt.take_over_from_tune()


# Tune state pickled before this module existed names ``study.results.ResultsCallback``. The
# name is put there when this module loads, not imported by study.results (which stays Ray-free
# and outside any import cycle): every unpickling of Tune state (study.recovery's checks and
# Tuner.restore, in the driver's study.run.run_experiment) happens after that imported this module.
_results_module.ResultsCallback = ResultsCallback
