"""The study's results table, written by the driver as trials report and finish.

Ray keeps only each trial's last result in ``get_dataframe`` and Train V2 drops metrics
reported without a checkpoint, so the study persists what its reports need itself:

* ``results/history.jsonl|csv``: every intermediate report of every trial;
* ``results/trials.jsonl|csv``: one row per finished trial (config, every final metric,
  resources, wall time, throughput, status);
* ``results/matrices/<trial_id>.json``: per-language-pair metric matrices of the final
  evaluation.

The JSONL files are append-only (a crash loses at most the line being written); readers
keep the last row per key, so a resumed study that re-reports never duplicates rows.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from study.search import STEP

TRIAL_KEY = ["trial_id"]
HISTORY_KEY = ["trial_id", STEP]
MATRICES = "matrices_json"  # the final report's per-language-pair matrices, as one JSON string


class ResultStore:
    """Reads and writes one study's ``results/`` directory."""

    def __init__(self, output_dir: Path):
        self.dir = Path(output_dir) / "results"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "matrices").mkdir(exist_ok=True)

    def append_history(self, row: dict) -> None:
        _append_jsonl(self.dir / "history.jsonl", row)

    def append_trial(self, row: dict, matrices: dict | None = None) -> None:
        if matrices:
            path = self.dir / "matrices" / f"{row['trial_id']}.json"
            path.write_text(json.dumps(matrices))
        _append_jsonl(self.dir / "trials.jsonl", row)
        self.trials().to_csv(self.dir / "trials.csv", index=False)

    def flush_history_csv(self) -> None:
        self.history().to_csv(self.dir / "history.csv", index=False)

    def trials(self) -> pd.DataFrame:
        return _latest(_read_jsonl(self.dir / "trials.jsonl"), TRIAL_KEY)

    def history(self) -> pd.DataFrame:
        return _latest(_read_jsonl(self.dir / "history.jsonl"), HISTORY_KEY)

    def matrices(self, trial_id: str) -> dict:
        """{dataset: {metric: DataFrame query_lang x candidate_lang}} of one trial."""
        path = self.dir / "matrices" / f"{trial_id}.json"
        if not path.is_file():
            return {}
        raw = json.loads(path.read_text())
        return {
            dataset: {metric: pd.DataFrame(table) for metric, table in metrics.items()}
            for dataset, metrics in raw.items()
        }

    def finished_trial_ids(self) -> set[str]:
        trials = self.trials()
        return set(trials["trial_id"]) if len(trials) else set()


def _append_jsonl(path: Path, row: dict) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, default=_jsonable, allow_nan=True) + "\n")
        handle.flush()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a killed driver; the trial re-reports it on resume
    return rows


def _latest(rows: list[dict], key: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.drop_duplicates(subset=key, keep="last").reset_index(drop=True)


def flatten_config(config: dict) -> dict:
    """A trial config as flat columns: ``axis/<path>``, ``tuned/<path>``, phase, cell, seed."""
    row = {"phase": config.get("phase"), "cell": config.get("cell"), "seed": config.get("seed"),
           "source_trial": config.get("source_trial")}
    row.update({f"axis/{k}": v for k, v in (config.get("axes") or {}).items()})
    row.update({f"tuned/{k}": v for k, v in (config.get("tuned") or {}).items()})
    return row


def _scalars(result: dict) -> dict:
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
                 experiment: str = "search"):
        self._output_dir = Path(output_dir)
        self._resources = resources
        # Local storage only: a finished trial's Train checkpoints (the full encoder, hundreds
        # of MB each) are dropped unless resources.keep_checkpoints; results stay in results/.
        self._train_runs_dir = train_runs_dir
        self._experiment = experiment
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
        self._finish(trial, status="error")

    def _finish(self, trial, status: str | None) -> None:
        self.record(trial.trial_id, trial.config, dict(trial.last_result or {}), status)

    def record(self, trial_id: str, config: dict, result: dict, status: str | None) -> None:
        """Write one finished trial's row (and its matrices); drop its Train checkpoints."""
        has_final = any(key.startswith("final/") for key in result)
        status = status or ("completed" if has_final else "pruned")
        wall = float(result.get("time_total_s") or 0.0)
        row = {"trial_id": trial_id, "status": status, "finished_at": time.time()}
        row.update(flatten_config(config))
        row.update(_scalars(result))
        row.update(
            {
                STEP: result.get(STEP),
                "wall_time_s": wall,
                "num_workers": self._resources["num_workers"],
                "use_gpu": self._resources["use_gpu"],
                "cpus_per_worker": self._resources["cpus_per_worker"],
                "worker_seconds": wall * self._resources["num_workers"],
            }
        )
        matrices = json.loads(result[MATRICES]) if result.get(MATRICES) else None
        self.store.append_trial(row, matrices)
        objective = {k: round(v, 4) for k, v in row.items() if k.startswith("final/") and k.endswith("/cross_map")}
        print(f"[study] trial {trial_id} {status} (cell {row['cell']}, {wall:.0f} s) {objective}", flush=True)
        if self._train_runs_dir and status in ("completed", "pruned"):
            run_dir = Path(self._train_runs_dir) / f"train-{self._experiment}-{trial_id}"
            for checkpoint in run_dir.glob("checkpoint_*"):
                shutil.rmtree(checkpoint, ignore_errors=True)

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
            finished = result.error is not None or any(k.startswith("final/") for k in metrics) or metrics.get("done")
            if not finished:
                continue  # still running when the driver stopped: resumed later
            self.record(trial_id, result.config, metrics, "error" if result.error is not None else None)
            added += 1
        return added


def history_rows(output_dir: str | Path) -> list[dict]:
    """Every stored intermediate report of a study (deduplicated), as dicts."""
    frame = ResultStore(Path(output_dir)).history()
    return frame.to_dict("records") if len(frame) else []
