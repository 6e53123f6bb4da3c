"""The study's shared names: one place for every key, column, phase and file name that
more than one module of ``study/`` reads or writes.

The trial (:mod:`study.trial`) reports metrics under these keys, the Tune callback
(:mod:`study.tune_callback`) stores them as columns of ``results/``, and the searchers and
the report builders read them back. Changing a name here changes it for all of them; a name
spelled out in two modules would drift. No imports of other study modules (nor of Ray):
every module of the study may import this one.

Metric keys (reported by trials, columns of ``results/trials`` and ``results/history``):

* ``study_step`` (:data:`STEP`): the study's own step counter (ASHA's time attribute);
* ``inter/<metric>``: the intermediate evaluation (``inter/<search.metric>`` is the objective);
* ``final/<dataset>/<metric>``: the final evaluation, one set each;
* ``train/<name>``: the training loop's metrics (loss, throughput, ``train/exposure/...``);
* ``model/display_name``, ``model/training``: what was trained;
* ``per_query/rows``: how many per-query rows the trial left in storage (the rows themselves
  travel as a file, see :mod:`study.results`); ``matrices_json``: the final tables as JSON.

Config columns (:func:`study.results.flatten_config`): ``axis/<path>`` (scaling axes),
``tuned/<path>`` (Optuna's values), ``phase``, ``cell``, ``seed``, ``source_trial``; they come
from the trial config the searchers hand out, ``{"phase", "cell", "axes", "tuned", "seed",
"source_trial"}`` (the same names).

The evaluation's own names (the settings ``mono``/``cross``/``multi``, the per-query columns
``setting``, ``query_lang``, ``candidate_lang``, ``query_id``, the ``dataset`` column the study
adds, the measures and the summary keys such as ``cross_map``) are defined once in
:mod:`hybridir.evaluation.vocabulary`; study modules import them from there, not from here.
``tests/test_study_architecture.py`` fails when one of these column names, or a setting name,
is spelled out as a string literal in a study module.
"""

from __future__ import annotations

from typing import Any

# --- files and phases -----------------------------------------------------------------------
CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train's checkpoint folders in a run: checkpoint_000000, ... (sortable)
SPEC_FILE = "study.yaml"  # the frozen, validated study in its directory (--resume reads it)
SEARCH = "search"  # phase (and Tune experiment) names
SEEDS = "seeds"
PHASES = (SEARCH, SEEDS)
ZERO_SHOT = "zero-shot"  # the untrained model: its per-query file stem and its rows' run label
ZERO_SHOT_FILE = "zero_shot.json"

# --- the row keys of results/trials and results/history (config columns: flatten_config) ----
TRIAL_ID, STATUS, FINISHED_AT = "trial_id", "status", "finished_at"
PHASE, CELL, SEED, SOURCE_TRIAL = "phase", "cell", "seed", "source_trial"
# The trial config (searchers -> trials) also carries the grid point and the tuned values;
# flatten_config turns them into the axis/ and tuned/ columns.
CONFIG_AXES, CONFIG_TUNED = "axes", "tuned"

# --- trial status (results/trials "status") -------------------------------------------------
COMPLETED, PRUNED, ERROR = "completed", "pruned", "error"

# --- reported metric keys -------------------------------------------------------------------
STEP = "study_step"  # the study's own step counter: ASHA's time_attr survives restores
INTER = "inter"  # the intermediate evaluation: ``inter/<metric>``
INTER_PREFIX = f"{INTER}/"
FINAL_PREFIX = "final/"
TRAIN_PREFIX = "train/"
MATRICES = "matrices_json"  # the final report's per-language-pair matrices, as one JSON string
PER_QUERY_ROWS = "per_query/rows"  # reported instead of the rows themselves (see study.results)
MODEL_DISPLAY_NAME = "model/display_name"
MODEL_TRAINING = "model/training"
PAIRS_PER_SECOND = "train/pairs_per_s_overall"
STEP_SECONDS = "train/step_seconds"
RESUMED_FROM_STEP = "train/resumed_from_step"
EXPOSURE_PREFIX = "train/exposure/"  # train_key(hybridir.batching.exposure_key(lang, field))
# The training loop's compute cost (hybridir.flops; summed over workers, the trial's last report):
# model FLOPs of every layer run in the steps, of the trained layers only, and CPU-seconds.
TRAIN_FLOPS = "train/cost/flops"
TRAIN_FLOPS_TRAINED = "train/cost/flops_trained"
TRAIN_CPU_SECONDS = "train/cost/cpu_s"

# --- columns the driver adds to a finished trial's row ---------------------------------------
WALL_TIME = "wall_time_s"
WORKER_SECONDS = "worker_seconds"

# --- report tables --------------------------------------------------------------------------
RUN = "run"  # which model a report row stands for: ZERO_SHOT or TRAINED (questions.common.add_zero_shot)
TRAINED = "trained"
# The verdict table (verdicts.csv): beside the claim's dataset and setting (the evaluation's
# DATASET and SETTING), its id and measure.
CLAIM, MEASURE = "claim", "measure"

# --- config columns -------------------------------------------------------------------------
AXIS_PREFIX = "axis/"
TUNED_PREFIX = "tuned/"
# The one axis that is not a TrainConfig path: in-language pairs for report.target_languages only
# (expanded into data.pairs_per_language by study.spec), the Q3 "in-language data per target
# language" knob.
TARGET_PAIRS_AXIS = "data.pairs_per_target_language"


def train_run_name(experiment: str, trial_id: str) -> str:
    """The Ray Train run of one trial, a folder of the storage path: a stable name, so a
    restored trial finds its checkpoints (and the driver the trial's per-query file)."""
    return f"train-{experiment}-{trial_id}"


def inter_key(metric: str) -> str:
    """``inter/<metric>``: a summary key of the intermediate evaluation."""
    return f"{INTER_PREFIX}{metric}"


def final_prefix(dataset: str) -> str:
    """``final/<dataset>``: the prefix of one final set's keys."""
    return f"{FINAL_PREFIX}{dataset}"


def final_key(dataset: str, metric: str) -> str:
    """``final/<dataset>/<metric>``: a summary key of one final evaluation set."""
    return f"{final_prefix(dataset)}/{metric}"


def train_key(name: str) -> str:
    """``train/<name>``: a metric of the training loop."""
    return f"{TRAIN_PREFIX}{name}"


def axis_column(path: str) -> str:
    """``axis/<path>``: a scaling axis' value in a results row."""
    return f"{AXIS_PREFIX}{path}"


def tuned_column(path: str) -> str:
    """``tuned/<path>``: a tuned hyperparameter's value in a results row."""
    return f"{TUNED_PREFIX}{path}"


def intermediate_metric(spec: Any) -> str:
    """The reported key ASHA and Optuna compare: ``inter/<search.metric>`` of a StudySpec."""
    return inter_key(spec.search.metric)


def plain_value(value):
    """A numpy/pandas scalar as the Python value it holds."""
    return value.item() if hasattr(value, "item") else value


def prefixed_columns(row, prefix: str) -> dict:
    """``{path: value}`` of a results row's ``<prefix><path>`` columns (``axis/``, ``tuned/``)."""
    return {key[len(prefix):]: plain_value(value) for key, value in row.items() if key.startswith(prefix)}
