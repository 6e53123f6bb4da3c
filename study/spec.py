"""The study schema: what a study YAML may say, validated strictly before Ray starts.

A study is (1) overrides of the base :class:`hybridir.config.TrainConfig`, (2) scaling
axes swept completely (their cartesian product = the grid cells), (3) hyperparameters
tuned by Optuna within each cell, (4) evaluation settings (a cheap intermediate subset
for pruning, the full final settings), (5) resources and (6) which report answers it.

Everything that can be checked without data is checked by pydantic on load; the checks
that need the data files (dataset names, languages) live in :mod:`study.checks`.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hybridir.config import TrainConfig

STUDIES_DIR = Path(__file__).resolve().parent / "studies"

# The one axis that is not a TrainConfig path: in-language pairs for report.target_languages only
# (expanded into data.pairs_per_language), the Q3 "in-language data per target language" knob.
TARGET_PAIRS_AXIS = "data.pairs_per_target_language"

ReportName = Literal["ratio", "languages", "batch", "data", "scale"]


class StudyConfigError(ValueError):
    """A study configuration that cannot run; the message names the offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TunedParam(_Strict):
    """One hyperparameter searched by Optuna, addressed by its dotted TrainConfig path."""

    distribution: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> "TunedParam":
        if self.distribution == "choice":
            if not self.values:
                raise ValueError("distribution 'choice' needs a non-empty 'values' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"distribution {self.distribution!r} needs 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"low={self.low} must be below high={self.high}")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        return self

    def candidate_values(self) -> list[Any]:
        """Values that must all be valid settings (the bounds, or every choice)."""
        if self.distribution == "choice":
            return list(self.values or [])
        if self.distribution == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


class AshaSettings(_Strict):
    grace_period: int = Field(..., ge=1, description="study steps before a trial can be pruned")
    reduction_factor: float = Field(2.0, gt=1.0)


class SearchSettings(_Strict):
    samples_per_cell: int = Field(1, ge=1, description="Optuna trials per grid cell")
    seed: int = 0
    metric: str = Field("cross_map", description="intermediate-evaluation summary key to optimise")
    mode: Literal["max", "min"] = "max"
    asha: AshaSettings | None = None
    seeds: int = Field(0, ge=0, description="re-run each cell's best configuration with N seeds")


class EvalSetSettings(_Strict):
    dataset: str
    languages: list[str] | None = Field(None, description="language subset (None: all)")
    max_queries: int | None = Field(None, ge=1, description="queries per language (None: all)")


class IntermediateEval(EvalSetSettings):
    every: int = Field(..., ge=1, description="study steps between intermediate evaluations")


class EvaluationSettings(_Strict):
    intermediate: IntermediateEval
    final: list[EvalSetSettings] = Field(..., min_length=1)

    @field_validator("final")
    @classmethod
    def _unique_final(cls, value: list[EvalSetSettings]) -> list[EvalSetSettings]:
        names = [item.dataset for item in value]
        if len(set(names)) != len(names):
            raise ValueError(f"final datasets repeat: {names}")
        return value


class ResourceSettings(_Strict):
    num_workers: int = Field(2, ge=1, description="Ray Train DDP workers per trial")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(2, ge=0, description="Train restarts from the last checkpoint")
    max_concurrent_trials: int | None = Field(None, ge=1, description="None: from cluster resources")
    storage_path: str | None = Field(None, description="Ray storage (local dir, shared FS or s3://...)")
    keep_checkpoints: bool = Field(False, description="keep finished trials' Train checkpoints (local storage)")


class ReportSettings(_Strict):
    builder: ReportName
    reference_languages: int = Field(40, ge=1, description="Q1: language count the change is relative to")
    low_resource_languages: list[str] = Field(default_factory=lambda: ["th", "hi", "el", "tr", "vi"])
    target_languages: list[str] | None = Field(
        None, description="Q3: languages whose in-language data the virtual axis data.pairs_per_target_language caps"
    )
    accuracy_tolerance: float = Field(
        0.01, ge=0, description="Q2: recommend the cheapest Pareto point within this mAP of the best"
    )


