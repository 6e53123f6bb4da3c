"""Ctrl-C (SIGINT) and SIGTERM of the study driver: stop, save, shut Ray down, say how to resume.

``python study/run.py`` runs inside :func:`handling`, which owns both signals, so nothing else
decides what a signal does at an arbitrary point of the driver:

* a first signal is only recorded by the handler. During a Tune experiment (:func:`tune_phase`)
  it is handed to Tune's own SIGINT handler, which stops the experiment after saving its state
  one last time (SIGTERM too, which Tune itself ignores); :func:`take_over_from_tune` takes
  SIGINT back from Tune as soon as fit() has set its handler up, so every signal passes here.
  Outside Tune (the zero-shot evaluation, between experiments) the driver raises
  :class:`Interrupted` at its next safe point (:func:`check`, :func:`wait_for`), in ordinary
  code, never from inside a library;
* a second signal means "now": the handler raises :class:`Interrupted` at once;
* worker output forwarded to the console (unless ``--verbose``; Ray's session logs keep it
  all) stops once a signal arrived, and never includes the traceback of a worker's teardown:
  the raylet SIGTERMs an exiting worker (e.g. Tune's ``_QueueActor`` after a trial), the
  worker's own SIGTERM handler raises ``SystemExit`` wherever it is (``threading._shutdown``,
  a ``WeakSet`` callback), and Ray forwards ``Exception ignored in: ... SystemExit: 1``
  without a prefix, so it read as the driver's (:func:`study.ray_internals.gate_worker_output`);
* the driver calls ``ray.shutdown()`` itself, before interpreter teardown; it then only records
  signals (:func:`stopping`) and, on leaving :func:`handling`, restores the default handlers,
  so neither Ray's driver handler (``ray.init`` installs one for SIGTERM) nor this one runs
  during teardown.

The driver prints one ``[study]`` line naming ``--resume`` (:func:`resume_line`) and exits with
the shell's convention for a signal: 128 + its number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The driver was asked to stop by ``signum``; raised only in the driver's main thread."""

    def __init__(self, signum: int, where: str = ""):
        self.signum = signum
        self.where = where
        super().__init__(f"{signal.Signals(signum).name}{f' {where}' if where else ''}")


class _State:
    received: list[int] = []
    in_tune = False
    tune_handler = None  # Tune's own SIGINT handler of the running fit(), taken over
    active = False
    stopping = False  # the driver is shutting down: record signals, raise nothing


def exit_code(signum: int) -> int:
    """128 + the signal's number, as a shell reports a process a signal stopped."""
    return 128 + int(signum)


def received() -> int | None:
    """The first signal received since :func:`handling` started (None: none)."""
    return _State.received[0] if _State.received else None


def _tune_handler():
    if _State.tune_handler is not None:
        return _State.tune_handler
    current = signal.getsignal(signal.SIGINT)  # Tune's, when take_over_from_tune did not run
    if callable(current) and current not in (_handler, signal.default_int_handler):
        return current
    return None


def _stop_tune(frame) -> None:
    stop = _tune_handler()
    _State.tune_handler = None
    if stop is not None:
        # Tune's graceful stop: it saves the experiment's state and returns from fit().
        stop(signal.SIGINT, frame)
        signal.signal(signal.SIGINT, _handler)  # Tune puts back the handler it found: this one


def _handler(signum: int, frame) -> None:
    _State.received.append(signum)
    if _State.stopping:
        return
    if len(_State.received) > 1:
        raise Interrupted(_State.received[0], "(twice: stopping now)")
    if _State.in_tune:
        # Before Tune's loop runs (restoring, setting up) there is nothing to hand it to yet:
        # take_over_from_tune() does it once Tune is ready.
        _stop_tune(frame)
    # Outside Tune: recorded; the driver raises Interrupted at its next check().


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """SIGINT and SIGTERM belong to this module inside the block: the whole of
    ``python study/run.py`` (:func:`after_ray_init` takes SIGTERM back from ``ray.init``). On
    the way out the default handlers are restored; a signal that arrives later stops the
    process the ordinary way, without Python code (Ray's included) running in the middle of
    teardown. An :class:`Interrupted` that reaches the block (a second signal before the
    driver could say more) becomes one line and the signal's exit code."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _State.received, _State.in_tune, _State.active, _State.stopping = [], False, True, False
    install()
    try:
        yield
    except Interrupted as exc:  # a second signal before the driver could say how to resume
        from study.console import say

        say(f"interrupted ({exc})")
        raise SystemExit(exit_code(exc.signum)) from None
    finally:
        _State.active, _State.stopping = False, False
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def install() -> None:
    """(Re)install this module's handler for SIGINT and SIGTERM: inside :func:`handling`, and
    again right after ``ray.init`` (which replaces the SIGTERM handler with its own). Outside
    :func:`handling` (the study run as a library, in tests) signals are left alone."""
    if not _State.active or threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        signal.signal(signum, _handler)


def after_ray_init(verbose: bool) -> None:
    """Right after ``ray.init``: take SIGTERM back from Ray's handler, and (unless
    ``verbose``) stop forwarding worker output to the console once a signal arrived: what the
    workers print while they are torn down is no news to the user (Ray's logs keep it)."""
    from study.ray_internals import gate_worker_output

    if not _State.active:
        return
    install()
    if not verbose:
        gate_worker_output(lambda: not _State.received)


def take_over_from_tune() -> None:
    """Called from a Tune callback's ``setup`` (main thread, inside fit(), after Tune installed
    its SIGINT handler): SIGINT comes back to this module, which hands the first signal of
    either kind to Tune's handler, so every signal is seen here (the exit code, the console)."""
    if not _State.active or threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGINT)
    if callable(current) and current not in (_handler, signal.default_int_handler):
        _State.tune_handler = current
        signal.signal(signal.SIGINT, _handler)
    if _State.received and not _State.stopping:
        _stop_tune(None)  # a signal arrived while Tune was setting up


def stopping() -> None:
    """The driver is on its way out (``ray.shutdown()``, the last reports): from now on a
    signal is recorded and nothing is raised in the middle of the shutdown."""
    _State.stopping = True


def check(where: str = "") -> None:
    """Raise :class:`Interrupted` if a signal arrived: called at the driver's safe points."""
    if _State.received:
        raise Interrupted(_State.received[0], where)


@contextlib.contextmanager
def tune_phase() -> Iterator[None]:
    """Around ``tuner.fit()``: a first signal stops the experiment the way Tune stops on Ctrl-C
    (state saved, fit returns). Tune installs its SIGINT handler inside fit() and leaves it
    installed afterwards; the block puts this module's back, so a Ctrl-C between experiments
    is not swallowed by a handler nobody listens to any more."""
    check("before the Tune experiment")
    _State.in_tune = True
    try:
        yield
    finally:
        _State.in_tune, _State.tune_handler = False, None
        if _State.active and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _handler)


def wait_for(object_ref, where: str, poll_s: float = 0.5):
    """``ray.get`` that a signal interrupts in ordinary code: the task is cancelled and
    :class:`Interrupted` raised."""
    import ray

    while True:
        ready, _ = ray.wait([object_ref], timeout=poll_s)
        if ready:
            return ray.get(ready[0])
        if _State.received:
            ray.cancel(object_ref, force=True)
            raise Interrupted(_State.received[0], where)


def resume_line(output) -> str:
    """The one line that tells how to continue an interrupted study."""
    return f"continue with: python study/run.py --resume {output}"
