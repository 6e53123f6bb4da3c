"""Experiment trackers (study.trackers) for real: one local Ray session runs one Tuner of two
study-like trials with the TensorBoard, MLflow and W&B callbacks at once; one trial fails
after a checkpoint and the experiment is resumed with ``Tuner.restore`` (so the callbacks
also go through Tune's pickled state). Everything is then read back from the trackers' own
storage: MLflow's SQLite database through MlflowClient, TensorBoard's event files through
EventAccumulator, and W&B's offline run files (``run-<id>.wandb``: W&B writes no config or
summary file offline and its public API needs the server, so its record log is parsed here).
"""

from __future__ import annotations

import json
import math
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from study.spec import StudyConfigError
from study.trackers import (
    MLFLOW_DB,
    TENSORBOARD_DIR,
    TRACKERS,
    RunLabels,
    check_trackers,
    default_mlflow_uri,
    tracker_key,
    study_metrics,
    tracker_callbacks,
)
from study.vocabulary import MATRICES, MODEL_DISPLAY_NAME, STEP, final_key, inter_key, train_key

STUDY = "trackers-test"
EXPERIMENT = "search"
BASE_SEED = 13
STEPS = (10, 20, 30)
FAILING_CELL = 1  # fails once after its step-20 checkpoint; Tuner.restore resumes it
LOSS, INTER, FINAL = train_key("loss"), inter_key("cross_map"), final_key("xquad-r", "cross_map")
RECALL = final_key("xquad-r", "cross_r@10")  # "@": a character MLflow refuses in a metric name
TRIAL_CONFIGS = {
    0: {"phase": EXPERIMENT, "cell": 0, "axes": {"batching.alpha": 0.5}, "tuned": {"optim.lr": 3e-5},
        "seed": None, "source_trial": None},
    1: {"phase": EXPERIMENT, "cell": 1, "axes": {"batching.alpha": 1.0}, "tuned": {"optim.lr": 1e-4},
        "seed": 7, "source_trial": None},
}


def expected_loss(cell: int, step: int) -> float:
    return cell + 1.0 / step


def expected_inter(cell: int, step: int) -> float:
    return 0.1 * cell + step / 100


def expected_final(cell: int) -> float:
    return 0.5 + 0.1 * cell


def expected_seed(cell: int) -> int:
    seed = TRIAL_CONFIGS[cell]["seed"]
    return BASE_SEED if seed is None else seed


# --- unit tests (no Ray session) ---------------------------------------------------------------


def test_unknown_tracker_name_is_a_study_error():
    expected = r"--tracker comet: unknown tracker; choose from tensorboard, mlflow, wandb"
    with pytest.raises(StudyConfigError, match=expected):
        check_trackers(["tensorboard", "comet"])


