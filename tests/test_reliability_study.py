"""Faults injected into one real study (Ray Tune + Ray Train DDP, 2 workers, no mocks).

One study of two trials of the same config and seed serves every fault (the property under
test is the study's bookkeeping and Train's restore, not the model: the tiny random-init
encoder stands in for mE5-small):

* trial 1 runs undisturbed;
* trial 2 loses a Train worker process to SIGKILL after its first checkpoint: Train retries it
  from that checkpoint; once it reports again, the study driver itself is SIGKILLed (as the OOM
  killer would) and a copy of the directory is taken;
* ``--resume`` finishes the study: every trial once, trial 2 from its checkpoint, its history
  without gaps or duplicate steps;
* trial 2, killed twice, equals the undisturbed trial 1 (exact retry and resume; on CPU the
  runs are deterministic, so any difference is the faults' doing);
* Tune's saved state broken (experiment_state garbled in the mid-study copy; tuner.pkl or the
  searcher state cut in copies of the finished study): ``--resume`` names the file, moves the
  state aside and continues from results/.

Trials not yet started when a driver stops run after its resume: tests/test_study_e2e.py.

Tolerance: metrics must agree to 1e-6 absolute. On CPU the runs are in fact bit-identical
(fixed threads, gloo all-reduce of 2 ranks, RNG states of every rank in each checkpoint); the
tolerance only absorbs the float -> JSON -> CSV round trip of the results table.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest
from study_process import driver, finished, history, jsonl, kill_session, titled, trial_order, wait, \
    wait_session_gone, wait_until

TOLERANCE = 1e-6
STUDY = [
    "--set", "model.train_layers=null",  # the classic full fine-tuning path (e2e tests the cache)
    "--set", "max_steps=8",
    "--set", "log_every=2",
    "--set", "evaluation.intermediate.every=2",
    "--set", "evaluation.intermediate.max_queries=8",
    "--set", "evaluation.intermediate.languages=[en, th]",
    "--set", "evaluation.final=[{dataset: xquad-r, languages: [en, th], max_queries: 8}]",
    "--set", "axes.batching.alpha=[0.5]",
    "--set", "search.asha=null",
    # one config (a single-choice space) twice, Optuna in the loop
    "--set", 'tune={"optim.lr": {"distribution": "choice", "values": [0.0001]}}',
    "--samples", "2",
    "--set", "search.seeds=0",
    "--set", "resources.max_failures=2",
    "--set", "resources.export_models=false",  # the resumed study keeps its choice (study.yaml)
    # 2 DDP workers of 1 CPU each (the shipped default runs one worker with both cores)
    "--set", "resources.cpus_per_worker=1",
    "--num-workers", "2",
]
COMPARED = ("final/", "inter/", "train/loss")

pytestmark = pytest.mark.slow


def _compared_columns(trials: pd.DataFrame) -> list[str]:
    columns = [c for c in trials.columns if c.startswith(COMPARED) and not c.endswith("_s")  # timings
               and pd.api.types.is_numeric_dtype(trials[c])]
    assert any(c.startswith("final/") for c in columns) and any(c.startswith("inter/") for c in columns)
    return columns


def _steps(output: Path, trial_id: str) -> list[int]:
    history_csv = pd.read_csv(output / "results" / "history.csv")
    return sorted(history_csv.loc[history_csv["trial_id"] == trial_id, "study_step"].astype(int))


def _resumed_reports(output: Path, trial_id: str) -> list[dict]:
    return [row for row in history(output) if row["trial_id"] == trial_id and "train/resumed_from_step" in row]


@pytest.fixture(scope="module")
def faulty_study(tmp_path_factory, tiny_encoder_dir):
    """The study above up to the driver's SIGKILL: (output, copy, second trial id, root)."""
    root = tmp_path_factory.mktemp("faults")
    output, log = root / "study", root / "first.log"
    process = driver([*STUDY, "--set", f"model.name={tiny_encoder_dir}", "--output", str(output)], log)

    def second_trial_worker():
        order = trial_order(output)
        return len(order) >= 2 and titled("ray::RayTrainWorker", process.pid)

    victim = wait_until(second_trial_worker, process, log, 600, "a second trial to disturb", poll_s=0.2)[0]
    os.kill(victim, signal.SIGKILL)  # one DDP worker of the second trial
    second = trial_order(output)[1]
    wait_until(lambda: _resumed_reports(output, second), process, log, 600,
               "a report of the retried second trial", poll_s=0.2)
    os.kill(process.pid, signal.SIGKILL)  # the driver alone, as the OOM killer would
    process.wait()
    # Ray's processes follow their driver; whatever is still alive after 5 s is killed here, so
    # the resume never finds a second local Ray instance loading the machine.
    wait_session_gone(process.pid, timeout=5)
    kill_session(process.pid)
    copy = root / "copy"
    shutil.copytree(output, copy, symlinks=True)
    return output, copy, second, root


