"""Faults injected into real studies (Ray Tune + Ray Train DDP, 2 workers, no mocks).

* a Train worker process SIGKILLed mid-trial: Train retries the trial from its last checkpoint
  and the final metrics equal those of uninterrupted trials with the same config and seed;
  two uninterrupted trials of the same config and seed are identical (determinism);
* the study driver SIGKILLed mid-trial: ``--resume`` finishes the study, every trial once,
  the interrupted trial's history without gaps or duplicate steps;
* Tune's saved state broken (tuner.pkl cut, experiment_state garbled, searcher state cut):
  ``--resume`` names the file, moves the state aside and continues from results/.

Tolerance: metrics must agree to 1e-6 absolute. On CPU the runs are in fact bit-identical
(fixed threads, gloo all-reduce of 2 ranks, RNG states of every rank in each checkpoint); the
tolerance only absorbs the float -> JSON -> CSV round trip of the results table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from test_study_e2e import _driver

TOLERANCE = 1e-6
COMMON = [
    "--set", "model.num_layers=1",
    "--set", "model.train_layers=null",  # the classic full fine-tuning path (e2e tests the cache)
    "--set", "log_every=2",
    "--set", "evaluation.intermediate.every=2",
    "--set", "evaluation.intermediate.max_queries=8",
    "--set", "evaluation.intermediate.languages=[en, th]",
    "--set", "evaluation.final=[{dataset: xquad-r, languages: [en, th], max_queries: 8}]",
    "--set", "axes.batching.alpha=[0.5]",
    "--set", "search.asha=null",
    # the shipped default study tunes nothing and re-runs seeds; these tests exercise Optuna
    "--set", 'tune={"optim.lr": {"distribution": "loguniform", "low": 1.0e-5, "high": 3.0e-4}}',
    "--set", "search.seeds=0",
    # 2 DDP workers of 1 CPU each (the shipped default runs one worker with both cores)
    "--set", "resources.cpus_per_worker=1",
    "--num-workers", "2",
]
COMPARED = ("final/", "inter/", "train/loss")

pytestmark = pytest.mark.slow


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # the line being written
    return rows


def _history(output: Path) -> list[dict]:
    return _jsonl(output / "results" / "history.jsonl")


def _trial_order(output: Path) -> list[str]:
    return list(dict.fromkeys(row["trial_id"] for row in _history(output)))


def _train_worker_pids() -> list[int]:
    """Live Ray Train worker processes (Ray titles them ``ray::RayTrainWorker...``), newest first."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            started = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[19])
        except (OSError, IndexError, ValueError):
            continue
        if cmdline.startswith("ray::RayTrainWorker"):
            found.append((started, int(entry.name)))
    return [pid for _, pid in sorted(found, reverse=True)]


def _wait(process: subprocess.Popen, log: Path, timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"study did not finish in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _compared_columns(trials: pd.DataFrame) -> list[str]:
    columns = [c for c in trials.columns if c.startswith(COMPARED) and not c.endswith("_s")  # timings
               and pd.api.types.is_numeric_dtype(trials[c])]
    assert any(c.startswith("final/") for c in columns) and any(c.startswith("inter/") for c in columns)
    return columns


def _steps(output: Path, trial_id: str) -> list[int]:
    history = pd.read_csv(output / "results" / "history.csv")
    return sorted(history.loc[history["trial_id"] == trial_id, "study_step"].astype(int))


def test_killed_worker_is_retried_from_its_checkpoint_and_matches_uninterrupted_runs(tmp_path):
    output, log = tmp_path / "study", tmp_path / "driver.log"
    # One config (a single-choice space) three times: trials 1 and 3 run undisturbed, trial 2
    # loses a DDP worker to SIGKILL after its first checkpoint.
    driver = _driver([*COMMON, "--set", "max_steps=8", "--set", "resources.max_failures=2",
                      "--set", 'tune={"optim.lr": {"distribution": "choice", "values": [0.0001]}}',
                      "--samples", "3", "--output", str(output)], log)
    victim, deadline = None, time.time() + 900
    while driver.poll() is None and time.time() < deadline and victim is None:
        order = _trial_order(output)
        if len(order) >= 2:
            pids = _train_worker_pids()
            if pids:
                victim = pids[0]
                os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
    assert victim is not None, f"no second trial to disturb:\n{log.read_text()[-3000:]}"
    assert _wait(driver, log, 900) == 0, log.read_text()[-3000:]

    trials = pd.read_csv(output / "results" / "trials.csv")
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}, trials[["trial_id", "status"]]
    killed = _trial_order(output)[1]
    retried = [row for row in _history(output) if row["trial_id"] == killed and "train/resumed_from_step" in row]
    assert retried, "the disturbed trial was not resumed from a checkpoint"
    assert min(row["train/resumed_from_step"] for row in retried) >= 2  # not restarted from scratch
    assert _steps(output, killed) == [2, 4, 6, 8]  # no gap, no duplicate

    columns = _compared_columns(trials)
    values = trials.set_index("trial_id")[columns]
    reference = values.drop(index=killed).iloc[0]
    assert len(columns) > 50
    for trial_id, row in values.iterrows():
        # Undisturbed vs undisturbed: determinism; disturbed vs undisturbed: exact retry.
        assert (row - reference).abs().max() <= TOLERANCE, (trial_id, (row - reference).abs().sort_values().tail())


