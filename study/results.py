"""The study's results table: ``results/`` of a study directory, read and written here.

No Ray: the driver's Tune callback (:mod:`study.tune_callback`) writes through
:class:`ResultStore` as trials report and finish; the reports (:mod:`study.report`) read the
same store at any time, also where Ray is not installed.

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
(:func:`per_query_uri`, through :mod:`study.storage` (``pyarrow.fs``): a local or shared directory, or a cloud URI
such as ``s3://``, the storage Ray itself persists checkpoints to and which a multi-node
cluster must share), and reports only the row count. The driver copies the file into
``results/per_query/`` when the trial finishes, BEFORE it writes the trial's row, so a
finished trial in ``trials.jsonl`` always has its per-query file; ``--resume`` re-records
(and so re-copies) a trial the driver missed, and
:meth:`study.tune_callback.ResultsCallback.backfill_per_query`
fetches any file still missing for a finished trial.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from hybridir.evaluation.vocabulary import DATASET
from study.storage import join
from study.vocabulary import (
    CELL,
    CONFIG_AXES,
    CONFIG_TUNED,
    PHASE,
    SEED,
    SOURCE_TRIAL,
    STEP,
    TRIAL_ID,
    ZERO_SHOT,
    ZERO_SHOT_FILE,
    axis_column,
    train_run_name,
    tuned_column,
)

TRIAL_KEY = [TRIAL_ID]
HISTORY_KEY = [TRIAL_ID, STEP]


def per_query_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One frame of the per-query rows of several datasets, ``dataset`` first."""
    parts = [frame.assign(**{DATASET: dataset}) for dataset, frame in frames.items() if len(frame)]
    if not parts:
        return pd.DataFrame(columns=[DATASET])
    merged = pd.concat(parts, ignore_index=True)
    return merged[[DATASET, *[c for c in merged.columns if c != DATASET]]]


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as zstd-compressed parquet (string columns are dictionary-encoded)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd")
    return buffer.getvalue()


def read_per_query(path: Path) -> pd.DataFrame:
    """A per-query parquet with its text columns (dataset, setting, languages, ids) as plain
    Python strings: pandas' default Arrow-backed strings make the verdicts' many ``isin`` and
    ``set`` passes over these columns element-by-element Python loops (most of a findings
    rebuild's time); the values are the same."""
    frame = pd.read_parquet(path)
    text = [column for column in frame.columns if pd.api.types.is_string_dtype(frame[column].dtype)
            and not isinstance(frame[column].dtype, pd.CategoricalDtype)]
    return frame.astype({column: object for column in text}) if text else frame


def per_query_uri(storage: str, experiment: str, trial_id: str) -> str:
    """Where a trial's rank 0 leaves its per-query parquet: its Train run's folder of the
    storage path (kept when the driver drops the run's checkpoints)."""
    return join(storage, train_run_name(experiment, trial_id), "per_query.parquet")


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
            path = self.dir / "matrices" / f"{row[TRIAL_ID]}.json"
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
        return read_per_query(path)

    def per_query_all(self, include_zero_shot: bool = False) -> pd.DataFrame:
        """Every stored trial's per-query rows with a leading ``trial_id`` column (the
        untrained model's as ``trial_id == "zero-shot"`` when ``include_zero_shot``)."""
        frames = []
        for path in sorted((self.dir / "per_query").glob("*.parquet")):
            if path.stem == ZERO_SHOT and not include_zero_shot:
                continue
            frame = read_per_query(path)
            frame.insert(0, TRIAL_ID, path.stem)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[TRIAL_ID, DATASET])

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
        return set(trials[TRIAL_ID]) if len(trials) else set()


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
    row = {PHASE: config.get(PHASE), CELL: config.get(CELL), SEED: config.get(SEED),
           SOURCE_TRIAL: config.get(SOURCE_TRIAL)}
    row.update({axis_column(k): v for k, v in (config.get(CONFIG_AXES) or {}).items()})
    row.update({tuned_column(k): v for k, v in (config.get(CONFIG_TUNED) or {}).items()})
    return row


def history_rows(output_dir: str | Path) -> list[dict]:
    """Every stored intermediate report of a study (deduplicated), as dicts."""
    frame = ResultStore(Path(output_dir)).history()
    return frame.to_dict("records") if len(frame) else []