class StudySpec(_Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    question: str
    deviations: list[str] = Field(default_factory=list)
    base: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides")
    axes: dict[str, list[Any]] = Field(default_factory=dict, description="dotted path -> values")
    tune: dict[str, TunedParam] = Field(default_factory=dict, description="dotted path -> distribution")
    search: SearchSettings = Field(default_factory=SearchSettings)
    evaluation: EvaluationSettings
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    report: ReportSettings

    @model_validator(mode="after")
    def _consistent(self) -> "StudySpec":
        for path, values in self.axes.items():
            if not values:
                raise ValueError(f"axes[{path!r}] has no values")
            if len(set(map(repr, values))) != len(values):
                raise ValueError(f"axes[{path!r}] repeats a value: {values}")
        governed = {"eval_every", "checkpoint_every"} & (set(self.base) | set(self.axes) | set(self.tune))
        if governed:
            raise ValueError(
                f"{sorted(governed)} are set by evaluation.intermediate.every, not by the training config"
            )
        both = set(self.axes) & set(self.tune)
        if both:
            raise ValueError(f"{sorted(both)} is both a scaling axis and tuned; pick one")
        if not self.tune and self.search.samples_per_cell > 1:
            raise ValueError(
                f"search.samples_per_cell={self.search.samples_per_cell} but nothing is tuned "
                "(identical trials); use search.seeds for repetitions"
            )
        # Every combination must be a valid training config: a bad axis value fails here,
        # before any trial starts, with the axis and TrainConfig field in the message.
        probes = [dict(zip(self.axes, cell)) for cell in itertools.product(*self.axes.values())]
        for path, param in self.tune.items():
            for value in param.candidate_values():
                probes.append({path: value})
        for probe in probes or [{}]:
            self.train_config(probe)
        return self

    def cells(self) -> list[dict[str, Any]]:
        """The grid over the scaling axes: one dict (dotted path -> value) per cell."""
        return [dict(zip(self.axes, combo)) for combo in itertools.product(*self.axes.values())]

    def train_config(self, overrides: dict[str, Any], seed: int | None = None) -> TrainConfig:
        """Base config + dotted overrides, validated; errors name the dotted field."""
        raw = copy.deepcopy(self.base)
        for path, value in overrides.items():
            if path == TARGET_PAIRS_AXIS:
                path, value = "data.pairs_per_language", self._target_caps(value)
            _set_dotted(raw, path, value)
        if seed is not None:
            raw["seed"] = seed
        # Every intermediate evaluation is reported WITH a checkpoint (Train V2 keeps only
        # those), so evaluation and checkpoint cadence are one setting of the study.
        raw["eval_every"] = raw["checkpoint_every"] = self.evaluation.intermediate.every
        try:
            return TrainConfig.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})"
                for err in exc.errors()
            )
            where = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "base"
            raise ValueError(f"invalid training config at {where}: {problems}") from None


    def _target_caps(self, value: Any) -> dict[str, int]:
        """The virtual axis: one cap for every target language (None or "all": uncapped)."""
        targets = self.report.target_languages
        if not targets:
            raise ValueError(f"axis {TARGET_PAIRS_AXIS} needs report.target_languages")
        caps = dict(self.base.get("data", {}).get("pairs_per_language", {}))
        if value is None or value == "all":
            return caps
        return {**caps, **{lang: value for lang in targets}}


def _set_dotted(tree: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"{path}: {key!r} is a value, not a section")
        node = child
    node[keys[-1]] = value


def _parse_set(assignment: str) -> tuple[str, Any]:
    if "=" not in assignment:
        raise StudyConfigError(f"--set {assignment!r}: expected key=value")
    key, text = assignment.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StudyConfigError(f"--set {key}: cannot parse value {text!r}: {exc}") from None


def apply_sets(raw: dict, assignments: list[str]) -> dict:
    """Apply ``--set key=value`` overrides to a raw study dict.

    A key starting with a study section (``search.seeds``, ``resources.num_workers``)
    edits the study; ``axes.<dotted>`` / ``tune.<dotted>`` replace one axis / tuned
    parameter whole; anything else is a TrainConfig path put under ``base``
    (``max_steps=10``, ``model.num_layers=1``).
    """
    raw = copy.deepcopy(raw)
    sections = set(StudySpec.model_fields)
    for assignment in assignments:
        key, value = _parse_set(assignment)
        head, _, rest = key.partition(".")
        if head in ("axes", "tune") and rest:
            raw.setdefault(head, {})[rest] = value
        elif head in sections:
            _set_dotted(raw, key, value)
        else:
            _set_dotted(raw.setdefault("base", {}), key, value)
    return raw


def resolve_study_file(name_or_path: str | Path) -> Path:
    """A study name (``languages``) or a YAML path -> the file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise StudyConfigError(f"study file {candidate} does not exist")
        return candidate
    path = STUDIES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))
        raise StudyConfigError(f"unknown study {str(name_or_path)!r}; known: {known}")
    return path


def load_study(source: str | Path | dict, sets: list[str] = ()) -> StudySpec:
    """Read, override and validate a study; raises :class:`StudyConfigError` naming the field."""
    if isinstance(source, dict):
        raw, origin = source, "<dict>"
    else:
        path = resolve_study_file(source)
        origin = str(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise StudyConfigError(f"cannot read study file {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise StudyConfigError(f"{path}: top level must be a mapping")
    raw = apply_sets(raw, list(sets))
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(map(str, err['loc'])) or '<study>'}: {err['msg']}" for err in exc.errors()
        )
        raise StudyConfigError(f"invalid study {origin}:\n{problems}") from None


def dump_study(spec: StudySpec, path: Path) -> None:
    """Freeze the resolved study next to its results (``--resume`` reads it back)."""
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
