"""The study's results table, written by the driver as trials report and finish.

Ray keeps only each trial's last result in ``get_dataframe`` and Train V2 drops metrics
reported without a checkpoint, so the study persists what its reports need itself:

* ``results/history.jsonl|csv``: every intermediate report of every trial;
* ``results/trials.jsonl|csv``: one row per finished trial (config, every final metric,
  resources, wall time, throughput, status);
* ``results/matrices/<trial_id>.json``: per-language-pair metric matrices of the final
  evaluation;
* ``results/per_query/<trial_id>.parquet``: every per-query row of the final evaluation
  (the columns of ``LareqaResult.per_query``, or of ``BitextResult.per_query`` for bitext sets,
  plus ``dataset``); ``per_query/zero-shot.parquet`` and ``zero_shot.json``: the untrained
  starting model on the same sets.

The JSONL files are append-only (a crash loses at most the line being written); readers
keep the last row per key, so a resumed study that re-reports never duplicates rows.
Per-query files are one file per trial, written whole and renamed into place, so a rerun
replaces rather than duplicates.

Per-query transport. A full final evaluation has ~10^5 rows per trial: far too big for Ray's
metrics dict (Tune keeps every result in its experiment state and result logs). Rank 0 writes
them as compressed parquet to the trial's own folder of the study's storage path
(:func:`per_query_uri`, through ``pyarrow.fs``: a local or shared directory, or a cloud URI
such as ``s3://``, the storage Ray itself persists checkpoints to and which a multi-node
cluster must share), and reports only the row count. The driver copies the file into
``results/per_query/`` when the trial finishes, BEFORE it writes the trial's row, so a
finished trial in ``trials.jsonl`` always has its per-query file; ``--resume`` re-records
(and so re-copies) a trial the driver missed, and :meth:`ResultsCallback.backfill_per_query`
fetches any file still missing for a finished trial.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from ray.tune import Callback

from study.search import STEP

TRIAL_KEY = ["trial_id"]
HISTORY_KEY = ["trial_id", STEP]
MATRICES = "matrices_json"  # the final report's per-language-pair matrices, as one JSON string
PER_QUERY_ROWS = "per_query/rows"  # reported instead of the rows themselves (see the module doc)
ZERO_SHOT = "zero-shot"  # the per-query file name of the untrained model
ZERO_SHOT_FILE = "zero_shot.json"


def per_query_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One frame of the per-query rows of several datasets, ``dataset`` first."""
    parts = [frame.assign(dataset=dataset) for dataset, frame in frames.items() if len(frame)]
    if not parts:
        return pd.DataFrame(columns=["dataset"])
    merged = pd.concat(parts, ignore_index=True)
    return merged[["dataset", *[c for c in merged.columns if c != "dataset"]]]


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as zstd-compressed parquet (string columns are dictionary-encoded)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()


def per_query_uri(storage: str, experiment: str, trial_id: str) -> str:
    """Where a trial's rank 0 leaves its per-query parquet: its Train run's folder of the
    storage path (kept when the driver drops the run's checkpoints)."""
    return f"{storage.rstrip('/')}/train-{experiment}-{trial_id}/per_query.parquet"


def _filesystem(uri: str):
    import pyarrow.fs

    if "://" not in uri:
        uri = os.path.abspath(uri)
    return pyarrow.fs.FileSystem.from_uri(uri)


def write_storage_file(uri: str, data: bytes) -> None:
    """Write ``data`` to a local path or storage URI, whole: a temporary name, then a move, so
    a reader never sees half a file."""
    fs, path = _filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(temporary) as stream:
        stream.write(data)
    fs.move(temporary, path)


def read_storage_file(uri: str) -> bytes | None:
    """The bytes at a local path or storage URI, None if there is no such file."""
    import pyarrow.fs

    fs, path = _filesystem(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read()


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class ResultStore:
    """Reads and writes one study's ``results/`` directory."""

    def __init__(self, output_dir: Path):
        self.dir = Path(output_dir) / "results"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "matrices").mkdir(exist_ok=True)
        (self.dir / "per_query").mkdir(exist_ok=True)

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

    def per_query_path(self, trial_id: str) -> Path:
        return self.dir / "per_query" / f"{trial_id}.parquet"

    def has_per_query(self, trial_id: str) -> bool:
        return self.per_query_path(trial_id).is_file()

    def write_per_query(self, trial_id: str, data: bytes | pd.DataFrame) -> Path:
        """Store one trial's per-query rows (parquet bytes or a frame), replacing any earlier copy."""
        path = self.per_query_path(trial_id)
        _write_atomic(path, parquet_bytes(data) if isinstance(data, pd.DataFrame) else data)
        return path

    def per_query(self, trial_id: str) -> pd.DataFrame:
        """One trial's (or ``"zero-shot"``'s) per-query rows of every final evaluation set:
        ``dataset``, ``setting``, ``query_lang``, ``candidate_lang``, ``query_id``, then the
        metrics (LAReQA: ``ap``, ``r@k``, ``p@k``, ``f1@k``, ``ndcg@10``, ``rank_distance``;
        bitext: ``correct@1``, ``ap`` = reciprocal rank, ``rank``; NaN in the other kind's columns)."""
        path = self.per_query_path(trial_id)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no per-query results for {trial_id!r} (pruned, failed or not finished)")
        return pd.read_parquet(path)

    def per_query_all(self, include_zero_shot: bool = False) -> pd.DataFrame:
        """Every stored trial's per-query rows with a leading ``trial_id`` column (the
        untrained model's as ``trial_id == "zero-shot"`` when ``include_zero_shot``)."""
        frames = []
        for path in sorted((self.dir / "per_query").glob("*.parquet")):
            if path.stem == ZERO_SHOT and not include_zero_shot:
                continue
            frame = pd.read_parquet(path)
            frame.insert(0, "trial_id", path.stem)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial_id", "dataset"])

    def zero_shot(self) -> dict | None:
        """``{"model": ..., "metrics": {"final/<dataset>/<key>": value}}`` of the untrained
        model, or None unless both it and its per-query file are stored."""
        path = self.dir / ZERO_SHOT_FILE
        if not path.is_file() or not self.has_per_query(ZERO_SHOT):
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # cut by a killed driver: computed again

    def write_zero_shot(self, model: str, metrics: dict[str, float], per_query: bytes | pd.DataFrame) -> None:
        # The per-query file first: zero_shot.json is the marker that both are complete.
        self.write_per_query(ZERO_SHOT, per_query)
        payload = {"model": model, "metrics": metrics}
        _write_atomic(self.dir / ZERO_SHOT_FILE, (json.dumps(payload, indent=2, allow_nan=True) + "\n").encode())

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
                 experiment: str = "search", storage: str | None = None):
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
        if has_final:
            # Before the trial's row: a row in trials.jsonl means its per-query file is here.
            self.collect_per_query(trial_id, result.get(PER_QUERY_ROWS))
        self.store.append_trial(row, matrices)
        objective = {k: round(v, 4) for k, v in row.items() if k.startswith("final/") and k.endswith("/cross_map")}
        print(f"[study] trial {trial_id} {status} (cell {row['cell']}, {wall:.0f} s) {objective}", flush=True)
        if self._train_runs_dir and status in ("completed", "pruned"):
            run_dir = Path(self._train_runs_dir) / f"train-{self._experiment}-{trial_id}"
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
        done = trials[(trials["phase"] == self._experiment) & (trials["status"] == "completed")]
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
