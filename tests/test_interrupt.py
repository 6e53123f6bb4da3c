"""study.interrupt without Ray: which signal does what, where (the loop over real studies is
tests/test_study_e2e.py)."""

from __future__ import annotations

import logging
import signal

import pytest

from study import interrupt
from study.console import TuneInterruptLines


def test_a_first_signal_is_recorded_and_raised_only_at_a_check():
    with interrupt.handling():
        signal.raise_signal(signal.SIGTERM)  # would end the process without the handler
        assert interrupt.received() == signal.SIGTERM
        with pytest.raises(interrupt.Interrupted) as caught:
            interrupt.check("during the zero-shot evaluation")
    assert caught.value.signum == signal.SIGTERM and "during the zero-shot evaluation" in str(caught.value)
    assert interrupt.exit_code(signal.SIGINT) == 130 and interrupt.exit_code(signal.SIGTERM) == 143


def test_a_second_signal_stops_at_once():
    with interrupt.handling():
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(interrupt.Interrupted) as caught:
            signal.raise_signal(signal.SIGINT)
    assert caught.value.signum == signal.SIGINT


def test_inside_tune_the_signal_goes_to_tunes_own_handler_and_ours_comes_back():
    stops = []

    def tune_handler(signum, frame):  # what Tune installs inside fit(): stop gracefully, once
        stops.append(signum)
        signal.signal(signal.SIGINT, previous)

    with interrupt.handling():
        with interrupt.tune_phase():
            previous = signal.signal(signal.SIGINT, tune_handler)
            signal.raise_signal(signal.SIGTERM)  # Tune ignores SIGTERM: handed to its SIGINT handler
            assert stops == [signal.SIGINT] and interrupt.received() == signal.SIGTERM
            with pytest.raises(interrupt.Interrupted):
                signal.raise_signal(signal.SIGINT)  # the second one: now
        assert signal.getsignal(signal.SIGINT) is interrupt._handler


def test_tunes_handler_left_behind_after_fit_is_replaced():
    with interrupt.handling():
        with interrupt.tune_phase():
            signal.signal(signal.SIGINT, lambda *_: None)  # Tune leaves its handler installed
        signal.raise_signal(signal.SIGINT)  # between experiments: not swallowed
        with pytest.raises(interrupt.Interrupted):
            interrupt.check("between the search and the seed re-runs")


def test_tune_callback_takes_sigint_back_and_hands_the_first_signal_to_tune():
    stops = []

    def tune_handler(signum, frame):
        stops.append(signum)
        signal.signal(signal.SIGINT, previous)

    with interrupt.handling():
        with interrupt.tune_phase():
            previous = signal.signal(signal.SIGINT, tune_handler)  # fit() sets Tune's handler up
            interrupt.take_over_from_tune()  # then calls the callbacks' setup
            assert signal.getsignal(signal.SIGINT) is interrupt._handler
            signal.raise_signal(signal.SIGINT)
            assert stops == [signal.SIGINT] and interrupt.received() == signal.SIGINT


def test_a_signal_while_tune_sets_up_is_handed_on_once_it_is_ready():
    stops = []
    with interrupt.handling():
        with interrupt.tune_phase():
            signal.raise_signal(signal.SIGTERM)  # Tuner.restore(), before Tune's handler exists
            assert stops == []
            previous = signal.signal(signal.SIGINT, lambda signum, frame: stops.append(signum))
            interrupt.take_over_from_tune()
            assert stops == [signal.SIGINT]
            signal.signal(signal.SIGINT, previous)


def test_a_second_signal_before_the_driver_could_say_more_exits_with_the_signals_code(capsys):
    with pytest.raises(SystemExit) as caught:
        with interrupt.handling():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
    assert caught.value.code == 143
    assert capsys.readouterr().out.startswith("[study] interrupted (SIGTERM")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_outside_handling_signals_are_left_alone():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    interrupt.install()
    interrupt.take_over_from_tune()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_while_stopping_signals_are_only_recorded_and_defaults_come_back():
    with interrupt.handling():
        interrupt.stopping()
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)  # nothing raised during ray.shutdown() / the reports
        assert interrupt.received() == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_the_resume_line_names_the_directory():
    assert interrupt.resume_line("runs/x") == "continue with: python study/run.py --resume runs/x"


def test_tunes_interrupt_lines_are_dropped_and_its_other_lines_kept():
    lines = TuneInterruptLines()

    def passes(message, level=logging.WARNING):
        return lines.filter(logging.LogRecord("ray.tune.tune", level, __file__, 1, message, (), None))

    assert passes("Trials did not complete: %s", logging.ERROR)  # an errored trial, no interrupt
    assert passes("Experiment state snapshotting failed:", logging.ERROR)
    assert not passes("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run.")
    assert not passes("Experiment has been interrupted, but the most recent state was saved.")
    assert not passes("Trials did not complete: %s", logging.ERROR)
    assert passes("Experiment state snapshotting failed:", logging.ERROR)


def test_the_driver_stops_says_how_to_resume_and_exits_with_the_signals_code(tmp_path, monkeypatch, capsys):
    """study/run.py's wiring, Ray replaced: SIGTERM during the zero-shot evaluation (the loop
    over real studies is tests/test_study_e2e.py)."""
    import ray

    from study import run

    shutdowns = []
    monkeypatch.setattr(run, "start_ray", lambda spec, address: {})
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(True))

    def zero_shot(spec, local):
        def compute():
            signal.raise_signal(signal.SIGTERM)
            interrupt.check("during the zero-shot evaluation")  # what interrupt.wait_for does

        return compute

    monkeypatch.setattr(run, "zero_shot_on_ray", zero_shot)
    output = tmp_path / "study"
    with interrupt.handling():
        code = run.main(["--output", str(output), "--set", "search.seeds=0"])
    assert code == 143 and shutdowns
    lines = [line for line in capsys.readouterr().out.splitlines() if "--resume" in line]
    assert lines == [f"[study] interrupted (SIGTERM during the zero-shot evaluation); continue with: "
                     f"python study/run.py --resume {output}"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
