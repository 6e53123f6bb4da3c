"""End to end: one small study (2 trials, 2 Ray Train DDP workers per trial, Tune + Optuna +
ASHA, the offline mE5-small cut to 2 layers with its bottom layer cached), interrupted again and
again at different moments and resumed each time, as a user at a terminal would:

* during the zero-shot evaluation: Ctrl-C (SIGINT to the process group);
* inside a trial, after its first report: ``kill PID`` (SIGTERM to the driver alone);
* between trials, right after one finished: Ctrl-C again;
* then ``--resume`` finishes the study.

After every interruption the console holds no traceback and exactly one ``[study]`` line
saying how to resume, the exit code is the shell's (130 for SIGINT, 143 for SIGTERM), and no
process of the driver's session (Ray's included) outlives it. The finished study has every
trial exactly once, and the same study checks what leaves it for other tools: the results and
per-query files, the reports (rebuilt by the report CLI), the Optuna journal, MLflow and
TensorBoard runs (keyed by the study step across the resumes), the exported
sentence-transformers models, and a console of one line per trial event.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from study_process import REPO, driver, finished, history, kill_session, titled, wait, wait_session_gone, \
    wait_until

pytestmark = pytest.mark.slow

TINY = [
    # Full depth is too slow for a test: 2 layers, the top one trained, the bottom cached.
    "--set", "model.num_layers=2",
    "--set", "model.train_layers=1",
    "--set", "max_steps=6",
    "--set", "optim.warmup_steps=2",
    "--set", "log_every=2",
    "--set", "evaluation.intermediate.every=2",
    "--set", "evaluation.intermediate.max_queries=8",
    "--set", "evaluation.intermediate.languages=[en, th]",
    "--set", "evaluation.final=[{dataset: xquad-r, languages: [en, th, el], max_queries: 12}]",
    # the default study reports in the paper layout; this test reads the ratio tables
    "--set", "report.builder=ratio",
    "--set", "report.low_resource_languages=[th, el]",
    "--set", "axes.batching.alpha=[0.0, 1.0]",  # two trials: one to interrupt, one to start after it
    "--set", "search.asha.grace_period=2",
    # the shipped default study tunes nothing and re-runs seeds; these tests exercise Optuna
    "--set", 'tune={"optim.lr": {"distribution": "loguniform", "low": 1.0e-5, "high": 3.0e-4}}',
    "--set", "search.seeds=0",
    "--samples", "1",
    # 2 DDP workers of 1 CPU each (the shipped default runs one worker with both cores)
    "--set", "resources.cpus_per_worker=1",
    "--num-workers", "2",
    "--tracker", "tensorboard",
    "--tracker", "mlflow",
]
STEPS = {2, 4, 6}  # the study steps every trial reports at
RESUME_HINT = "python study/run.py --resume"


def _trial_running(output: Path) -> str | None:
    """A trial that has reported at least once and has not finished."""
    done = {row["trial_id"] for row in finished(output)}
    reported = [row["trial_id"] for row in history(output) if row["trial_id"] not in done]
    return reported[-1] if reported else None


# (moment, its condition (output, driver's session, trials finished before), the signal, sent
# to the process group as Ctrl-C in a terminal sends it (True) or to the driver alone as `kill PID`)
MOMENTS = [
    ("zero-shot", lambda output, sid, before: titled("ray::zero_shot_task", sid), signal.SIGINT, True),
    ("in-trial", lambda output, sid, before: _trial_running(output), signal.SIGTERM, False),
    ("between-trials", lambda output, sid, before: len(finished(output)) > before, signal.SIGINT, True),
]


@dataclass
class Interruption:
    moment: str
    signum: int
    code: int
    log: Path
    left: list[str]  # processes of the driver's session still alive 30 s after it exited
    running: str | None  # the trial running when the signal was sent
    finished_after: set[str]  # trial ids in results/ after the driver exited
    zero_shot_stored: bool  # results/zero_shot.json existed after the driver exited


@dataclass
class Study:
    output: Path
    interruptions: list[Interruption]
    final_log: Path
    final_code: int
    final_left: list[str]

    @property
    def logs(self) -> list[Path]:
        return [i.log for i in self.interruptions] + [self.final_log]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    """The study above, interrupted at every moment of MOMENTS, then finished by a last resume."""
    root = tmp_path_factory.mktemp("e2e")
    output = root / "study"
    interruptions = []
    for index, (moment, condition, signum, group) in enumerate(MOMENTS):
        log = root / f"{index}-{moment}.log"
        before = len(finished(output))
        process = driver([*TINY, "--output", str(output)] if index == 0 else ["--resume", str(output)], log)
        wait_until(lambda: condition(output, process.pid, before), process, log, 300, f"the moment '{moment}'")
        running = _trial_running(output)
        if group:
            os.killpg(process.pid, signum)  # Ctrl-C in a terminal: the foreground process group
        else:
            os.kill(process.pid, signum)  # `kill PID`
        code = wait(process, log, 180)
        left = wait_session_gone(process.pid)
        kill_session(process.pid)  # a leftover would load the next driver's machine
        interruptions.append(Interruption(moment, signum, code, log, left, running,
                                          {row["trial_id"] for row in finished(output)},
                                          (output / "results" / "zero_shot.json").exists()))
    final_log = root / "finish.log"
    process = driver(["--resume", str(output)], final_log)
    code = wait(process, final_log, 420)
    return Study(output, interruptions, final_log, code, wait_session_gone(process.pid))


@pytest.mark.parametrize("index", range(len(MOMENTS)), ids=[moment for moment, *_ in MOMENTS])
def test_an_interrupted_study_exits_cleanly_and_says_how_to_resume(study, index):
    done = study.interruptions[index]
    text = done.log.read_text()
    assert done.code == 128 + done.signum, f"exit {done.code}, expected {128 + done.signum}:\n{text[-3000:]}"
    assert "Traceback" not in text and "Exception ignored" not in text, text[-3000:]
    hints = [line for line in text.splitlines() if RESUME_HINT in line]
    assert len(hints) == 1 and hints[0].startswith("[study] interrupted"), text[-3000:]
    assert "Tuner.restore" not in text, text[-3000:]
    assert not done.left, "processes outlived the interrupted driver:\n" + "\n".join(done.left)
    if done.moment == "zero-shot":
        assert "zero-shot" in text and not done.zero_shot_stored
    if done.moment == "in-trial":
        assert done.running and done.running not in done.finished_after


def test_the_last_resume_finishes_every_trial_once_with_every_result(study):
    output = study.output
    text = study.final_log.read_text()
    assert study.final_code == 0, text[-3000:]
    assert RESUME_HINT not in text, text[-3000:]
    assert not study.final_left, "processes outlived the driver:\n" + "\n".join(study.final_left)

    lines = finished(output)
    trial_ids = [row["trial_id"] for row in lines]
    assert len(set(trial_ids)) == 2, trial_ids
    assert len(trial_ids) == 2, f"a trial was recorded twice: {trial_ids}"  # finished trials not rerun
    for done in study.interruptions:
        assert done.finished_after <= set(trial_ids)
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
    # the untrained model, once (the last resume found it cached)
    zero_shot = json.loads((output / "results" / "zero_shot.json").read_text())
    assert 0 <= zero_shot["metrics"]["final/xquad-r/cross_map"] <= 1 and zero_shot["model"]
    assert len(pd.read_parquet(output / "results" / "per_query" / "zero-shot.parquet")) == trials["per_query/rows"].iloc[0]
    assert "zero-shot baseline" in text and "cached" in text
    history_csv = pd.read_csv(output / "results" / "history.csv")
    assert not history_csv.duplicated(["trial_id", "study_step"]).any()
    for trial_id in trials["trial_id"]:  # the trial stopped mid-way included: no gap, no duplicate
        assert set(history_csv.loc[history_csv["trial_id"] == trial_id, "study_step"]) == STEPS

    report_dir = output / "reports" / "default"
    ratio = pd.read_csv(report_dir / "ratio.csv")
    trained = ratio[ratio["run"] != "zero-shot"]  # the untrained model has its own row (no alpha)
    assert sorted(trained["alpha"]) == [0.0, 1.0] and (ratio["run"] == "zero-shot").sum() == 1
    per_language = pd.read_csv(report_dir / "ratio_per_language.csv")
    assert set(per_language["language"]) == {"th", "el"}
    # partial fine-tuning: one activation cache for the zero-shot run, every trial and worker
    assert set(trials["model/training"]) == {"top 1 of 2 layers fine-tuned, embeddings and lower 1 layer frozen"}
    assert list((output / "activation-cache").glob("*/shard-*.safetensors"))
    assert (history_csv["train/activation_cache_hit_rate"].dropna() > 0).any()
    assert "top 1 of 2 layers fine-tuned" in (report_dir / "report.md").read_text()
    for name in ("ratio_worst_xquad-r.png", "learning_curves.png", "report.md"):
        assert (report_dir / name).stat().st_size > 0
    # the report CLI rebuilds the same tables from the stored results
    rebuilt = subprocess.run([sys.executable, str(REPO / "study" / "report.py"), str(output)],
                             cwd=REPO, capture_output=True, text=True, check=True)
    assert rebuilt.stdout.strip() == str(report_dir)
    pd.testing.assert_frame_equal(pd.read_csv(report_dir / "ratio.csv"), ratio)


def _finished_study(study: Study) -> tuple[Path, pd.DataFrame]:
    assert study.final_code == 0, study.final_log.read_text()[-3000:]
    return study.output, pd.read_csv(study.output / "results" / "trials.csv")


def test_optuna_journal_holds_every_trial_across_the_resumes(study):
    _check_optuna_journal(*_finished_study(study))


def test_trackers_hold_every_trial_across_the_resumes(study):
    output, trials = _finished_study(study)
    _check_trackers(output, trials, pd.read_csv(output / "results" / "history.csv"))


def test_exported_models_load_in_sentence_transformers(study):
    _check_exported_models(*_finished_study(study))


def test_console_has_one_line_per_event(study):
    _finished_study(study)
    _check_console(*study.logs)


def _check_optuna_journal(output: Path, trials: pd.DataFrame) -> None:
    """Each cell's Optuna study is in the journal, its trial completed with the objective the
    results table holds, also for the trial interrupted and resumed."""
    import optuna

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(output / "optuna.journal")))
    names = sorted(optuna.get_all_study_names(storage))
    assert names == [f"{output.name}/search/cell-0", f"{output.name}/search/cell-1"]
    told = {}
    for name in names:
        for trial in optuna.load_study(study_name=name, storage=storage).get_trials():
            if "tune_trial_id" in trial.user_attrs:
                told[trial.user_attrs["tune_trial_id"]] = trial
    for row in trials.to_dict("records"):
        trial = told[row["trial_id"]]
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.value == pytest.approx(row["inter/cross_map"])
        assert trial.params["optim.lr"] == pytest.approx(row["tuned/optim.lr"])
        assert set(trial.intermediate_values) == STEPS  # keyed by the study step, across the resumes


def _check_trackers(output: Path, trials: pd.DataFrame, history: pd.DataFrame) -> None:
    """MLflow (sqlite file in the study directory): one run per trial, also for the resumed
    one, tagged with study, cell and seed, every report at its study step; TensorBoard: the
    same scalars read back from the event files."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    client = MlflowClient(f"sqlite:///{output / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("default")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.tags["trial_id"] for run in runs) == sorted(trials["trial_id"])
    for run in runs:
        row = trials[trials["trial_id"] == run.data.tags["trial_id"]].iloc[0]
        assert run.data.tags["study"] == "default" and run.data.tags["phase"] == "search"
        assert int(run.data.tags["cell"]) == row["cell"] and int(run.data.tags["seed"]) == 0
        assert float(run.data.tags["axis/batching.alpha"]) == row["axis/batching.alpha"]
        curve = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "inter/cross_map")}
        reported = history[history["trial_id"] == row["trial_id"]].set_index("study_step")["inter/cross_map"]
        assert set(curve) == STEPS
        assert curve[2] == pytest.approx(reported[2])
        assert run.data.metrics["final/xquad-r/cross_map"] == pytest.approx(row["final/xquad-r/cross_map"])
    run_dirs = sorted((output / "tensorboard" / "search").iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        trial_id = run_dir.name.rsplit("-", 1)[-1]
        row = trials[trials["trial_id"] == trial_id].iloc[0]
        assert run_dir.name.startswith(f"search-cell{row['cell']}-seed0-")
        events = EventAccumulator(str(run_dir))
        events.Reload()
        scalars = {event.step: event.value for event in events.Scalars("final/xquad-r/cross_map")}
        assert scalars == {max(STEPS): pytest.approx(row["final/xquad-r/cross_map"])}
        assert {event.step for event in events.Scalars("inter/cross_map")} == STEPS


def _check_exported_models(output: Path, trials: pd.DataFrame) -> None:
    """Each cell's best trial, exported at the end of the study, loads in sentence-transformers
    with its prompts and gives the trained checkpoint's embeddings."""
    import torch
    from sentence_transformers import SentenceTransformer

    from hybridir.model import BiEncoder

    index = json.loads((output / "models" / "index.json").read_text())
    assert sorted(entry["directory"] for entry in index["models"]) == ["cell-0", "cell-1"]
    texts = ["Wer schrieb die Odyssee?", "Homer wrote the Odyssey."]
    for entry in index["models"]:
        assert entry["trial_id"] in set(trials["trial_id"])
        exported = SentenceTransformer(str(output / "models" / entry["directory"]), device="cpu")
        ours = BiEncoder.load(entry["source_checkpoint"])
        for kind, encode in (("query", exported.encode_query), ("passage", exported.encode_document)):
            theirs = torch.as_tensor(encode(texts, convert_to_numpy=True))
            cosine = torch.nn.functional.cosine_similarity(theirs, ours.encode(texts, kind), dim=-1)
            assert (cosine >= 0.99999).all(), (entry["directory"], kind, cosine)
        card = (output / "models" / entry["directory"] / "README.md").read_text()
        assert card.startswith("---") and "base_model: intfloat/multilingual-e5-small" in card
        assert "Q4_0" in card and entry["trial_id"] in card


def _check_console(*logs: Path) -> None:
    """Without --verbose a study prints one [study] line per event: no metric dictionaries, no
    INFO chatter of Ray, Ray Train or the libraries. Ray's WARNING records stay (Ctrl-C makes
    Tune warn that it saved its state), with the lines that continue them."""
    warning = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:,.]+\s+WARNING ")
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text and "Exception ignored" not in text, text[-3000:]
        lines = [line for line in text.splitlines() if line.strip()]
        chatter, in_warning = [], False
        for line in lines:
            if line.startswith(("[study]", "[export]")):
                in_warning = False
            elif warning.match(line):
                in_warning = True
            elif not in_warning:
                chatter.append(line)
        assert not chatter, "\n".join(chatter[:20])
        assert not [line for line in lines if " INFO " in line or "{'" in line], "INFO lines or metric dicts"
        assert len(lines) <= 30, "\n".join(lines)
    second = logs[-1].read_text()
    assert "completed" in second and "[2/2 search trials done]" in second and "exported 2 model(s)" in second
