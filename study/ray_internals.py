"""Every use of Ray's private or undocumented API, in one place, for the pinned Ray version.

The study relies on a few things Ray does not promise to keep: the file-name templates of
Tune's saved state and the loader Tune reads it with (to check a state before ``--resume``
trusts it, :mod:`study.recovery`), the GCS address lookup that tells whether another local
Ray instance runs (:mod:`study.run`), the driver's forwarding of worker output to its console
(held back once the study is interrupted, :mod:`study.interrupt`), the W&B logger's per-trial
actor class with the hook that selects it (:mod:`study.trackers`, which waits for W&B to flush
before Ray kills it), the per-trial bookkeeping of the TensorBoard and MLflow logger callbacks
the study's trackers extend, and the rungs and trial table of ``AsyncHyperBandScheduler`` that
:class:`study.search.PerCellASHA` refills from the study's history. Upgrading Ray means
re-checking this module:
``tests/test_ray_internals.py`` fails at once when the installed Ray is not
:data:`PINNED_RAY_VERSION` or one of these names moved.
"""

from __future__ import annotations

from typing import Any

PINNED_RAY_VERSION = "2.60.0"  # pyproject.toml pins ray[default,tune,train] to the same version


def experiment_state_pattern() -> str:
    """Glob of Tune's experiment-state files (``experiment_state-<time>.json``)."""
    from ray.tune.execution.tune_controller import TuneController

    return TuneController.CKPT_FILE_TMPL.format("*")


def searcher_state_pattern() -> str:
    """Glob of a searcher's saved state (``searcher-state-<time>.pkl``)."""
    from ray.tune.search import Searcher

    return Searcher.CKPT_FILE_TMPL.format("*")


def load_experiment_state(text: str) -> Any:
    """Tune's own reader of an experiment-state file."""
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    return _loads_with_cloudpickle(text)


def local_ray_instances() -> list:
    """GCS addresses of the Ray instances running on this machine (empty: none)."""
    from ray._private.services import find_gcs_addresses

    return list(find_gcs_addresses())


PRINT_LOGS_HANDLER = "ray_print_logs"  # the name ray.init(log_to_driver=True) gives its console printer
TEARDOWN_START = "Exception ignored in:"
TEARDOWN_SIGNATURE = "in sigterm_handler"  # Ray's worker main loop: SIGTERM raises SystemExit


def without_teardown_tracebacks(lines: list[str], held: list[str]) -> list[str]:
    """``lines`` of one worker without the traceback a Ray worker prints when the raylet
    SIGTERMs it while it exits: its SIGTERM handler raises ``SystemExit`` wherever the
    interpreter is (``threading._shutdown``, a ``WeakSet`` callback) and Python prints
    ``Exception ignored in: ... SystemExit: 1``. Every other line is kept. ``held`` carries an
    ``Exception ignored`` block that a batch ended in the middle of over to the next batch."""
    kept, block = [], list(held)
    held.clear()
    for line in lines:
        if block:
            block.append(line)
            if line.startswith(("SystemExit", "KeyboardInterrupt")) or not line.startswith((" ", "Traceback")):
                if not any(TEARDOWN_SIGNATURE in entry for entry in block):
                    kept.extend(block)
                elif not line.startswith("SystemExit"):
                    kept.append(line)  # a line after the block that is not part of it
                block = []
        elif line.startswith(TEARDOWN_START):
            block = [line]
        else:
            kept.append(line)
    held.extend(block)
    return kept


def gate_worker_output(allow) -> bool:
    """Forward worker output (``log_to_driver``) to the driver's console only while
    ``allow()`` is true, and never the traceback of a worker's teardown
    (:func:`without_teardown_tracebacks`); call after ``ray.init``. Returns whether Ray's
    printer was found.

    Ray forwards worker output without a prefix when the job has a ``LoggingConfig`` (the
    study sets one), so those tracebacks read as the driver's own. Ray's session logs keep all
    of it (``--verbose`` leaves the forwarding as Ray has it)."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printers = [handler for name, handler in dispatcher.handlers if name == PRINT_LOGS_HANDLER]
    if len(printers) != 1:
        return False
    printer = printers[0]
    held: dict = {}

    def gated(data):
        if not allow():
            return
        lines = data.get("lines")
        if isinstance(lines, list):
            lines = without_teardown_tracebacks(lines, held.setdefault(data.get("pid"), []))
            if not lines:
                return
            data = {**data, "lines": lines}
        printer(data)

    dispatcher.remove_handler(PRINT_LOGS_HANDLER)
    dispatcher.add_handler(PRINT_LOGS_HANDLER, gated)  # ray.shutdown() removes it by this name
    return True


def wandb_logging_actor_class() -> type:
    """The per-trial logging actor of ``WandbLoggerCallback`` (``_WandbLoggingActor``); a
    subclass replaces it through the callback's class attribute ``_logger_actor_cls``."""
    from ray.air.integrations.wandb import WandbLoggerCallback, _WandbLoggingActor

    if getattr(WandbLoggerCallback, "_logger_actor_cls", None) is not _WandbLoggingActor:
        raise RuntimeError("ray.air.integrations.wandb.WandbLoggerCallback no longer selects its logging actor "
                           "through _logger_actor_cls: study/trackers.py needs updating for this Ray version")
    return _WandbLoggingActor


def use_wandb_logging_actor(callback_class: type, actor_class: type) -> None:
    """Make ``callback_class`` (a WandbLoggerCallback subclass) start ``actor_class`` per trial,
    through the hook ``_logger_actor_cls`` (:func:`wandb_logging_actor_class`)."""
    wandb_logging_actor_class()  # raises if the hook moved
    callback_class._logger_actor_cls = actor_class


# --- logger callbacks' per-trial bookkeeping (ray.tune.logger / ray.air.integrations) ----------

def tensorboard_writers(callback) -> dict:
    """``TBXLoggerCallback``'s trial -> open SummaryWriter table (``_trial_writer``)."""
    return callback._trial_writer


def tensorboard_last_results(callback) -> dict:
    """``TBXLoggerCallback``'s trial -> last logged metrics (``_trial_result``)."""
    return callback._trial_result


def tensorboard_writer_class(callback) -> type:
    """The SummaryWriter class ``TBXLoggerCallback`` imported (``_summary_writer_cls``)."""
    return callback._summary_writer_cls


def mlflow_trial_runs(callback) -> dict:
    """``MLflowLoggerCallback``'s trial -> MLflow run id (``_trial_runs``), which its
    ``log_trial_end`` ends."""
    return callback._trial_runs


# --- AsyncHyperBandScheduler's state (ray.tune.schedulers.async_hyperband) ----------------------

def asha_record_result(scheduler, trial_id: str, step: int, value: float) -> None:
    """Put one stored result into an ASHA scheduler's rungs as if the trial had just reported
    it (``_brackets[0].on_result`` with the scheduler's sign, ``_metric_op``)."""
    from types import SimpleNamespace

    scheduler._brackets[0].on_result(SimpleNamespace(trial_id=trial_id), step, scheduler._metric_op * value)


def asha_knows_trial(scheduler, trial_id: str) -> bool:
    """Whether the scheduler's trial table (``_trial_info``) holds the trial."""
    return trial_id in scheduler._trial_info


def asha_forget_trial(scheduler, trial_id: str) -> None:
    """Drop a trial from the scheduler's trial table (an errored or removed trial)."""
    scheduler._trial_info.pop(trial_id, None)
