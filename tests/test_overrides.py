"""The one ``--set`` / YAML parser shared by ``python -m hybridir.train`` and the study files."""

from __future__ import annotations

import pytest

from hybridir.overrides import OverrideError, apply_assignments, parse_assignment, read_yaml_mapping, set_dotted
from hybridir.train import config_from_args
from study.spec import StudyConfigError, apply_sets


def test_values_are_parsed_as_yaml():
    assert parse_assignment("max_steps=20") == ("max_steps", 20)
    assert parse_assignment("data.languages=[en, de]") == ("data.languages", ["en", "de"])
    assert parse_assignment("model.train_layers=null") == ("model.train_layers", None)
    assert parse_assignment(" optim.lr = 1.0e-4") == ("optim.lr", 1e-4)
    assert apply_assignments({"optim": {"lr": 1.0}}, ["optim.warmup_steps=3"]) == {"optim": {"lr": 1.0, "warmup_steps": 3}}


def test_bad_assignments_and_files_are_named(tmp_path):
    with pytest.raises(OverrideError, match="'max_steps': expected key=value"):
        parse_assignment("max_steps")
    with pytest.raises(OverrideError, match="cannot parse value"):
        parse_assignment("data.languages=[en, de")
    with pytest.raises(OverrideError, match="'optim' is a value, not a section"):
        set_dotted({"optim": 3}, "optim.lr", 1)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(OverrideError, match=f"training config {listing} must be a mapping"):
        read_yaml_mapping(listing, "training config")


def test_train_cli_and_study_parse_the_same_assignment_the_same_way(tmp_path):
    assignment = "batching.batch_size=32"
    assert config_from_args(None, [assignment]).batching.batch_size == 32
    assert apply_sets({}, [assignment])["base"]["batching"]["batch_size"] == 32
    with pytest.raises(StudyConfigError, match="expected key=value"):
        apply_sets({}, ["max_steps"])
