"""One trial = one Ray Train DDP run, started from a Ray Tune function.

``run_trial`` (the Tune function) builds a ``TorchTrainer`` whose workers run
:func:`hybridir.train.train` on the Train process group. ``StudyCallback`` reports every
intermediate evaluation WITH the checkpoint just written (Train V2 keeps only reports
with checkpoints, and a retried worker resumes from the last one), rank 0 evaluating and
all ranks reporting. After training, rank 0 runs the final evaluation with the study's
full settings and everything is reported once more with the final checkpoint.

Every evaluation goes through :func:`hybridir.evaluation.build_evaluator`, so each set is
scored as its registered kind (LAReQA or bitext) exactly as ``python -m hybridir.evaluate``
scores it. The final evaluation's per-query rows travel through the storage path, not the
metrics dict (see :mod:`study.results`).

Validated once. The study is validated before Ray starts (``study/run.py``); the Tune function
turns it and the trial's config into the trial's :class:`TrainConfig` (one ``StudySpec``
validation per trial, where the searcher's overrides meet the study). Train workers get only
what they use: the TrainConfig and :class:`WorkerSettings` (the evaluation settings, the
intermediate evaluation's seed, ``use_gpu``, ``cpus_per_worker``), never the whole study; the
zero-shot task likewise gets the model section and the final sets.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import ray.train
import torch
import torch.distributed as dist
from ray import tune
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, ScalingConfig
import ray.train.torch
from ray.train.torch import TorchConfig, TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from hybridir.checkpoint import METRICS_FILE
from hybridir.config import ModelConfig, TrainConfig
from hybridir.evaluation.evaluator import EvaluationResult, Evaluator, build_evaluator
from hybridir.model import BiEncoder
from hybridir.timing import PhaseTimes
from hybridir.train import MODEL_SUBDIR, TrainCallback, train
from study.console import configure_worker, train_logging_config
from study.results import parquet_bytes, per_query_frame, per_query_uri
from study.storage import write_file
from study.spec import EvalSetSettings, EvaluationSettings, StudySpec
from study.vocabulary import (
    INTER,
    INTER_PREFIX,
    MATRICES,
    MODEL_DISPLAY_NAME,
    MODEL_TRAINING,
    PAIRS_PER_SECOND,
    PER_QUERY_ROWS,
    RESUMED_FROM_STEP,
    STEP,
    STEP_SECONDS,
    final_prefix,
    train_key,
    train_run_name,
)


EVAL_MAX_QUERY_LENGTH = ModelConfig.model_fields["max_query_length"].default
EVAL_MAX_PASSAGE_LENGTH = ModelConfig.model_fields["max_passage_length"].default


@dataclass(frozen=True)
class WorkerSettings:
    """What a trial's Train workers need of the study besides their TrainConfig."""

    evaluation: EvaluationSettings
    eval_seed: int  # search.seed: the intermediate evaluation's query sample
    use_gpu: bool
    cpus_per_worker: float

    @classmethod
    def from_spec(cls, spec: StudySpec) -> "WorkerSettings":
        resources = spec.resources
        return cls(spec.evaluation, spec.search.seed, resources.use_gpu, resources.cpus_per_worker)

    def to_loop_config(self) -> dict:
        return {"evaluation": self.evaluation.model_dump(mode="json"), "eval_seed": self.eval_seed,
                "use_gpu": self.use_gpu, "cpus_per_worker": self.cpus_per_worker}

    @classmethod
    def from_loop_config(cls, data: dict) -> "WorkerSettings":
        return cls(EvaluationSettings.model_validate(data["evaluation"]), int(data["eval_seed"]),
                   bool(data["use_gpu"]), float(data["cpus_per_worker"]))


def trial_train_config(spec: StudySpec, config: dict) -> TrainConfig:
    """The TrainConfig of a trial config handed out by the searchers (:meth:`StudySpec.trial_train_config`)."""
    return spec.trial_train_config(config)


def set_evaluator(settings: EvalSetSettings, seed: int = 0) -> Evaluator:
    """The evaluator of one study evaluation set (its kind from the registry)."""
    return build_evaluator(settings.dataset, languages=settings.languages, max_queries=settings.max_queries, seed=seed,
                           groups=settings.article_groups())


