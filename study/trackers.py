"""Experiment tracking (TensorBoard, MLflow, Weights & Biases) through Ray Tune's own logger callbacks.

``tracker_callbacks(["mlflow", ...], ...)`` returns Tune callbacks for the Tuner's ``RunConfig``;
``check_trackers(...)`` is the driver's pre-Ray check (unknown name, package not installed).
Each class subclasses Ray's callback only where the study differs from Ray's defaults:

* the logged step is the study's own ``study_step``: Tune's ``training_iteration`` restarts at
  0 when a study resumes, ``study_step`` continues from the trial's Train checkpoint;
* metrics are the numeric ``<prefix>/<name>`` keys trials report (``train/``, ``inter/``,
  ``final/<dataset>/``, ...); Ray's bookkeeping keys and strings (``model/display_name``, the
  large ``matrices_json``) are left out;
* every run carries the trial config flattened as by ``study.results.flatten_config``
  (``axis/<path>``, ``tuned/<path>``, ``phase``, ``cell``, ``seed``, ``source_trial``) and the
  tags of :class:`RunLabels` (study, phase, cell, effective seed, trial id, axis values), and is
  named ``<phase>-cell<cell>-seed<seed>-<trial id>``.

Where each writes (``<output>`` = the study directory):

* TensorBoard: ``<output>/tensorboard/<phase>/<run name>/events.out.tfevents.*``, flushed after
  every report; ``tensorboard --logdir <output>/tensorboard``. Ray's own class writes into
  Tune's driver staging folder (``/tmp/ray/session_*/artifacts/...``), copied to the storage
  path's ``<phase>/trial-<id>/`` only at Tune's periodic syncs (and to S3 when the storage path
  is there), so the study writes next to ``results/`` instead. With this callback in the list
  Tune adds no TBXLoggerCallback of its own (it checks for the class, subclasses included).
* MLflow: ``sqlite:///<output>/mlflow.db`` unless a URI is given or ``MLFLOW_TRACKING_URI`` is
  set (MLflow 3's file store refuses to run without ``MLFLOW_ALLOW_FILE_STORE``; SQLite is its
  local backend without a server); ``mlflow ui --backend-store-uri sqlite:///<output>/mlflow.db``.
  Experiment = study name; one run per trial.
* W&B: ``<output>/wandb/`` (``offline-run-*`` with ``WANDB_MODE=offline``, then ``wandb sync``);
  project = study name, group = phase. Ray logs each trial from a logging actor of 0 CPUs on the
  driver's node, so it never competes with trials for the ``tune_driver`` slots or CPUs.

Resume (``Tuner.restore``): Tune restores these callbacks from ``tuner.pkl``, pickled when the
Tuner was built; they hold no open handle before Tune's ``setup``, and keep the absolute study
path they were built with. A restored trial logs into the MLflow run it had (looked up by its
trial id and phase; Ray's class would start a new one), TensorBoard adds a second event file to
the trial's folder (TensorBoard reads both as one run), and W&B continues the run of the same
id online (``resume="allow"``); offline, W&B writes a second ``offline-run-*`` folder with the
same run id. Reports a trial repeats after its checkpoint are logged again at the same steps.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.air.constants import TRAINING_ITERATION
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.logger import TBXLoggerCallback

from study.console import say
from study.ray_internals import (
    mlflow_trial_runs,
    tensorboard_last_results,
    tensorboard_writer_class,
    tensorboard_writers,
    use_wandb_logging_actor,
    wandb_logging_actor_class,
)
from study.results import flatten_config
from study.checks import check_tracker_packages as check_trackers  # noqa: F401 - its home is Ray-free
from study.spec import TRACKERS, effective_seed
from study.vocabulary import (
    AXIS_PREFIX,
    CELL,
    FINAL_PREFIX,
    INTER_PREFIX,
    MATRICES,
    PHASE,
    SEED,
    SOURCE_TRIAL,
    STEP,
    TRIAL_ID,
)

TENSORBOARD, MLFLOW, WANDB = TRACKERS  # the names study.spec validates

TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS_DIR = "mlflow-artifacts"

# MLflow's limits per log_batch call (mlflow.utils.validation): larger batches are rejected.
_MLFLOW_MAX_METRICS_PER_BATCH = 1000
_MLFLOW_MAX_PARAMS_TAGS_PER_BATCH = 100
# W&B rejects a run whose tags are longer than this; such values stay in the run's config.
_WANDB_MAX_TAG_LENGTH = 64


def tracker_callbacks(
    trackers: list[str],
    *,
    study_name: str,
    output_dir: Path,
    base_seed: int,
    experiment: str,
    mlflow_tracking_uri: str | None = None,
    wandb_project: str | None = None,
) -> list:
    """Tune callbacks logging every trial of ``experiment`` (a phase) to the named trackers.

    ``base_seed`` is the seed of trials whose config has ``seed: None`` (the search phase);
    ``output_dir`` is the study directory. A name given twice gives one callback.
    """
    check_trackers(trackers)
    # Absolute: W&B's logging actor changes its working directory, and the callbacks are
    # pickled into Tune's state for a resume that may start elsewhere.
    output_dir = Path(output_dir).resolve()
    labels = RunLabels(study=study_name, experiment=experiment, base_seed=base_seed)
    callbacks: list = []
    for name in dict.fromkeys(trackers):
        if name == TENSORBOARD:
            callbacks.append(StudyTensorBoardCallback(labels, output_dir / TENSORBOARD_DIR))
        elif name == MLFLOW:
            callbacks.append(StudyMLflowCallback(labels, output_dir, tracking_uri=mlflow_tracking_uri))
        else:
            callbacks.append(StudyWandbCallback(labels, output_dir, project=wandb_project or study_name))
    return callbacks


# --- what every tracker logs ------------------------------------------------------------------


def study_step(result: dict) -> int | None:
    """The study's step of a Tune result, None for a result that has none."""
    step = result.get(STEP)
    return None if step is None else int(step)