@pytest.mark.parametrize("tracker, module", [("wandb", "wandb"), ("mlflow", "mlflow"), ("tensorboard", "tensorboardX")])
def test_missing_package_names_the_pip_install(monkeypatch, tracker, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import <module>` raise ImportError
    message = f"--tracker {tracker} needs the {module} package: pip install {module}"
    with pytest.raises(StudyConfigError, match=message):
        check_trackers([tracker])
    with pytest.raises(StudyConfigError, match=message):
        tracker_callbacks([tracker], study_name=STUDY, output_dir=Path("."), base_seed=0, experiment=EXPERIMENT)


def test_installed_trackers_pass_the_check():
    check_trackers(list(TRACKERS))


def test_search_trial_labels_use_the_base_seed():
    labels = RunLabels(study="ratio", experiment="search", base_seed=13)
    config = {"phase": "search", "cell": 2, "axes": {"batching.alpha": 0.25, "data.num_languages": 10},
              "tuned": {"optim.lr": 3e-5}, "seed": None, "source_trial": None}
    assert labels.name("ab12_00003", config) == "search-cell2-seed13-ab12_00003"
    assert labels.tags("ab12_00003", config) == {
        "study": "ratio", "phase": "search", "cell": 2, "seed": 13, "trial_id": "ab12_00003",
        "axis/batching.alpha": 0.25, "axis/data.num_languages": 10,
    }
    # Unset values are not logged as the text "None"; the effective seed is a tag.
    assert RunLabels.params(config) == {"phase": "search", "cell": 2, "axis/batching.alpha": 0.25,
                                        "axis/data.num_languages": 10, "tuned/optim.lr": 3e-5}


def test_seeds_trial_labels_use_its_own_seed_and_name_its_source():
    labels = RunLabels(study="ratio", experiment="seeds", base_seed=13)
    config = {"phase": "seeds", "cell": 0, "axes": {"batching.alpha": 1.0}, "tuned": {}, "seed": 4,
              "source_trial": "ab12_00000"}
    tags = labels.tags("cd34_00001", config)
    assert (tags["seed"], tags["source_trial"], tags["phase"]) == (4, "ab12_00000", "seeds")
    assert labels.name("cd34_00001", config) == "seeds-cell0-seed4-cd34_00001"
    assert RunLabels.params(config)["seed"] == 4


def test_only_numeric_study_metrics_are_logged():
    result = {
        STEP: 20, "training_iteration": 2, "time_total_s": 3.5, "done": False, "trial_id": "x",
        LOSS: 0.5, INTER: np.float32(0.25), FINAL: 0.75, "train/steps": 20, "train/flag": True,
        "inter/missing": float("nan"), MODEL_DISPLAY_NAME: "tiny", MATRICES: json.dumps({"a": [[1.0]]}),
        "config": {"cell": 0},
    }
    assert study_metrics(result) == {LOSS: 0.5, INTER: 0.25, FINAL: 0.75, "train/steps": 20.0}


def test_default_mlflow_uri_is_the_study_sqlite_file_unless_the_environment_names_one(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_mlflow_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/{MLFLOW_DB}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert default_mlflow_uri(tmp_path) == "http://tracking.example:5000"


def test_metric_names_keep_to_the_characters_mlflow_accepts():
    assert tracker_key("final/xquad-r/cross_r@10") == "final/xquad-r/cross_r_at_10"
    assert tracker_key("axis/batching.alpha") == "axis/batching.alpha"
    assert tracker_key("train/exposure/zh-Hant,x") == "train/exposure/zh-Hant_x"


def test_a_failing_tracker_warns_once_and_the_study_goes_on(tmp_path, capsys):
    callback = tracker_callbacks(["tensorboard"], study_name=STUDY, output_dir=tmp_path, base_seed=0,
                                 experiment=EXPERIMENT)[0]

    class Broken:
        trial_id, config = "t1", TRIAL_CONFIGS[0]

    def refuse(*args, **kwargs):
        raise OSError("No space left on device")

    callback.log_trial_start = refuse
    for _ in range(3):
        callback.on_trial_start(0, [], Broken())
        callback.on_trial_result(0, [], Broken(), {STEP: 10, LOSS: 1.0})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "--tracker tensorboard failed (OSError: No space left on device)" in lines[0]


def test_callbacks_pickle_as_built(tmp_path):
    """Tune pickles the callbacks into tuner.pkl when the Tuner is built, for a later restore."""
    import ray.cloudpickle

    for callback in tracker_callbacks(list(TRACKERS), study_name=STUDY, output_dir=tmp_path, base_seed=0,
                                      experiment=EXPERIMENT):
        copy = ray.cloudpickle.loads(ray.cloudpickle.dumps(callback))
        assert type(copy) is type(callback) and copy._labels == callback._labels


# --- one real Tune run with every tracker -------------------------------------------------------


def study_like_trial(config: dict, fail_marker: str) -> None:
    """A cheap stand-in for study.trial.run_trial: reports like it (study_step, train/, inter/,
    then final/ with the model's name and the matrices), checkpoints its step, and continues
    from the checkpoint after a restore."""
    from ray import tune

    cell, start = config["cell"], 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            start = int(Path(directory, "step").read_text())
    for step in STEPS:
        if step <= start:
            continue
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "step").write_text(str(step))
            tune.report({STEP: step, LOSS: expected_loss(cell, step), INTER: expected_inter(cell, step)},
                        checkpoint=tune.Checkpoint.from_directory(directory))
        if cell == FAILING_CELL and step == 20 and not Path(fail_marker).exists():
            Path(fail_marker).touch()
            raise RuntimeError("injected failure after the step-20 checkpoint")
    matrices = {"cross_map": {lang: {other: 0.5 for other in ("en", "de", "th")} for lang in ("en", "de", "th")}}
    tune.report({STEP: STEPS[-1], FINAL: expected_final(cell), RECALL: 0.9, MODEL_DISPLAY_NAME: "tiny encoder (2 layers)",
                 MATRICES: json.dumps(matrices)})


@pytest.fixture(scope="module")
def ray_session():
    # The `tracking` extra (make installs it): a missing package fails here rather than skipping.
    import mlflow  # noqa: F401
    import tensorboard  # noqa: F401
    import wandb  # noqa: F401

    import ray
    import ray.cloudpickle

    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "disabled")
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        # Set before ray.init: W&B's logging actors inherit the environment Ray starts with.
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        # The trial function lives in this test module, which Ray's workers cannot import.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        ray.init(num_cpus=2, resources={"tune_driver": 2}, include_dashboard=False,
                 object_store_memory=256 * 1024**2, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()
            ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def tracked_study(ray_session, tmp_path_factory) -> dict:
    """Output directory and ``{cell: trial_id}`` of a two-trial experiment that was resumed once."""
    from ray import tune

    output = tmp_path_factory.mktemp("study")
    fail_marker = output / "failed-once"
    trainable = tune.with_resources(tune.with_parameters(study_like_trial, fail_marker=str(fail_marker)),
                                    {"tune_driver": 1})
    param_space = {
        "phase": EXPERIMENT,
        "cell": tune.grid_search(sorted(TRIAL_CONFIGS)),
        **{key: tune.sample_from(lambda config, key=key: TRIAL_CONFIGS[config["cell"]][key])
           for key in ("axes", "tuned", "seed", "source_trial")},
    }
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(trial_dirname_creator=lambda trial: f"trial-{trial.trial_id}"),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=str(output / "ray"),
            callbacks=tracker_callbacks(list(TRACKERS), study_name=STUDY, output_dir=output, base_seed=BASE_SEED,
                                        experiment=EXPERIMENT),
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=0,
        ),
    )
    first = tuner.fit()
    assert fail_marker.exists() and sum(result.error is not None for result in first) == 1
    # The restored Tuner's callbacks are the ones pickled into tuner.pkl above.
    restored = tune.Tuner.restore(str(output / "ray" / EXPERIMENT), trainable=trainable, resume_errored=True)
    second = restored.fit()
    assert [result.error for result in second] == [None, None]
    trial_ids = {result.config["cell"]: result.metrics["trial_id"] for result in second}
    assert sorted(trial_ids) == sorted(TRIAL_CONFIGS)
    return {"output": output, "trial_ids": trial_ids}


def run_name(cell: int, trial_id: str) -> str:
    return f"{EXPERIMENT}-cell{cell}-seed{expected_seed(cell)}-{trial_id}"


# --- MLflow -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_runs(tracked_study) -> dict:
    """``{cell: (client, run)}``, every run of the study's MLflow experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked_study['output'] / MLFLOW_DB}")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    assert experiment.artifact_location.startswith(tracked_study["output"].as_uri())
    runs = client.search_runs([experiment.experiment_id])
    # One run per trial: the trial resumed by Tuner.restore logged into the run it had.
    assert len(runs) == len(TRIAL_CONFIGS)
    return {int(run.data.tags["cell"]): (client, run) for run in runs}


@pytest.mark.parametrize("cell", sorted(TRIAL_CONFIGS))
def test_mlflow_run_has_labels_params_and_metrics_at_study_steps(tracked_study, mlflow_runs, cell):
    client, run = mlflow_runs[cell]
    trial_id = tracked_study["trial_ids"][cell]
    config = TRIAL_CONFIGS[cell]
    assert run.info.run_name == run_name(cell, trial_id)
    assert run.info.status == "FINISHED"
    alpha = str(config["axes"]["batching.alpha"])
    expected_tags = {"study": STUDY, "phase": EXPERIMENT, "cell": str(cell), "seed": str(expected_seed(cell)),
                     "trial_id": trial_id, "axis/batching.alpha": alpha}
    assert {key: run.data.tags[key] for key in expected_tags} == expected_tags
    expected_params = {"phase": EXPERIMENT, "cell": str(cell), "axis/batching.alpha": alpha,
                       "tuned/optim.lr": str(config["tuned"]["optim.lr"])}
    if config["seed"] is not None:
        expected_params["seed"] = str(config["seed"])
    assert run.data.params == expected_params

    for key, expected in ((LOSS, expected_loss), (INTER, expected_inter)):
        history = sorted((metric.step, metric.value) for metric in client.get_metric_history(run.info.run_id, key))
        assert [step for step, _ in history] == list(STEPS)
        assert [value for _, value in history] == pytest.approx([expected(cell, step) for step in STEPS])
    final = client.get_metric_history(run.info.run_id, FINAL)
    assert [(metric.step, metric.value) for metric in final] == [(STEPS[-1], pytest.approx(expected_final(cell)))]
    assert run.data.metrics["final/xquad-r/cross_r_at_10"] == pytest.approx(0.9)
    # Strings are neither metrics nor parameters; Ray's bookkeeping keys are not logged.
    logged = set(run.data.metrics) | set(run.data.params)
    assert not logged & {MATRICES, MODEL_DISPLAY_NAME, "training_iteration", "time_total_s", "done"}


# --- TensorBoard --------------------------------------------------------------------------------


def event_accumulator(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator


@pytest.mark.parametrize("cell", sorted(TRIAL_CONFIGS))
def test_tensorboard_scalars_at_study_steps_and_hparams(tracked_study, cell):
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    trial_id = tracked_study["trial_ids"][cell]
    run_dir = tracked_study["output"] / TENSORBOARD_DIR / EXPERIMENT / run_name(cell, trial_id)
    event_files = sorted(run_dir.glob("events.out.tfevents.*"))
    # The resumed trial wrote a second event file into the same run folder.
    assert len(event_files) == (2 if cell == FAILING_CELL else 1)

    accumulator = event_accumulator(run_dir)
    assert set(accumulator.Tags()["scalars"]) == {LOSS, INTER, FINAL, "final/xquad-r/cross_r_at_10"}
    for key, expected in ((LOSS, expected_loss), (INTER, expected_inter)):
        events = accumulator.Scalars(key)
        assert [event.step for event in events] == list(STEPS)
        assert [event.value for event in events] == pytest.approx([expected(cell, step) for step in STEPS], rel=1e-6)
    assert [(event.step, event.value) for event in accumulator.Scalars(FINAL)] == [
        (STEPS[-1], pytest.approx(expected_final(cell), rel=1e-6))]

    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["study"].string_value == STUDY
    assert hparams["trial_id"].string_value == trial_id
    assert hparams["cell"].number_value == cell
    assert hparams["seed"].number_value == expected_seed(cell)
    assert hparams["axis/batching.alpha"].number_value == TRIAL_CONFIGS[cell]["axes"]["batching.alpha"]
    assert math.isclose(hparams["tuned/optim.lr"].number_value, TRIAL_CONFIGS[cell]["tuned"]["optim.lr"])


# --- Weights & Biases (offline) -----------------------------------------------------------------

_WANDB_BLOCK = 32 * 1024  # the run file is a LevelDB-style log of 32 KiB blocks after a 7-byte W&B header
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline run file ``run-<id>.wandb`` (W&B's own format: each
    record is a chunk header <crc32 uint32, length uint16, type uint8> and its bytes; a record
    that crosses a block boundary is split FIRST/MIDDLE/LAST; block tails under 7 bytes are padding)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, position = [], b"", 7
    while position + 7 <= len(data):
        if _WANDB_BLOCK - position % _WANDB_BLOCK < 7:
            position += _WANDB_BLOCK - position % _WANDB_BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == _FULL:
            records.append(Record.FromString(chunk))
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(Record.FromString(pending + chunk))
    return records


def _item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


@pytest.fixture(scope="module")
def wandb_runs(tracked_study) -> dict:
    """``{run id: [(run record, {step: history}, summary), one per offline-run folder]}``."""
    runs: dict = {}
    for run_file in sorted((tracked_study["output"] / "wandb").glob("offline-run-*/run-*.wandb")):
        run, history, summary = None, {}, {}
        for record in wandb_records(run_file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
            elif kind == "history":
                history[record.history.step.num] = {_item_key(item): json.loads(item.value_json)
                                                     for item in record.history.item}
            elif kind == "summary":
                summary.update({_item_key(item): json.loads(item.value_json) for item in record.summary.update})
        assert run is not None, f"{run_file} has no run record"
        runs.setdefault(run.run_id, []).append((run, history, summary))
    return runs


@pytest.mark.parametrize("cell", sorted(TRIAL_CONFIGS))
def test_wandb_offline_run_has_labels_config_and_history_at_study_steps(tracked_study, wandb_runs, cell):
    trial_id = tracked_study["trial_ids"][cell]
    assert set(wandb_runs) == set(tracked_study["trial_ids"].values())
    sessions = wandb_runs[trial_id]
    # Offline, the resumed trial's second session is a second offline-run folder of the same run id.
    assert len(sessions) == (2 if cell == FAILING_CELL else 1)
    config = TRIAL_CONFIGS[cell]
    history: dict = {}
    for run, session_history, _ in sessions:
        assert (run.project, run.run_group, run.display_name) == (STUDY, EXPERIMENT, run_name(cell, trial_id))
        expected_tags = {f"cell={cell}", f"seed={expected_seed(cell)}", f"trial_id={trial_id}", f"study={STUDY}"}
        assert expected_tags <= set(run.tags)
        logged_config = {item.key: json.loads(item.value_json) for item in run.config.update}
        assert logged_config["axis/batching.alpha"] == config["axes"]["batching.alpha"]
        assert logged_config["tuned/optim.lr"] == config["tuned"]["optim.lr"]
        assert (logged_config["cell"], logged_config["seed"]) == (cell, expected_seed(cell))
        history.update(session_history)

    # W&B's step is the study step; the final report shares the last step with the last
    # intermediate one (W&B merges both into that step's row).
    assert sorted(history) == list(STEPS)
    assert [history[step][LOSS] for step in STEPS] == pytest.approx([expected_loss(cell, step) for step in STEPS])
    assert [history[step][STEP] for step in STEPS] == list(STEPS)
    summary = sessions[-1][2]
    assert summary[FINAL] == pytest.approx(expected_final(cell))
    logged = {key for row in history.values() for key in row} | set(summary)
    assert not logged & {MATRICES, MODEL_DISPLAY_NAME}