def _scalar_summary(summary: dict, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}/{key}": float(value)
        for key, value in summary.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def evaluate(model, evaluator: Evaluator, prefix: str) -> tuple[dict, EvaluationResult]:
    """Scores of ``model`` by ``evaluator`` as ``<prefix>/<summary key>`` metrics."""
    # The CLI's lengths, not the trial's training lengths: every trial and
    # `python -m hybridir.evaluate` score the same texts the same way.
    result = evaluator(model, max_query_length=EVAL_MAX_QUERY_LENGTH, max_passage_length=EVAL_MAX_PASSAGE_LENGTH)
    return _scalar_summary(result.summary, prefix), result


def _tables_payload(result: EvaluationResult) -> dict:
    """The result's tables as JSON (LAReQA: metric matrices + multilingual; bitext: pairs)."""
    return {name: json.loads(frame.to_json()) for name, frame in result.tables.items()}


def evaluate_final_sets(spec: StudySpec, model) -> tuple[dict[str, float], dict, pd.DataFrame]:
    """Every ``evaluation.final`` set of the study: :func:`evaluate_sets`."""
    return evaluate_sets(spec.evaluation.final, model)


def evaluate_sets(final: list[EvalSetSettings], model) -> tuple[dict[str, float], dict, pd.DataFrame]:
    """Every final set, each scored as its kind: ``final/<dataset>/<key>`` metrics, the tables
    payload per dataset (results/matrices/) and the per-query rows of all sets with a
    ``dataset`` column (results/per_query/). No Ray: trials and the zero-shot baseline call it
    alike."""
    metrics: dict[str, float] = {}
    tables: dict[str, dict] = {}
    per_query: dict[str, pd.DataFrame] = {}
    for settings in final:
        scores, result = evaluate(model, set_evaluator(settings), final_prefix(settings.dataset))
        metrics.update(scores)
        tables[settings.dataset] = _tables_payload(result)
        per_query[settings.dataset] = result.per_query
    return metrics, tables, per_query_frame(per_query)


def _reported(metrics: dict) -> dict[str, float]:
    """The training loop's metrics under the study's names (``train/...``, ``inter/...``)."""
    return {
        (key if key.startswith(INTER_PREFIX) else train_key(key)): float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and value is not None
    }


class StudyCallback(TrainCallback):
    """Bridges hybridir's training loop and Ray Train reporting (one per worker).

    hybridir calls ``on_evaluate`` (rank 0 returns the intermediate scores, which join the
    step's metrics), then ``on_log``, then ``on_checkpoint`` on every rank, where the step's
    metrics are reported with the checkpoint.
    """

    def __init__(self, settings: WorkerSettings, config: TrainConfig):
        self.settings = settings
        self.config = config
        self.rank = ray.train.get_context().get_world_rank()
        self._evaluator: Evaluator | None = None
        self.last_log: dict = {}
        self.last_eval: dict = {}
        # Throughput clock: starts at the first log of this session; evaluation, checkpoint
        # writing and reporting time is excluded.
        self._origin: tuple[float, int] | None = None
        self._overhead = 0.0
        self._logged_at = 0.0

    def intermediate_evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = set_evaluator(self.settings.evaluation.intermediate, seed=self.settings.eval_seed)
        return self._evaluator

    def on_evaluate(self, step: int, model) -> dict | None:
        if self.rank != 0:
            return None
        start = time.perf_counter()
        with evaluation_threads(self.settings):
            metrics, _ = evaluate(model, self.intermediate_evaluator(), INTER)
        self._add_overhead(time.perf_counter() - start)
        self.last_eval = {"step": step, **metrics}
        return metrics

    def on_log(self, step: int, metrics: dict) -> None:
        self._logged_at = time.perf_counter()
        if self._origin is None:
            self._origin = (self._logged_at, step)
        self.last_log = _reported(metrics)

    def _add_overhead(self, seconds: float) -> None:
        if self._origin is not None:
            self._overhead += seconds

    def throughput(self, step: int) -> dict:
        """Training pairs per second over this session's steps since the first log."""
        if self._origin is None or step <= self._origin[1]:
            return {}
        seconds = max(time.perf_counter() - self._origin[0] - self._overhead, 1e-9)
        pairs = (step - self._origin[1]) * self.config.batching.batch_size
        return {PAIRS_PER_SECOND: pairs / seconds, STEP_SECONDS: seconds}

    def replay_checkpoint_report(self, directory: Path) -> int:
        """Report a restored checkpoint's step again (all ranks, no checkpoint).

        The driver may have died after Train persisted this checkpoint but before it wrote
        the step's history row; the study's history dedups repeats, so re-reporting closes
        that gap instead of leaving a hole in the resumed trial's learning curve.
        """
        metrics = json.loads((directory / METRICS_FILE).read_text())
        step = int(metrics["step"])
        self.last_log = _reported(metrics)
        # The marker shows in results/history where a retry or a resumed study picked up.
        ray.train.report({STEP: step, **self.last_log, RESUMED_FROM_STEP: step})
        return step

    def on_checkpoint(self, step: int, directory: Path, metrics: dict) -> None:
        started = time.perf_counter()
        self._add_overhead(started - self._logged_at)  # the checkpoint write
        report = {STEP: step, **self.last_log, **self.throughput(step)}
        # Rank 0 wrote the directory; only it hands the checkpoint to Ray.
        checkpoint = Checkpoint.from_directory(str(directory)) if self.rank == 0 else None
        ray.train.report(report, checkpoint=checkpoint)
        self._add_overhead(time.perf_counter() - started)


