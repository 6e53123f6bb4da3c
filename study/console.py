"""What a study prints: one line per trial event, Ray and library chatter kept out.

A study's console is for a person glancing at it; everything else is in ``results/`` (and,
with ``--tracker``, in TensorBoard / MLflow / W&B). So, unless ``--verbose``:

* the driver prints ``[study]`` lines only: one per trial event (started / a compact line per
  report / completed / pruned / error) with the trial's axis values and headline metric, and a
  few lines about the study as a whole;
* Ray logs at WARNING in every process of the study (``ray.LoggingConfig``, also Ray Train's
  own console handler through its RunConfig), Tune's own progress table is off, Optuna logs
  at WARNING; Ray's session log files keep everything;
* Train workers and the zero-shot task keep hybridir's INFO lines and transformers' progress
  bars to themselves (:func:`hybridir.progress.quiet_libraries`), since the driver would
  otherwise print every redraw of a bar as a line.

``--verbose`` restores all of it and adds the full metric dictionary of every report.
The driver hands the choice to its workers through :data:`VERBOSE_ENV` (inherited locally,
carried to cluster nodes with the other ``HYBRIDIR_*`` variables). No Ray at import: the
driver formats its lines before Ray starts; the Tune callback that prints trial events is
:class:`study.tune_callback.TrialConsole`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any

from hybridir.evaluation.vocabulary import CROSS_MAP, MONO_MAP, MULTI_MAP
from hybridir.progress import write_line
from study.spec import effective_seed
from study.vocabulary import CELL, CONFIG_AXES, CONFIG_TUNED, FINAL_PREFIX, INTER_PREFIX, MATRICES, STEP

VERBOSE_ENV = "HYBRIDIR_VERBOSE"
PREFIX = "[study]"


def say(text: str) -> None:
    """One line of the study's console (above any progress bar)."""
    write_line(f"{PREFIX} {text}")


def verbose_enabled() -> bool:
    return os.environ.get(VERBOSE_ENV, "0") == "1"


def set_verbosity(verbose: bool) -> None:
    """Driver, before Ray starts: the levels of the driver's loggers and the environment the
    workers inherit."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if verbose:
        return
    # Tune's "Configuration for experiment" table and result tables come from its new output
    # engine even at verbose=0; the legacy reporter prints nothing at verbose=0.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # MLflow sets its loggers' level from this when it is first imported (by --tracker mlflow).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("ray", "ray.tune", "ray.train", "ray.data", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Tune's result grid warns about trials without result files on every restore; the study
    # keeps its own results (results/), which that grid is not used for.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # Ctrl-C: the driver says in one line how to resume (study.interrupt); Tune's own lines
    # would add a second, wrong way (Tuner.restore) and the list of unfinished trials.
    tune_logger = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, TuneInterruptLines) for f in tune_logger.filters):
        tune_logger.addFilter(TuneInterruptLines())
    from hybridir.progress import quiet_libraries

    quiet_libraries()  # the driver loads models too (the export at the end)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


class TuneInterruptLines(logging.Filter):
    """Drops Tune's messages about a stop signal (and, after one, its list of the trials that
    did not complete); every other record of Tune's ``tune.run`` logger passes."""

    STOP = ("Stop signal received", "Experiment has been interrupted", "Training has been interrupted")

    def __init__(self) -> None:
        super().__init__()
        self.stopped = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(self.STOP):
            self.stopped = True
            return False
        return not (self.stopped and message.startswith("Trials did not complete"))


def ray_logging_config():
    """The ``logging_config`` of ``ray.init``: the root logger of every Ray process of the job."""
    import ray

    return ray.LoggingConfig(log_level="INFO" if verbose_enabled() else "WARNING")


def train_logging_config():
    """The ``logging_config`` of a trial's Train RunConfig: Ray Train's own console lines
    (worker group start, every report with its metrics) at WARNING unless ``--verbose``."""
    import ray.train

    return ray.train.LoggingConfig(log_level="INFO" if verbose_enabled() else "WARNING")