def study_metrics(result: dict) -> dict[str, float]:
    """The numeric ``<prefix>/<name>`` metrics of a Tune result.

    Ray's own keys (no ``/``), strings (``model/display_name``, ``matrices_json``), booleans and
    NaN (a metric a step did not compute) are left out."""
    return {
        key: float(value)
        for key, value in result.items()
        if "/" in key
        and key != MATRICES
        and isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and not math.isnan(value)
    }


def _evaluation_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The intermediate and final evaluation metrics: the columns of TensorBoard's HParams table
    (the training loop's many ``train/exposure/...`` counters would bury them)."""
    return {key: value for key, value in metrics.items() if key.startswith((INTER_PREFIX, FINAL_PREFIX))}


@dataclass(frozen=True)
class RunLabels:
    """Name, tags and parameters of one trial's run, the same in every tracker."""

    study: str
    experiment: str  # the phase: Tune experiment name, "search" or "seeds"
    base_seed: int

    def name(self, trial_id: str, config: dict) -> str:
        """``<phase>-cell<cell>-seed<effective seed>-<trial id>``."""
        return f"{self.experiment}-cell{config.get(CELL)}-seed{effective_seed(config, self.base_seed)}-{trial_id}"

    def tags(self, trial_id: str, config: dict) -> dict[str, Any]:
        """Study, phase, cell, effective seed, trial id, the source trial of a re-run, and the
        scaling axes as ``axis/<path>``; values keep their type (MLflow stores them as text)."""
        tags: dict[str, Any] = {
            "study": self.study,
            PHASE: self.experiment,
            CELL: config.get(CELL),
            SEED: effective_seed(config, self.base_seed),
            TRIAL_ID: trial_id,
        }
        if config.get(SOURCE_TRIAL) is not None:
            tags[SOURCE_TRIAL] = config[SOURCE_TRIAL]
        tags.update({key: value for key, value in flatten_config(config).items() if key.startswith(AXIS_PREFIX)})
        return tags

    @staticmethod
    def params(config: dict) -> dict[str, Any]:
        """The trial config as flat parameters; unset values (``seed``/``source_trial`` of a
        search trial) are left out rather than logged as the text "None"."""
        return {key: value for key, value in flatten_config(config).items() if value is not None}


class NeverFatal:
    """A tracker that fails (a full disk, an unreachable server, a name the tracker rejects)
    warns once, naming the tracker and the error, and logs nothing more; the study goes on,
    since ``results/`` holds everything a tracker would show. Mixed in before Ray's class."""

    tracker_name = "tracker"
    _tracker_failed = False

    def _guarded(self, method, *args, **kwargs):
        if self._tracker_failed:
            return None
        try:
            return method(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported once, then this tracker is off
            self._tracker_failed = True
            say(f"warning: --tracker {self.tracker_name} failed ({type(exc).__name__}: {exc}); it logs nothing "
                "more in this run, the study goes on (results/ has every number)")
            return None

    def setup(self, *args, **kwargs):
        return self._guarded(super().setup, *args, **kwargs)

    def on_trial_start(self, *args, **kwargs):
        return self._guarded(super().on_trial_start, *args, **kwargs)

    def on_trial_restore(self, *args, **kwargs):
        return self._guarded(super().on_trial_restore, *args, **kwargs)

    def on_trial_result(self, *args, **kwargs):
        return self._guarded(super().on_trial_result, *args, **kwargs)

    def on_trial_complete(self, *args, **kwargs):
        return self._guarded(super().on_trial_complete, *args, **kwargs)

    def on_trial_error(self, *args, **kwargs):
        return self._guarded(super().on_trial_error, *args, **kwargs)

    def on_experiment_end(self, *args, **kwargs):
        return self._guarded(super().on_experiment_end, *args, **kwargs)


# --- TensorBoard ------------------------------------------------------------------------------


class StudyTensorBoardCallback(NeverFatal, TBXLoggerCallback):
    """Ray's TBXLoggerCallback writing ``<logdir>/<phase>/<run name>/``, scalars under the
    study's own keys (``train/loss``, ``inter/...``: TensorBoard groups them by prefix; Ray's
    class adds ``ray/tune/``) at ``study_step``, and an HParams entry of the flattened config
    and tags when the trial ends (Ray's would take Tune's ``evaluated_params``, which fail on a
    search trial's ``seed: None``).

    Uses the base class's writer bookkeeping, through :mod:`study.ray_internals`."""

    tracker_name = TENSORBOARD

    def __init__(self, labels: RunLabels, logdir: Path):
        super().__init__()  # imports tensorboardX; opens nothing
        self._labels = labels
        self._logdir = Path(logdir)

    def run_dir(self, trial) -> Path:
        return self._logdir / self._labels.experiment / self._labels.name(trial.trial_id, trial.config)

    def log_trial_start(self, trial) -> None:
        writers = tensorboard_writers(self)
        if trial in writers:
            writers[trial].close()
        writers[trial] = tensorboard_writer_class(self)(str(self.run_dir(trial)), flush_secs=30)
        tensorboard_last_results(self)[trial] = {}

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        step = study_step(result)
        if step is None:
            return
        if trial not in tensorboard_writers(self):
            self.log_trial_start(trial)
        writer = tensorboard_writers(self)[trial]
        metrics = study_metrics(result)
        for key, value in metrics.items():
            writer.add_scalar(tracker_key(key), value, global_step=step)
        tensorboard_last_results(self)[trial] = metrics
        # Readable while the study runs, and kept if the driver is killed.
        writer.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        writer = tensorboard_writers(self).pop(trial, None)
        last = tensorboard_last_results(self).pop(trial, {})
        if writer is None:
            return
        metrics = {tracker_key(key): value for key, value in _evaluation_metrics(last).items()}
        if metrics:
            from tensorboardX.summary import hparams

            values = {**self._labels.tags(trial.trial_id, trial.config), **RunLabels.params(trial.config)}
            # The HParams plugin takes numbers, strings and booleans only.
            values = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in values.items()}
            for summary in hparams(hparam_dict=values, metric_dict=metrics):
                writer.file_writer.add_summary(summary)
        writer.close()


# --- MLflow -----------------------------------------------------------------------------------


def tracker_key(key: str) -> str:
    """A metric or parameter name as MLflow accepts it (alphanumerics, ``_ - . : /`` and
    spaces), ``inter/cross_r@10`` -> ``inter/cross_r_at_10``; TensorBoard gets the same names
    (tensorboardX would turn ``@`` into ``_`` silently, ``cross_r_10``)."""
    return re.sub(r"[^\w\-. :/]", "_", key.replace("@", "_at_"))


def default_mlflow_uri(output_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the study's own SQLite file (no server)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_dir).resolve() / MLFLOW_DB}"


class StudyMLflowCallback(NeverFatal, MLflowLoggerCallback):
    """Ray's MLflowLoggerCallback with the study's run names, per-run tags (Ray's are the same
    for every run), the flattened config as parameters, metrics at ``study_step`` in one
    ``log_batch`` per report (Ray's makes one tracking-store call per metric), and the MLflow
    run a trial had before a resume reused (Ray's starts a new one).

    Uses the base class's trial -> run id table (which its ``log_trial_end`` ends; through
    :mod:`study.ray_internals`)
    and ``mlflow_util.experiment_id`` (set by its ``setup``)."""

    tracker_name = MLFLOW

    def __init__(self, labels: RunLabels, output_dir: Path, tracking_uri: str | None = None):
        own_database = tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI")
        super().__init__(tracking_uri=tracking_uri or default_mlflow_uri(output_dir), experiment_name=labels.study)
        self._labels = labels
        # The study's own SQLite file keeps artifacts next to it; MLflow's default is ./mlruns
        # of whatever directory the driver runs in. A server keeps its own default.
        self._artifact_location = (Path(output_dir).resolve() / MLFLOW_ARTIFACTS_DIR).as_uri() if own_database else None

    def setup(self, *args, **kwargs) -> None:
        if self._artifact_location is not None:
            client = self._client()
            if client.get_experiment_by_name(self.experiment_name) is None:
                client.create_experiment(self.experiment_name, artifact_location=self._artifact_location)
        super().setup(*args, **kwargs)  # selects the experiment; Ray's class creates it if absent

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def log_trial_start(self, trial) -> None:
        runs = mlflow_trial_runs(self)
        if trial not in runs:
            runs[trial] = self._resumed_run(trial) or self._new_run(trial)

    def _resumed_run(self, trial) -> str | None:
        """The run of this trial from before a resume (same trial id and phase), marked running again."""
        client = self._client()
        runs = client.search_runs(
            [self.mlflow_util.experiment_id],
            filter_string=f"tags.trial_id = '{trial.trial_id}' AND tags.phase = '{self._labels.experiment}'",
            max_results=1,
        )
        if not runs:
            return None
        run_id = runs[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id

    def _new_run(self, trial) -> str:
        from mlflow.entities import Param

        client = self._client()
        tags = {tracker_key(key): str(value) for key, value in self._labels.tags(trial.trial_id, trial.config).items()}
        run = client.create_run(
            self.mlflow_util.experiment_id, run_name=self._labels.name(trial.trial_id, trial.config), tags=tags
        )
        params = [Param(tracker_key(key), str(value)) for key, value in RunLabels.params(trial.config).items()]
        for start in range(0, len(params), _MLFLOW_MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run.info.run_id, params=params[start:start + _MLFLOW_MAX_PARAMS_TAGS_PER_BATCH])
        return run.info.run_id

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        from mlflow.entities import Metric

        step = study_step(result)
        if step is None:
            return
        if trial not in mlflow_trial_runs(self):
            self.log_trial_start(trial)
        timestamp = int(time.time() * 1000)
        metrics = [Metric(tracker_key(key), value, timestamp, step) for key, value in study_metrics(result).items()]
        client = self._client()
        for start in range(0, len(metrics), _MLFLOW_MAX_METRICS_PER_BATCH):
            client.log_batch(mlflow_trial_runs(self)[trial], metrics=metrics[start:start + _MLFLOW_MAX_METRICS_PER_BATCH])


# --- Weights & Biases -------------------------------------------------------------------------


class _FlushingWandbLoggingActor(wandb_logging_actor_class()):
    """Ray's per-trial W&B logging actor, waiting for W&B to write everything before it returns.

    wandb.finish() returns before W&B's service process (wandb-core, a child of the actor) has
    closed the run: offline, the run file ``run-<id>.wandb`` is written when it does. Ray kills
    the actor, and with it that child, as soon as ``run()`` returns: an offline run was left
    as a 7-byte file (the header only) in 2 of 11 runs of tests/test_trackers.py here
    (wandb 0.31, Ray 2.60).
    ``wandb.teardown()`` is W&B's public call that waits for the service to finish.
    """

    def run(self):
        try:
            super().run()
        finally:
            import wandb

            wandb.teardown()


class StudyWandbCallback(NeverFatal, WandbLoggerCallback):
    """Ray's WandbLoggerCallback with the study's run name, tags (``key=value``) and flattened
    config, files under ``<output>/wandb``, the driver's ``WANDB_MODE`` passed on to the
    logging actor, ``study_step`` as W&B's step, and a logging actor that waits for W&B to
    flush the run before Ray kills it.

    Ray private API (Ray 2.60), in :mod:`study.ray_internals`: the logging actor class and the
    hook that selects it.
    """

    tracker_name = WANDB

    def __init__(self, labels: RunLabels, output_dir: Path, project: str):
        super().__init__(project=project, group=labels.experiment)
        self._labels = labels
        self._wandb_dir = str(Path(output_dir).resolve())  # wandb.init(dir=...) adds "wandb/"

    def log_trial_start(self, trial) -> None:
        # Ray's class passes wandb.init() its own per-trial arguments updated with
        # ``self.kwargs`` (its documented "**kwargs: passed to wandb.init()"), so the study's
        # are set there for this trial just before it starts the trial's logging actor.
        config = trial.config
        tags = self._labels.tags(trial.trial_id, config)
        self.kwargs = {
            "name": self._labels.name(trial.trial_id, config),
            "config": {**RunLabels.params(config), **tags},
            "tags": [text for text in (f"{key}={value}" for key, value in tags.items())
                     if len(text) <= _WANDB_MAX_TAG_LENGTH],
            "dir": self._wandb_dir,
            # A restored trial continues its run online (Ray's default is resume=False).
            "resume": "allow",
        }
        # The logging actor's environment is its node's, not the driver's: on a cluster the
        # driver's WANDB_MODE=offline would not reach it.
        if os.environ.get("WANDB_MODE"):
            self.kwargs["mode"] = os.environ["WANDB_MODE"]
        super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        step = study_step(result)
        if step is None:
            return
        # The logging actor calls wandb.log(..., step=result["training_iteration"]): the study
        # step goes there (W&B drops steps lower than one it has seen, and Tune's counter
        # restarts at 0 on resume). W&B shows it as a "training_iteration" column too.
        super().log_trial_result(iteration, trial, {**study_metrics(result), STEP: step, TRAINING_ITERATION: step})


use_wandb_logging_actor(StudyWandbCallback, _FlushingWandbLoggingActor)