@contextlib.contextmanager
def evaluation_threads(settings: WorkerSettings):
    """Rank 0 evaluates while the node's other ranks wait in a collective: on CPU, let it
    use every core reserved for the trial's workers on this node for that time."""
    if settings.use_gpu:
        yield
        return
    local_workers = ray.train.get_context().get_local_world_size()
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(settings.cpus_per_worker * local_workers)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _final_evaluation(callback: StudyCallback, model_dir: Path, max_steps: int, per_query_target: str) -> dict:
    """Rank 0: the study's full evaluation settings on the final model; the per-query rows
    go to ``per_query_target`` (the storage path), only their count into the metrics."""
    model = BiEncoder.load(model_dir)
    model_config = callback.config.model
    if model.bottom is not None and model_config.activation_cache:
        # Trained top, untouched bottom: the study's cached states of every evaluation text apply.
        model.attach_activation_cache(model_config.activation_cache, model_config.activation_cache_max_gb)
    model.to(ray.train.torch.get_device())
    final: dict[str, Any] = {}
    # The objective of the last intermediate evaluation travels with the final report, so
    # Optuna and the results table see the number ASHA saw (evaluated now if the last
    # step was not an evaluation step, e.g. after a resume from the final checkpoint).
    if callback.last_eval.get("step") == max_steps:
        final.update({k: v for k, v in callback.last_eval.items() if k != "step"})
    else:
        final.update(evaluate(model, callback.intermediate_evaluator(), INTER)[0])
    metrics, tables, per_query = evaluate_sets(callback.settings.evaluation.final, model)
    final.update(metrics)
    # Written before the report: a retry after this point evaluates again and replaces it.
    write_file(per_query_target, parquet_bytes(per_query))
    final[PER_QUERY_ROWS] = len(per_query)
    final[MATRICES] = json.dumps(tables)
    final[MODEL_DISPLAY_NAME] = model.display_name
    final[MODEL_TRAINING] = model.training_description
    return final


def zero_shot_evaluation(spec: StudySpec) -> tuple[str, dict[str, float], pd.DataFrame]:
    """The untrained starting model (the base training config's ``model`` section) on every
    ``evaluation.final`` set, at the trials' evaluation lengths: (display name, metrics
    ``final/<dataset>/<key>``, per-query rows)."""
    return _zero_shot(spec.base_config.model, spec.evaluation.final, spec.resources.use_gpu)


def _zero_shot(model_config: ModelConfig, final: list[EvalSetSettings],
               use_gpu: bool) -> tuple[str, dict[str, float], pd.DataFrame]:
    model = BiEncoder.from_config(model_config)
    if use_gpu and torch.cuda.is_available():
        model = model.to("cuda")
    metrics, _, per_query = evaluate_sets(final, model)
    return model.display_name, metrics, per_query


def zero_shot_inputs(spec: StudySpec) -> dict:
    """The keyword arguments of :func:`zero_shot_task` (JSON): the pieces of the study it uses."""
    return {"model_config": spec.base_config.model.model_dump(mode="json"),
            "final": [settings.model_dump(mode="json") for settings in spec.evaluation.final],
            "use_gpu": spec.resources.use_gpu}


