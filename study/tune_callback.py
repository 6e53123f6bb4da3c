"""The study's Ray Tune callback: the driver side of :mod:`study.results`.

:class:`ResultsCallback` turns Tune's events into rows of the study's result store
(``results/history`` per report, ``results/trials`` per finished trial, the per-query file
copied from the storage path before the trial's row) and drops finished trials' Train
checkpoints. It is the only part of the result handling that needs Ray; the store itself
(:class:`study.results.ResultStore`) and the reports read ``results/`` without it.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from study.results import ResultStore, flatten_config, per_query_uri, read_storage_file
from study.vocabulary import (
    COMPLETED,
    ERROR,
    FINAL_PREFIX,
    MATRICES,
    PER_QUERY_ROWS,
    PRUNED,
    SEARCH,
    STEP,
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
                 experiment: str = SEARCH, storage: str | None = None):
        self._output_dir = Path(output_dir)
        self._resources = resources
        # Local storage only: a finished trial's Train checkpoints (the full encoder, hundreds
        # of MB each) are dropped unless resources.keep_checkpoints; results stay in results/.
        self._train_runs_dir = train_runs_dir
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
        row = {"trial_id": trial.trial_id, STEP: result[STEP], "time": time.time()}
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
        row = {"trial_id": trial_id, "status": status, "finished_at": time.time()}
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
        objective = {k: round(v, 4) for k, v in row.items() if k.startswith(FINAL_PREFIX) and k.endswith("/cross_map")}
        print(f"[study] trial {trial_id} {status} (cell {row['cell']}, {wall:.0f} s) {objective}", flush=True)
        if self._train_runs_dir and status in (COMPLETED, PRUNED):
            run_dir = Path(self._train_runs_dir) / train_run_name(self._experiment, trial_id)
            for checkpoint in run_dir.glob("checkpoint_*"):
                shutil.rmtree(checkpoint, ignore_errors=True)

    def collect_per_query(self, trial_id: str, expected_rows: float | None = None) -> bool:
        """Copy a finished trial's per-query parquet from the storage path into results/.
        False (with a warning naming the file) when it is missing or incomplete."""
        storage = getattr(self, "_storage", None)  # absent in callbacks pickled by older versions
        if storage is None:
            return False
        uri = per_query_uri(storage, self._experiment, trial_id)
        data = read_storage_file(uri)
        if data is None:
            print(f"[study] warning: trial {trial_id}: no per-query results at {uri}", flush=True)
            return False
        import pyarrow.parquet

        rows = pyarrow.parquet.ParquetFile(io.BytesIO(data)).metadata.num_rows
        if expected_rows is not None and not _nan(expected_rows) and rows != int(expected_rows):
            print(f"[study] warning: trial {trial_id}: {uri} has {rows} per-query rows, the trial "
                  f"reported {int(expected_rows)}; not copied", flush=True)
            return False
        self.store.write_per_query(trial_id, data)
        return True

    def backfill_per_query(self) -> int:
        """Fetch the per-query file of every completed trial of this experiment that has none
        in results/ (e.g. storage was briefly unreachable when it finished). Returns how many."""
        trials = self.store.trials()
        if trials.empty:
            return 0
        done = trials[(trials["phase"] == self._experiment) & (trials["status"] == COMPLETED)]
        return sum(
            self.collect_per_query(trial_id, row.get(PER_QUERY_ROWS))
            for trial_id, row in zip(done["trial_id"], done.to_dict("records"))
            if not self.store.has_per_query(trial_id)
        )

    def reconcile(self, grid) -> int:
        """Record trials Tune finished but this callback never saw (a driver stopped between
        the trial's end and the callback), from Tune's own stored results. Returns how many."""
        known = self.store.finished_trial_ids()
        added = 0
        for result in grid:
            metrics = dict(result.metrics or {})
            trial_id = metrics.get("trial_id")
            if not trial_id or trial_id in known:
                continue
            finished = result.error is not None or any(k.startswith(FINAL_PREFIX) for k in metrics) or metrics.get("done")
            if not finished:
                continue  # still running when the driver stopped: resumed later
            self.record(trial_id, result.config, metrics, ERROR if result.error is not None else None)
            added += 1
        return added
