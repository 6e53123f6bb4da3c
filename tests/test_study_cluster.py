"""cluster.yaml is a valid Ray cluster-launcher config (offline schema check, pinned Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import validate_config

CLUSTER = Path(__file__).resolve().parent.parent / "cluster.yaml"


def test_cluster_yaml_is_valid():
    config = yaml.safe_load(CLUSTER.read_text())
    validate_config(config)
    setup = config["setup_commands"]
    # torch pinned and installed before the project (an unpinned torch pulls other builds)
    torch_at = next(i for i, c in enumerate(setup) if "torch==" in c)
    project_at = next(i for i, c in enumerate(setup) if "-e /home/ubuntu/hybridir" in c)
    assert torch_at < project_at
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["tune_driver"] >= 1  # study/run.py's trial-driver slots
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])


def test_validation_catches_a_misspelled_key():
    config = yaml.safe_load(CLUSTER.read_text())
    config["max_wrokers"] = config.pop("max_workers")
    with pytest.raises(Exception, match="max_wrokers"):
        validate_config(config)