def configure_worker() -> None:
    """Train workers and the zero-shot task: quiet unless the driver runs ``--verbose``."""
    install_exit_unraisable_hook()
    if verbose_enabled():
        return
    from hybridir.progress import quiet_libraries

    quiet_libraries()
    logging.getLogger("ray").setLevel(logging.WARNING)
    # Ray Train's worker logs each report (metrics dict included) through a logger named after
    # its file path, a child of the root logger, which Train itself sets to INFO.
    logging.getLogger().setLevel(logging.WARNING)


def install_exit_unraisable_hook() -> None:
    """Ray stops a finished trial's workers with SIGTERM, and its handler raises ``SystemExit``
    wherever the worker happens to be; inside a finalizer (a weakref callback, a ``__del__``)
    Python cannot raise it and prints "Exception ignored in ... SystemExit: 1" with a
    traceback, which Ray forwards to the study's console between trial lines (seen on a loaded
    machine). That exit is the intended one, so this hook drops exactly those reports; every
    other unraisable exception still goes to the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "_hybridir_exit_filter", False):
        return

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, SystemExit):
            return
        previous(unraisable)

    hook._hybridir_exit_filter = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


# --------------------------------------------------------------------------- formatting
def short_name(path: str) -> str:
    """``batching.alpha`` -> ``alpha``: the last part of a config path."""
    return path.rsplit(".", 1)[-1]


def metric_label(key: str) -> str:
    """``inter/cross_map`` -> ``cross_map``: the search objective as the console names it."""
    return key[len(INTER_PREFIX):] if key.startswith(INTER_PREFIX) else key


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)


def describe_config(config: dict, base_seed: int | None = None) -> str:
    """``cell 1 alpha=0.5 lr=3e-05 seed 1``: where a trial sits in the study."""
    parts = [f"cell {config.get(CELL)}"]
    for path, value in {**(config.get(CONFIG_AXES) or {}), **(config.get(CONFIG_TUNED) or {})}.items():
        parts.append(f"{short_name(path)}={format_value(value)}")
    seed = effective_seed(config, base_seed)
    if seed is not None:
        parts.append(f"seed {seed}")
    return " ".join(parts)


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def headline_final(result: dict) -> str:
    """Each final set's headline: LAReQA ``Mo/Cr/Mul`` mAP, bitext accuracy."""
    parts = []
    datasets = sorted({key[len(FINAL_PREFIX):].split("/", 1)[0] for key in result if key.startswith(FINAL_PREFIX)})
    for dataset in datasets:
        prefix = f"{FINAL_PREFIX}{dataset}/"
        values = [(label, number(result.get(prefix + key)))
                  for label, key in (("Mo", MONO_MAP), ("Cr", CROSS_MAP), ("Mul", MULTI_MAP),
                                     ("acc", "accuracy"))]
        shown = " ".join(f"{label} {value:.4f}" for label, value in values if value is not None)
        if shown:
            parts.append(f"{dataset} {shown}")
    return "; ".join(parts)


def progress_line(result: dict, max_steps: int | None, objective: str) -> str:
    """``step 20/40 loss 1.2345 cross_map 0.6123 0.71 s/step``: one report of a trial."""
    step = result.get(STEP)
    parts = [f"step {step}/{max_steps}" if max_steps else f"step {step}"]
    loss = number(result.get("train/loss"))
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    value = number(result.get(objective))
    if value is not None:
        parts.append(f"{metric_label(objective)} {value:.4f}")
    seconds = number(result.get("train/s_per_step"))
    if seconds is not None:
        parts.append(f"{seconds:.2f} s/step")
    if result.get("train/resumed_from_step") is not None:
        parts.append("(resumed)")
    return " ".join(parts)


def full_dict(result: dict) -> str:
    shown = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in sorted(result.items())
             if "/" in k and k != MATRICES}
    return str(shown)
