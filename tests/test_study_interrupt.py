"""Ctrl-C and SIGTERM of a running study, again and again, at different moments.

One small study (2 cells, one trial each, the tiny random-init encoder: the property under
test is the driver's behaviour, not the model) is interrupted during the zero-shot evaluation,
inside a trial and between trials (a loop over :data:`MOMENTS`), each time resumed with
``--resume``; the last resume finishes it. After every interruption the console holds no
traceback and exactly one ``[study]`` line saying how to resume, the exit code is the shell's
(130 for SIGINT, 143 for SIGTERM), and no process of the driver's session (Ray's included)
outlives it. At the end every trial is in the results exactly once.
"""

from __future__ import annotations

import os
import signal

import pandas as pd
import pytest
from study_process import driver, finished, history, titled, wait, wait_session_gone, wait_until

pytestmark = pytest.mark.slow

STUDY = [
    "--set", "model.train_layers=null",
    "--set", "max_steps=6",
    "--set", "log_every=2",
    "--set", "evaluation.intermediate.every=2",
    "--set", "evaluation.intermediate.max_queries=8",
    "--set", "evaluation.intermediate.languages=[en, th]",
    "--set", "evaluation.final=[{dataset: xquad-r, languages: [en, th], max_queries: 8}]",
    "--set", "search.seeds=0",
    "--set", "resources.export_models=false",  # the resumed study keeps its choice (study.yaml)
    "--set", "axes.batching.alpha=[0.0, 1.0]",  # two trials: one to interrupt, one to start after it
]
RESUME_HINT = "python study/run.py --resume"


def _interrupted_console(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]
    assert "Exception ignored" not in text, text[-3000:]
    hints = [line for line in text.splitlines() if RESUME_HINT in line]
    assert len(hints) == 1 and hints[0].startswith("[study] interrupted"), text[-3000:]
    assert "Tuner.restore" not in text, text[-3000:]


def _signal_and_check(process, log, signum, *, group: bool, exit_code: int) -> str:
    if group:
        os.killpg(process.pid, signum)  # Ctrl-C in a terminal: the foreground process group
    else:
        os.kill(process.pid, signum)  # `kill PID`
    code = wait(process, log, 180)
    text = log.read_text()
    assert code == exit_code, f"exit {code}, expected {exit_code}:\n{text[-3000:]}"
    _interrupted_console(text)
    left = wait_session_gone(process.pid)
    assert not left, "processes outlived the interrupted driver:\n" + "\n".join(left)
    return text


def _trial_running(output):
    """A trial that has reported at least once and has not finished."""
    done = {row["trial_id"] for row in finished(output)}
    reported = [row["trial_id"] for row in history(output) if row["trial_id"] not in done]
    return reported[-1] if reported else None


# (moment, its condition (output, driver's session, trials finished before), the signal, to
# the process group as Ctrl-C in a terminal sends it (True) or to the driver alone as `kill PID`)
MOMENTS = [
    ("zero-shot", lambda output, sid, before: titled("ray::zero_shot_task", sid), signal.SIGINT, True),
    ("in-trial", lambda output, sid, before: _trial_running(output), signal.SIGTERM, False),
    ("between-trials", lambda output, sid, before: len(finished(output)) > before, signal.SIGINT, True),
]


def test_interrupted_at_every_moment_then_resumed(tmp_path, tiny_encoder_dir):
    output = tmp_path / "study"
    first = [*STUDY, "--set", f"model.name={tiny_encoder_dir}", "--output", str(output)]
    for index, (moment, condition, signum, group) in enumerate(MOMENTS):
        log = tmp_path / f"{index}-{moment}.log"
        before = len(finished(output))
        process = driver(first if index == 0 else ["--resume", str(output)], log)
        wait_until(lambda: condition(output, process.pid, before), process, log, 240, f"the moment '{moment}'")
        running = _trial_running(output)
        text = _signal_and_check(process, log, signum, group=group, exit_code=128 + signum)
        if moment == "zero-shot":
            assert "zero-shot" in text and not (output / "results" / "zero_shot.json").exists()
        if moment == "in-trial":
            assert running not in {row["trial_id"] for row in finished(output)}

    # The last resume finishes the study: every cell's trial exactly once.
    log = tmp_path / "finish.log"
    process = driver(["--resume", str(output)], log)
    assert wait(process, log, 300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text and "Exception ignored" not in text and RESUME_HINT not in text, text[-3000:]
    assert not wait_session_gone(process.pid)
    ids = [row["trial_id"] for row in finished(output)]
    assert len(ids) == len(set(ids)) == 2, ids
    trials = pd.read_csv(output / "results" / "trials.csv")
    assert sorted(trials["axis/batching.alpha"]) == [0.0, 1.0] and set(trials["status"]) == {"completed"}
    assert (output / "results" / "zero_shot.json").is_file()
    # resources.export_models=false: nothing exported, the user told how to export later
    assert "models not exported (resources.export_models=false)" in text, text[-3000:]
    assert not (output / "models").exists()
