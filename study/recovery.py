"""Tune's saved state, checked before a resume trusts it.

``Tuner.restore`` reads three kinds of files from an experiment directory: ``tuner.pkl``,
the newest ``experiment_state-*.json`` and the newest ``searcher-state-*.pkl``. A driver killed
mid-write, a full disk or a sync gone wrong leaves one of them cut or garbled, and Ray then
fails deep inside ``fit()`` with a traceback that names none of them. :func:`broken_state`
reads each file with the loader Ray uses and names the first one that does not load; the
runner then moves the experiment aside (:func:`quarantine`) and continues from the study's own
results table, which every finished trial has already been written to.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path

from study.ray_internals import experiment_state_pattern, load_experiment_state, searcher_state_pattern

TUNER_FILE = "tuner.pkl"
EXPERIMENT_STATE_PATTERN = experiment_state_pattern()
SEARCHER_STATE_PATTERN = searcher_state_pattern()


def state_files(experiment_dir: Path) -> list[Path]:
    """The files a restore reads, in the order Ray reads them (newest of each kind)."""
    files = [experiment_dir / TUNER_FILE]
    for pattern in (EXPERIMENT_STATE_PATTERN, SEARCHER_STATE_PATTERN):
        candidates = sorted(experiment_dir.glob(pattern))
        if candidates:
            files.append(max(candidates))
    return files


def has_state(experiment_dir: Path) -> bool:
    return experiment_dir.is_dir() and any(
        path.exists() for path in [experiment_dir / TUNER_FILE, *experiment_dir.glob(EXPERIMENT_STATE_PATTERN)]
    )


def broken_state(experiment_dir: Path) -> str | None:
    """``"<file>: <problem>"`` for the first state file a restore would fail on, else None."""
    if not has_state(experiment_dir):
        return None
    if not any(experiment_dir.glob(EXPERIMENT_STATE_PATTERN)):
        return f"{experiment_dir}: no {EXPERIMENT_STATE_PATTERN} (the driver stopped before Tune saved any)"
    for path in state_files(experiment_dir):
        if not path.is_file():
            return f"{path}: missing"
        try:
            data = path.read_bytes()
            if not data:
                raise ValueError("empty file")
            if path.name.startswith("experiment_state"):
                state = load_experiment_state(data.decode("utf-8"))
                if not isinstance(state, dict) or "trial_data" not in state or "runner_data" not in state:
                    raise ValueError("not a Tune experiment state (no trial_data / runner_data)")
            else:
                pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - any failure to load means Ray would fail too
            return f"{path}: {type(exc).__name__}: {str(exc)[:200] or 'unreadable'}"
    return None


def quarantine(experiment_dir: Path) -> Path:
    """Move a broken experiment directory aside (kept for inspection, never reused)."""
    target = experiment_dir.with_name(f"{experiment_dir.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    suffix = 1
    while target.exists():
        target = target.with_name(f"{target.name}-{suffix}")
        suffix += 1
    experiment_dir.rename(target)
    return target