def zero_shot_task(model_config: dict, final: list[dict], use_gpu: bool,
                   threads: int | None = None) -> tuple[str, dict[str, float], bytes]:
    """:func:`zero_shot_evaluation` as run in a Ray task, on :func:`zero_shot_inputs`: the
    per-query rows come back as compressed parquet (a few MB once per study, fine for the
    object store)."""
    configure_worker()
    if threads:
        torch.set_num_threads(threads)
    name, metrics, per_query = _zero_shot(ModelConfig.model_validate(model_config),
                                          [EvalSetSettings.model_validate(item) for item in final], use_gpu)
    return name, metrics, parquet_bytes(per_query)


def train_worker(loop_config: dict) -> None:
    """Ray Train worker: train under DDP, then (rank 0) the final evaluation, then one last
    report with the final checkpoint."""
    configure_worker()
    phases = PhaseTimes()
    # From the Tune function's start to here: Ray Train's worker group, placement, process group.
    phases.add("ray_start", max(0.0, time.time() - float(loop_config.get("trial_started_at", time.time()))))
    settings = WorkerSettings.from_loop_config(loop_config["worker"])
    config = TrainConfig.model_validate(loop_config["train_config"])
    per_query_target = loop_config["per_query_uri"]
    callback = StudyCallback(settings, config)
    output_dir = Path(tempfile.mkdtemp(prefix="hybridir-trial-"))
    checkpoint = ray.train.get_checkpoint()
    with contextlib.ExitStack() as stack:
        resume_dir = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
        resumed_step = callback.replay_checkpoint_report(resume_dir) if resume_dir is not None else 0
        if resumed_step >= config.max_steps:
            # Died after training, during the final evaluation: only that is redone.
            final_checkpoint = resume_dir
        else:
            result = train(config, output_dir, resume_from=resume_dir, callbacks=[callback], keep_checkpoints=1)
            final_checkpoint = result.checkpoint_dir
            for name, seconds in result.phase_seconds.items():
                phases.add(name, seconds)
        final = callback.throughput(config.max_steps)  # before the final evaluation's time
        if callback.rank == 0:
            with evaluation_threads(settings), phases("final_eval"):
                final.update(_final_evaluation(callback, final_checkpoint / MODEL_SUBDIR, config.max_steps,
                                               per_query_target))
        # Where this worker's time went (hybridir.timing; rank 0's view): the row's phase_s/*.
        final.update(phases.as_metrics())
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # the other ranks wait for rank 0's evaluation before the report
        # No checkpoint this time: the final one was reported with the last step (a retry
        # after this point resumes from it and only re-evaluates); Tune still receives the
        # metrics through TuneReportCallback.
        ray.train.report({STEP: config.max_steps, **callback.last_log, **final})
    shutil.rmtree(output_dir, ignore_errors=True)


def run_trial(config: dict, spec_data: dict, storage_path: str, experiment: str) -> None:
    """Ray Tune function: one TorchTrainer fit per trial (DDP, gloo on CPU, nccl on GPU).

    ``spec_data`` is the study validated by the driver, as JSON (``tune.with_parameters``);
    validated here once per trial to build its TrainConfig, which the workers get ready-made."""
    configure_worker()
    trial_started_at = time.time()
    spec = StudySpec.model_validate(spec_data)
    resources = spec.resources
    train_config = trial_train_config(spec, config)
    if train_config.num_threads is None and not resources.use_gpu:
        # Workers share the node's cores: one intra-op pool per reserved CPU, no oversubscription.
        train_config = train_config.model_copy(update={"num_threads": max(1, int(resources.cpus_per_worker))})
    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.use_gpu:
        per_worker["GPU"] = 1
    trial_id = tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"worker": WorkerSettings.from_spec(spec).to_loop_config(),
                           "train_config": train_config.model_dump(mode="json"),
                           "per_query_uri": per_query_uri(storage_path, experiment, trial_id),
                           "trial_started_at": trial_started_at},
        scaling_config=ScalingConfig(
            num_workers=resources.num_workers, use_gpu=resources.use_gpu, resources_per_worker=per_worker
        ),
        torch_config=TorchConfig(backend="nccl" if resources.use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            # A stable name: a restored study's trial finds its Train run and latest checkpoint.
            name=train_run_name(experiment, trial_id),
            storage_path=storage_path,
            callbacks=[TuneReportCallback()],
            failure_config=FailureConfig(max_failures=resources.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            # Train's console lines at WARNING unless --verbose (its log files keep all).
            logging_config=train_logging_config(),
        ),
    )
    trainer.fit()
