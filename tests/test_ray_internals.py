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
        dispatcher.emit({"lines": ["one"]})
        allowed[0] = False
        dispatcher.emit({"lines": ["two"]})
        assert printed == [{"lines": ["one"]}]
    finally:
        dispatcher.remove_handler(ray_internals.PRINT_LOGS_HANDLER)
    assert not [name for name, _ in dispatcher.handlers if name == ray_internals.PRINT_LOGS_HANDLER]