# ------------------------------------------------------------------ driver killed, state broken
@pytest.fixture(scope="module")
def killed_study(tmp_path_factory):
    """A 2-trial study whose driver got SIGKILL while its second trial was training, plus a
    copy of the directory taken right after the kill (for the broken-state test)."""
    root = tmp_path_factory.mktemp("killed")
    output, log = root / "study", root / "first.log"
    driver = _driver([*COMMON, "--set", "max_steps=6", "--samples", "2", "--output", str(output)], log)
    deadline = time.time() + 600
    while driver.poll() is None and time.time() < deadline:
        order = _trial_order(output)
        if len(order) >= 2 and any(r["trial_id"] == order[1] for r in _history(output)):
            break
        time.sleep(0.2)
    assert driver.poll() is None, f"the study ended before its second trial:\n{log.read_text()[-3000:]}"
    os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as the OOM killer would
    driver.wait()
    interrupted = _trial_order(output)[1]
    copy = root / "copy"
    time.sleep(2)
    shutil.copytree(output, copy, symlinks=True)
    return output, copy, interrupted, root


@pytest.fixture(scope="module")
def resumed_study(killed_study):
    output, _, interrupted, root = killed_study
    finished_before = {row["trial_id"] for row in _jsonl(output / "results" / "trials.jsonl")}
    log = root / "resume.log"
    assert _wait(_driver(["--resume", str(output)], log), log, 600) == 0, log.read_text()[-3000:]
    return output, interrupted, finished_before, log


def test_driver_sigkill_then_resume_finishes_every_trial_once(resumed_study):
    output, interrupted, finished_before, log = resumed_study
    assert interrupted not in finished_before

    lines = _jsonl(output / "results" / "trials.jsonl")
    trials = pd.read_csv(output / "results" / "trials.csv")
    assert sorted(trials["trial_id"]) == sorted({row["trial_id"] for row in lines})
    assert len(trials) == 2 and interrupted in set(trials["trial_id"]) and finished_before <= set(trials["trial_id"])
    assert set(trials["status"]) == {"completed"}
    assert [row["trial_id"] for row in lines].count(interrupted) == 1
    assert _steps(output, interrupted) == [2, 4, 6]  # resumed, no gap, no duplicate
    assert "restoring search experiment" in log.read_text()


def _driver_traceback(text: str) -> bool:
    """A traceback of the driver itself (lines Ray forwards from its actors carry a prefix)."""
    return any(line.startswith("Traceback") for line in text.splitlines())


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path: Path) -> None:
    path.write_bytes(b"{\"trial_data\": [garbage" + path.read_bytes()[40:])


def _newest(directory: Path, pattern: str) -> Path:
    candidates = sorted(directory.glob(pattern))
    assert candidates, f"no {pattern} in {directory}: {sorted(p.name for p in directory.iterdir())}"
    return max(candidates)


def test_broken_experiment_state_mid_study_recovers_from_results(killed_study):
    _, copy, interrupted, root = killed_study
    experiment = copy / "ray" / "search"
    broken = _newest(experiment, "experiment_state-*.json")
    _garble(broken)
    kept = {row["trial_id"] for row in _jsonl(copy / "results" / "trials.jsonl")}
    assert len(kept) == 1

    log = root / "copy.log"
    assert _wait(_driver(["--resume", str(copy)], log), log, 600) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert broken.name in text and not _driver_traceback(text)
    trials = pd.read_csv(copy / "results" / "trials.csv")
    assert len(trials) == 2 and kept <= set(trials["trial_id"])  # the finished trial kept, not rerun
    assert interrupted not in set(trials["trial_id"])  # the interrupted one ran again under a new id
    assert list((copy / "ray").glob("search.broken-*")), "the broken state was not kept aside"


@pytest.mark.parametrize("target", ["tuner.pkl", "searcher-state"])
def test_broken_state_of_a_finished_study_is_named_and_nothing_reruns(resumed_study, target):
    output, _, _, log = resumed_study
    root = log.parent
    study = root / f"finished-{target}"
    shutil.copytree(output, study, symlinks=True)
    experiment = study / "ray" / "search"
    broken = experiment / "tuner.pkl" if target == "tuner.pkl" else _newest(experiment, "searcher-state-*.pkl")
    _cut_in_half(broken)
    before = (study / "results" / "trials.jsonl").read_text()

    log = root / f"{target}.log"
    assert _wait(_driver(["--resume", str(study)], log), log, 300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert broken.name in text and not _driver_traceback(text)
    assert "2 trial(s) already in results/ are kept; 0 left to run" in text
    assert (study / "results" / "trials.jsonl").read_text() == before  # nothing rerun or rewritten
