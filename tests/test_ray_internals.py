"""The Ray version the study's private-API uses were written against, and those uses."""

from __future__ import annotations

import json

import ray

from study import ray_internals


def test_installed_ray_is_the_pinned_version():
    assert ray.__version__ == ray_internals.PINNED_RAY_VERSION


def test_the_private_names_still_exist_and_behave():
    assert ray_internals.experiment_state_pattern() == "experiment_state-*.json"
    assert ray_internals.searcher_state_pattern() == "searcher-state-*.pkl"
    state = ray_internals.load_experiment_state(json.dumps({"trial_data": [], "runner_data": {}}))
    assert state == {"trial_data": [], "runner_data": {}}
    assert isinstance(ray_internals.local_ray_instances(), list)
    assert hasattr(ray_internals.wandb_logging_actor_class(), "run")


def test_the_pin_matches_pyproject():
    from pathlib import Path

    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert f'"ray[default,tune,train]=={ray_internals.PINNED_RAY_VERSION}"' in pyproject


def test_worker_output_can_be_held_back_from_the_console():
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printed, allowed = [], [True]
    assert not ray_internals.gate_worker_output(lambda: True)  # no printer: ray.init did not run
    dispatcher.add_handler(ray_internals.PRINT_LOGS_HANDLER, printed.append)
    try:
        assert ray_internals.gate_worker_output(lambda: allowed[0])
        dispatcher.emit({"lines": ["one"], "pid": 1})
        dispatcher.emit({"lines": TEARDOWN, "pid": 1})  # nothing left to print
        dispatcher.emit({"lines": ["x", *TEARDOWN], "pid": 2})
        allowed[0] = False
        dispatcher.emit({"lines": ["two"], "pid": 1})
        assert printed == [{"lines": ["one"], "pid": 1}, {"lines": ["x"], "pid": 2}]
    finally:
        dispatcher.remove_handler(ray_internals.PRINT_LOGS_HANDLER)
    assert not [name for name, _ in dispatcher.handlers if name == ray_internals.PRINT_LOGS_HANDLER]


TEARDOWN = [
    "Exception ignored in: <function WeakSet.__init__.<locals>._remove at 0x7f>",
    "Traceback (most recent call last):",
    '  File "/usr/lib/python3.11/_weakrefset.py", line 39, in _remove',
    '  File ".../ray/_private/worker.py", line 1063, in sigterm_handler',
    "    raise_sys_exit_with_custom_error_message(",
    '  File "python/ray/_raylet.pyx", line 712, in ray._raylet.raise_sys_exit_with_custom_error_message',
    "SystemExit: 1",
]


def test_a_workers_teardown_traceback_is_dropped_and_everything_else_kept():
    held = []
    assert ray_internals.without_teardown_tracebacks(["before", *TEARDOWN, "after"], held) == ["before", "after"]
    other = ["Exception ignored in: <generator object f at 0x1>", "Traceback (most recent call last):",
             '  File "x.py", line 1, in f', "ValueError: real"]
    assert ray_internals.without_teardown_tracebacks(["a", *other, "b"], held) == ["a", *other, "b"]
    # a block cut between two batches of the same worker
    assert ray_internals.without_teardown_tracebacks(["a", *TEARDOWN[:3]], held) == ["a"] and held
    assert ray_internals.without_teardown_tracebacks([*TEARDOWN[3:], "b"], held) == ["b"] and not held
