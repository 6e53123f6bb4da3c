"""YAML config files and ``--set key.sub=value`` overrides: the one parser behind
``python -m hybridir.train --config/--set`` and the study files (``study.spec``).

Values are parsed as YAML (``max_steps=20`` is an int, ``data.languages=[en, de]`` a list,
``model.train_layers=null`` None), so a command line writes exactly what a YAML file would.
Both callers validate the result with their own pydantic models afterwards; this module only
builds the raw mapping and names the assignment or file that cannot be read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class OverrideError(ValueError):
    """A ``--set`` assignment or a config file that cannot be read; the message names it."""


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """The top-level mapping of a YAML file (an empty file is an empty mapping)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise OverrideError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise OverrideError(f"{what} {path} must be a mapping at the top level, got {type(raw).__name__}")
    return raw


def parse_assignment(assignment: str) -> tuple[str, Any]:
    """``"optim.lr=1e-4"`` -> ``("optim.lr", 0.0001)``."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise OverrideError(f"--set {assignment!r}: expected key=value, e.g. optim.lr=1e-4")
    try:
        return key, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OverrideError(f"--set {key}: cannot parse value {text!r}: {exc}") from None


def set_dotted(tree: dict, path: str, value: Any) -> None:
    """``tree[a][b][c] = value`` for ``path = "a.b.c"``, creating the sections on the way."""
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise OverrideError(f"--set {path}: {part!r} is a value, not a section")
        node = child
    node[leaf] = value


def apply_assignments(raw: dict, assignments: list[str] | tuple[str, ...]) -> dict:
    """``raw`` with every ``key=value`` assignment set (in place; returned for chaining)."""
    for assignment in assignments:
        set_dotted(raw, *parse_assignment(assignment))
    return raw
