"""End to end: a 2-trial study (2 Ray Train DDP workers per trial, Tune + OptunaSearch + ASHA)
on the offline mE5-small cut to 1 layer, interrupted with SIGINT after its first trial and
resumed: no trial rerun, no row duplicated, every report file written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = [
    # Full depth is too slow for a test: 2 layers, the top one trained, the bottom cached.
    "--set", "model.num_layers=2",
    "--set", "model.train_layers=1",
    "--set", "max_steps=4",
    "--set", "optim.warmup_steps=2",
    "--set", "log_every=2",
    "--set", "evaluation.intermediate.every=2",
    "--set", "evaluation.intermediate.max_queries=8",
    "--set", "evaluation.intermediate.languages=[en, th]",
    "--set", "evaluation.final=[{dataset: xquad-r, languages: [en, th, el], max_queries: 12}]",
    # the default study reports in the paper layout; this test reads the ratio tables
    "--set", "report.builder=ratio",
    "--set", "report.low_resource_languages=[th, el]",
    "--set", "axes.batching.alpha=[0.0, 1.0]",
    "--set", "search.asha.grace_period=2",
    # the shipped default study tunes nothing and re-runs seeds; these tests exercise Optuna
    "--set", 'tune={"optim.lr": {"distribution": "loguniform", "low": 1.0e-5, "high": 3.0e-4}}',
    "--set", "search.seeds=0",
    "--samples", "1",
    # 2 DDP workers of 1 CPU each (the shipped default runs one worker with both cores)
    "--set", "resources.cpus_per_worker=1",
    "--num-workers", "2",
]


def _driver(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "study" / "run.py"), *args], cwd=REPO, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _finished_lines(output: Path) -> list[dict]:
    path = output / "results" / "trials.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_study_runs_is_interrupted_and_resumes(tmp_path):
    output = tmp_path / "study"
    first = _driver([*TINY, "--output", str(output)], tmp_path / "first.log")
    deadline = time.time() + 420
    while not _finished_lines(output) and first.poll() is None and time.time() < deadline:
        time.sleep(2)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    assert _finished_lines(output), "no trial finished in time"
    first.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the second trial
    try:
        code = first.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(first.pid, signal.SIGKILL)  # a driver that ignores Ctrl-C is killed, as a user would
        code = first.wait()
    finished_before = {row["trial_id"] for row in _finished_lines(output)}
    assert code != 0 or len(finished_before) == 2

    second = _driver(["--resume", str(output)], tmp_path / "second.log")
    assert second.wait(timeout=420) == 0, (tmp_path / "second.log").read_text()[-3000:]

    lines = _finished_lines(output)
    trial_ids = [row["trial_id"] for row in lines]
    assert len(set(trial_ids)) == 2, trial_ids
    assert len(trial_ids) == 2, f"a trial was recorded twice: {trial_ids}"  # finished trials not rerun
    assert finished_before <= set(trial_ids)
    trials = pd.read_csv(output / "results" / "trials.csv")
    assert sorted(trials["axis/batching.alpha"]) == [0.0, 1.0]
    assert set(trials["status"]) == {"completed"}
    assert trials["final/xquad-r/cross_map"].between(0, 1).all()
    assert (trials["num_workers"] == 2).all()
    # per-query rows of every finished trial's final evaluation, copied from the storage path
    for trial_id, rows in zip(trials["trial_id"], trials["per_query/rows"]):
        per_query = pd.read_parquet(output / "results" / "per_query" / f"{trial_id}.parquet")
        assert len(per_query) == rows > 0 and set(per_query["dataset"]) == {"xquad-r"}
        assert not per_query.duplicated(["setting", "query_lang", "candidate_lang", "query_id"]).any()
    # the untrained model, once (the resume found it cached)
    zero_shot = json.loads((output / "results" / "zero_shot.json").read_text())
    assert 0 <= zero_shot["metrics"]["final/xquad-r/cross_map"] <= 1 and zero_shot["model"]
    assert len(pd.read_parquet(output / "results" / "per_query" / "zero-shot.parquet")) == trials["per_query/rows"].iloc[0]
    assert "zero-shot baseline" in (tmp_path / "second.log").read_text()
    assert "cached" in (tmp_path / "second.log").read_text()
    history = pd.read_csv(output / "results" / "history.csv")
    assert not history.duplicated(["trial_id", "study_step"]).any()
    assert set(history["study_step"]) >= {2, 4}

    report_dir = output / "reports" / "default"
    ratio = pd.read_csv(report_dir / "ratio.csv")
    trained = ratio[ratio["run"] != "zero-shot"]  # the untrained model has its own row (no alpha)
    assert sorted(trained["alpha"]) == [0.0, 1.0] and (ratio["run"] == "zero-shot").sum() == 1
    per_language = pd.read_csv(report_dir / "ratio_per_language.csv")
    assert set(per_language["language"]) == {"th", "el"}
    # partial fine-tuning: one activation cache for the zero-shot run, every trial and worker
    assert set(trials["model/training"]) == {"top 1 of 2 layers fine-tuned, embeddings and lower 1 layer frozen"}
    assert list((output / "activation-cache").glob("*/shard-*.safetensors"))
    assert (history["train/activation_cache_hit_rate"].dropna() > 0).any()
    assert "top 1 of 2 layers fine-tuned" in (report_dir / "report.md").read_text()
    for name in ("ratio_worst_xquad-r.png", "learning_curves.png", "report.md"):
        assert (report_dir / name).stat().st_size > 0
    # the report CLI rebuilds the same tables from the stored results
    rebuilt = subprocess.run([sys.executable, str(REPO / "study" / "report.py"), str(output)],
                             cwd=REPO, capture_output=True, text=True, check=True)
    assert rebuilt.stdout.strip() == str(report_dir)
    pd.testing.assert_frame_equal(pd.read_csv(report_dir / "ratio.csv"), ratio)
