"""Where a run's wall time goes: seconds per named phase.

A trial pays for more than its training steps (loading the model and the data, tokenising,
evaluating, writing checkpoints, and in a study Ray's own start-up and persistence). The
training loop times its phases with :class:`PhaseTimes` and returns them with its result; the
study adds its own phases; ``bench/trial_cost.py`` prints them side by side. Wall-clock time
(``time.perf_counter``): on a shared machine read the shares, not the seconds. Beside it each
phase's process CPU time (``time.process_time``: every thread of this process, not the
other processes sharing the machine), the training loop's compute cost in CPU-seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# The phases of one training run (``steps`` is what remains of the loop once the others are
# taken out: batching, collation, forward, backward, update; ``reporting`` is the callbacks'
# on_log/on_checkpoint, where a study hands metrics and checkpoints to Ray).
TRAIN_PHASES = ("data_load", "model_load", "steps", "validation", "intermediate_eval", "checkpoint_write", "reporting")
PREFIX = "phase_s/"


class PhaseTimes:
    """Accumulated wall-clock seconds (and process CPU seconds, where timed here) per phase name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started, time.process_time() - cpu_started)

    def add(self, name: str, seconds: float, cpu_seconds: float | None = None) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        if cpu_seconds is not None:
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + cpu_seconds

    def total(self, *names: str) -> float:
        return sum(self.seconds.get(name, 0.0) for name in names)

    def cpu_total(self, *names: str) -> float:
        return sum(self.cpu_seconds.get(name, 0.0) for name in names)

    def as_metrics(self) -> dict[str, float]:
        """``phase_s/<name>`` entries (how the study and the bench carry them)."""
        return {f"{PREFIX}{name}": seconds for name, seconds in self.seconds.items()}