@pytest.fixture(scope="module")
def resumed_study(faulty_study):
    output, _, second, root = faulty_study
    finished_before = {row["trial_id"] for row in finished(output)}
    log = root / "resume.log"
    process = driver(["--resume", str(output)], log)
    assert wait(process, log, 600) == 0, log.read_text()[-3000:]
    assert not wait_session_gone(process.pid), "processes outlived the driver"
    return output, second, finished_before, log


def test_killed_worker_is_retried_from_its_checkpoint_and_matches_the_undisturbed_trial(resumed_study):
    output, killed, _, _ = resumed_study
    trials = pd.read_csv(output / "results" / "trials.csv")
    assert len(trials) == 2 and set(trials["status"]) == {"completed"}, trials[["trial_id", "status"]]
    order = trial_order(output)
    assert order[1] == killed and len(order) == 2
    retried = _resumed_reports(output, killed)
    assert retried, "the disturbed trial was not resumed from a checkpoint"
    assert min(row["train/resumed_from_step"] for row in retried) >= 2  # not restarted from scratch
    assert _steps(output, killed) == [2, 4, 6, 8]  # no gap, no duplicate

    columns = _compared_columns(trials)
    values = trials.set_index("trial_id")[columns]
    assert len(columns) > 50
    # Disturbed (a worker SIGKILLed, then the driver) vs undisturbed: exact retry and resume.
    first, disturbed = values.loc[order[0]], values.loc[killed]
    assert (disturbed - first).abs().max() <= TOLERANCE, (disturbed - first).abs().sort_values().tail()


def test_driver_sigkill_then_resume_finishes_every_trial_once(resumed_study):
    output, interrupted, finished_before, log = resumed_study
    assert interrupted not in finished_before and len(finished_before) == 1

    lines = jsonl(output / "results" / "trials.jsonl")
    trials = pd.read_csv(output / "results" / "trials.csv")
    assert sorted(trials["trial_id"]) == sorted({row["trial_id"] for row in lines})
    assert len(trials) == 2 and interrupted in set(trials["trial_id"]) and finished_before <= set(trials["trial_id"])
    assert set(trials["status"]) == {"completed"}
    assert [row["trial_id"] for row in lines].count(interrupted) == 1
    assert _steps(output, interrupted) == [2, 4, 6, 8]  # resumed, no gap, no duplicate
    text = log.read_text()
    assert "restoring search experiment" in text
    # resources.export_models=false, given to the first driver: the resume exports nothing and
    # tells the user how to export later
    assert "models not exported (resources.export_models=false)" in text, text[-3000:]
    assert not (output / "models").exists()


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


def test_broken_experiment_state_mid_study_recovers_from_results(faulty_study):
    _, copy, interrupted, root = faulty_study
    experiment = copy / "ray" / "search"
    broken = _newest(experiment, "experiment_state-*.json")
    _garble(broken)
    kept = {row["trial_id"] for row in finished(copy)}
    assert len(kept) == 1

    log = root / "copy.log"
    assert wait(driver(["--resume", str(copy)], log), log, 600) == 0, log.read_text()[-3000:]
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
    assert wait(driver(["--resume", str(study)], log), log, 300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert broken.name in text and not _driver_traceback(text)
    assert "2 trial(s) already in results/ are kept; 0 left to run" in text
    assert (study / "results" / "trials.jsonl").read_text() == before  # nothing rerun or rewritten
