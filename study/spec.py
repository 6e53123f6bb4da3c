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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from hybridir.config import TrainConfig
from hybridir.evaluation.lareqa import SETTINGS as LAREQA_SETTINGS
from hybridir.overrides import OverrideError, parse_assignment, read_yaml_mapping, set_dotted
from study.question import (
    NoSettings,
    QuestionSettings,
    default_of,
    get_question,
    selector_keywords,
    settings_owner,
)
from study.vocabulary import TARGET_PAIRS_AXIS

STUDIES_DIR = Path(__file__).resolve().parent / "studies"


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
    optuna_storage: str | None = Field(
        None,
        description="where each cell's Optuna study is kept: an RDB URL (sqlite:///..., postgresql://...) or "
        "a journal file path (relative paths count from the study directory); None: <study dir>/optuna.journal",
    )


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
    export_models: bool = Field(
        True,
        description="export each cell's best trial as a full sentence-transformers model at the end "
        "(~465 MB each for mE5-small); false: keep only each cell's best (slim) checkpoint and export "
        "later with `python study/export.py DIR`",
    )
    activation_cache: str | None = Field(
        None,
        description="directory of the frozen-layer activation cache shared by all trials (model.train_layers); "
        "None: <study dir>/activation-cache. On a cluster: a shared filesystem, or a node-local path",
    )


TRACKERS = ("tensorboard", "mlflow", "wandb")


class TrackingSettings(_Strict):
    """Experiment trackers that receive every trial's config and metrics (Ray Tune's logger
    callbacks, :mod:`study.trackers`); results/ is written either way."""

    trackers: list[Literal[TRACKERS]] = Field(default_factory=list)  # type: ignore[valid-type]
    mlflow_tracking_uri: str | None = Field(
        None, description="None: $MLFLOW_TRACKING_URI, else sqlite:///<study dir>/mlflow.db (a local file, no server)"
    )
    wandb_project: str | None = Field(None, description="None: the study name")

    @field_validator("trackers")
    @classmethod
    def _unique_trackers(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"trackers repeat: {value}")
        return value


class ReportSettings(_Strict):
    """``report:``: which question the study answers (``builder``, a registered
    :class:`study.question.Question`), the shared equivalence tolerance, and the question's own
    settings, written flat beside them in the YAML (``report: {builder: ratio,
    low_resource_languages: [...]}``) and validated by the question's settings model
    (``spec.report.settings``)."""

    builder: str = Field(..., description="the research question: a registered report builder (study/question.py)")
    accuracy_tolerance: float = Field(
        0.01, ge=0, description="default equivalence margin of claims; the batch question's Pareto tolerance"
    )
    settings: QuestionSettings = Field(default_factory=NoSettings, exclude=True,
                                       description="the question's own settings (its settings model)")

    @model_validator(mode="before")
    @classmethod
    def _question_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict) or isinstance(data.get("settings"), QuestionSettings):
            return data
        data = dict(data)
        builder = data.get("builder")
        if not isinstance(builder, str):
            return data  # the field's own error names report.builder
        try:
            question = get_question(builder)
        except ValueError as exc:
            raise ValueError(f"report.builder: {exc}") from None
        own = {key: data.pop(key) for key in list(data) if key not in ("builder", "accuracy_tolerance")}
        fields = question.settings.model_fields
        for key in [key for key in own if key not in fields]:
            other = settings_owner(key, exclude=builder)
            if other is not None and own[key] == default_of(other.settings, key):
                # A study frozen before questions had their own settings carries every
                # question's defaults: left out, they change nothing.
                del own[key]
                continue
            whose = f"; it is a setting of question {other.name!r}" if other is not None else ""
            raise ValueError(f"report.{key}: not a setting of question {builder!r} "
                             f"(its settings: {sorted(fields) or 'none'}){whose}")
        try:
            data["settings"] = question.settings.model_validate(own)
        except ValidationError as exc:
            raise ValueError("; ".join(
                f"report.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in exc.errors())) from None
        return data

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any, info: Any) -> dict[str, Any]:
        """The YAML's flat shape: the question's settings beside builder and accuracy_tolerance."""
        data = handler(self)
        data.update(self.settings.model_dump(mode=info.mode, by_alias=info.by_alias))
        return data


# --- claims: what a study's report must answer, checked with paired statistics ------------
# (hybridir.evaluation.significance; computed by study/verdicts.py)
CLAIM_MEASURES = ("ap", "ndcg@10", "r@1", "r@10", "rank_distance")
# Selector values chosen from the results instead of named (study.question.selector_keywords):
# "best" = the cell of highest claim statistic (lowest for rank_distance) along that axis, per
# combination of the axes the selector leaves open; the questions add their own (the batch
# question's "recommended" = its recommended batch size).


class ClaimCompare(_Strict):
    """Cells A and B of a difference A - B: ``{axis path: value}``; axes left out are averaged."""

    a: dict[str, Any] = Field(..., min_length=1)
    b: dict[str, Any] = Field(..., min_length=1)


class ClaimSlope(_Strict):
    """The OLS slope of the claim statistic per unit of ``axis``, over the cells whose axis
    value is >= ``from`` (other axes fixed by ``where``, else averaged)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    axis: str
    from_: float = Field(..., alias="from")
    where: dict[str, Any] = Field(default_factory=dict)


class Claim(_Strict):
    id: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    statement: str
    dataset: str = Field(..., description="one of evaluation.final")
    setting: Literal[LAREQA_SETTINGS]  # type: ignore[valid-type]
    measure: Literal[CLAIM_MEASURES]  # type: ignore[valid-type]
    compare: ClaimCompare | None = None
    slope: ClaimSlope | None = None
    direction: Literal["greater", "less", "equivalent"]
    margin: float | None = Field(None, gt=0, description="equivalence margin (default report.accuracy_tolerance)")
    involving: list[str] | None = Field(
        None, min_length=1, description="only language-pair cells whose query or candidate language is one of these"
    )
    untestable: str | None = Field(
        None, description="why this run cannot test the claim: set when --set axes.* removed its cells"
    )

    @model_validator(mode="after")
    def _shape(self) -> "Claim":
        if (self.compare is None) == (self.slope is None):
            raise ValueError(f"claim {self.id!r}: give exactly one of 'compare' or 'slope'")
        if self.margin is not None and self.direction != "equivalent":
            raise ValueError(f"claim {self.id!r}: 'margin' applies to direction 'equivalent' only")
        if self.measure == "rank_distance" and self.setting != "multi":
            raise ValueError(f"claim {self.id!r}: measure rank_distance exists in setting 'multi' only")
        return self


def claim_grid_problem(compare: Any, slope: Any, axes: dict[str, list[Any]]) -> str | None:
    """Why a claim's cells are not in the grid ``axes`` (None: they are). Works on raw dicts
    (``--set`` handling, before validation) and on validated claims alike."""
    def as_dict(value):
        return value.model_dump(by_alias=True) if isinstance(value, BaseModel) else value

    compare, slope = as_dict(compare), as_dict(slope)
    axes = {path: values for path, values in axes.items() if isinstance(values, list)}  # others: schema errors
    selectors = []
    if isinstance(compare, dict):
        selectors += [("compare.a", compare.get("a")), ("compare.b", compare.get("b"))]
    if isinstance(slope, dict):
        selectors.append(("slope.where", slope.get("where") or {}))
    for where, selector in selectors:
        for path, value in (selector or {}).items() if isinstance(selector, dict) else ():
            if path in axes and value not in selector_keywords() and value not in axes[path]:
                return f"{where}: {path}={value!r} is not a value of axes[{path!r}] {axes[path]}"
    if isinstance(slope, dict) and slope.get("axis") in axes:
        axis, start = slope["axis"], slope.get("from")
        numeric = [v for v in axes[axis] if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if isinstance(start, (int, float)) and len([v for v in numeric if v >= start]) < 2:
            return f"slope: fewer than 2 values of axes[{axis!r}] {axes[axis]} are >= from={start}"
    return None


def _claim_axes(claim: Any) -> set[str]:
    """The axis paths a raw claim names."""
    paths: set[str] = set()
    compare, slope = claim.get("compare"), claim.get("slope")
    if isinstance(compare, dict):
        for side in ("a", "b"):
            paths |= set(compare.get(side) or {}) if isinstance(compare.get(side), dict) else set()
    if isinstance(slope, dict):
        paths |= {slope.get("axis")} | (set(slope.get("where") or {}) if isinstance(slope.get("where"), dict) else set())
    return paths


def _final_datasets(raw: dict) -> list | None:
    final = (raw.get("evaluation") or {}).get("final") if isinstance(raw.get("evaluation"), dict) else None
    if not isinstance(final, list):
        return None
    return [item.get("dataset") for item in final if isinstance(item, dict)]


def _mark_untestable_claims(raw: dict, axes_before: dict, finals_before: list | None) -> None:
    """A ``--set`` that drops a claim's cells or dataset (a small local run: fewer axis values,
    another evaluation.final) keeps the claim, marked untestable with the reason, instead of
    refusing the run; a claim that does not fit the YAML's own grid stays an error."""
    axes = raw.get("axes") if isinstance(raw.get("axes"), dict) else {}
    changed_axes = {p for p in set(axes) | set(axes_before) if axes.get(p) != axes_before.get(p)}
    finals = _final_datasets(raw)
    for claim in raw.get("claims") or []:
        if not isinstance(claim, dict) or claim.get("untestable"):
            continue
        dataset = claim.get("dataset")
        if finals is not None and finals != finals_before and dataset not in finals and dataset in (finals_before or []):
            claim["untestable"] = f"dataset {dataset!r} is not among evaluation.final {finals} (changed by --set)"
            continue
        if not (_claim_axes(claim) & changed_axes):
            continue
        removed = sorted(p for p in _claim_axes(claim) & changed_axes if p not in axes)
        problem = (f"{', '.join(removed)} no longer an axis" if removed
                   else claim_grid_problem(claim.get("compare"), claim.get("slope"), axes))
        if problem:
            changed = ", ".join(f"axes.{p}" for p in sorted(_claim_axes(claim) & changed_axes))
            claim["untestable"] = f"{problem} ({changed} changed by --set)"


class Profile(_Strict):
    """A named set of ``--set`` overrides shipped with a study (``--profile NAME``), e.g. the
    local-scale recipe that fits a 2-core laptop."""

    description: str
    sets: list[str] = Field(..., min_length=1)


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
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    claims: list[Claim] = Field(default_factory=list, description="what the report must answer (verdict table)")
    profiles: dict[str, Profile] = Field(default_factory=dict, description="named override sets (--profile)")
    profile: str | None = Field(None, description="the profile this run applied (set by --profile)")

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
        for probe in [{}, *probes]:  # the base alone too: a bad base value is an error even where axes override it
            self.train_config(probe)
        self._check_claims()
        return self

    def _check_claims(self) -> None:
        """Claims name existing axes, values of the grid, a final dataset; errors name the claim."""
        finals = [final.dataset for final in self.evaluation.final]
        ids = [claim.id for claim in self.claims]
        if len(set(ids)) != len(ids):
            raise ValueError(f"claims: ids repeat: {ids}")
        for index, claim in enumerate(self.claims):
            where = f"claims[{index}] ({claim.id})"
            if claim.dataset not in finals and claim.untestable is None:
                raise ValueError(f"{where}.dataset: {claim.dataset!r} is not among evaluation.final {finals}")
            if claim.direction == "equivalent" and claim.margin is None:
                if self.report.accuracy_tolerance <= 0:
                    raise ValueError(f"{where}.margin: needed (report.accuracy_tolerance is 0)")
                claim.margin = self.report.accuracy_tolerance
            selectors = {"compare.a": claim.compare.a, "compare.b": claim.compare.b} if claim.compare else {
                "slope.where": claim.slope.where}
            known = selector_keywords()
            for field, selector in selectors.items():
                keywords = [path for path, value in selector.items() if value in known]
                if len(keywords) > 1:
                    raise ValueError(f"{where}.{field}: at most one of {tuple(known)} per side, got {keywords}")
                for path, value in selector.items():
                    if path not in self.axes:
                        raise ValueError(f"{where}.{field}: {path!r} is not an axis of the study {sorted(self.axes)}")
                    if value in known and field == "slope.where":
                        raise ValueError(f"{where}.slope.where.{path}: {value!r} is for compare only")
                    owner = known.get(value) if value in known else None
                    if owner is not None:
                        rule = get_question(owner).selectors[value]
                        if path != rule.axis or self.report.builder != owner:
                            raise ValueError(f"{where}.{field}.{path}: {value!r} is the {owner} report's "
                                             f"{rule.description} (axis {rule.axis}, report.builder {owner}) only")
            if claim.compare and claim.compare.a == claim.compare.b:
                raise ValueError(f"{where}.compare: a and b select the same cells {claim.compare.a}")
            if claim.slope:
                axis = claim.slope.axis
                if axis not in self.axes:
                    raise ValueError(f"{where}.slope.axis: {axis!r} is not an axis of the study {sorted(self.axes)}")
                if axis in claim.slope.where:
                    raise ValueError(f"{where}.slope.where: fixes the slope's own axis {axis!r}")
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.axes[axis]):
                    raise ValueError(f"{where}.slope.axis: {axis!r} has non-numeric values {self.axes[axis]}")
            problem = claim_grid_problem(claim.compare, claim.slope, self.axes)
            if problem and claim.untestable is None:
                raise ValueError(f"{where}.{problem} (edit the claim, or drop claims with --set claims=[])")

    @property
    def base_config(self) -> TrainConfig:
        """The TrainConfig of the base alone (no axis, nothing tuned, the base seed)."""
        return self.train_config({})

    @property
    def base_seed(self) -> int:
        """The seed search trials run with (``--seeds`` re-runs take base_seed + 1, + 2, ...)."""
        return self.base_config.seed

    def cells(self) -> list[dict[str, Any]]:
        """The grid over the scaling axes: one dict (dotted path -> value) per cell."""
        return [dict(zip(self.axes, combo)) for combo in itertools.product(*self.axes.values())]

    def trial_train_config(self, config: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of a trial config (``{"axes", "tuned", "seed"}``, as the searchers
        hand them out): axes and tuned values over the base, the trial's seed."""
        overrides = {**(config.get("axes") or {}), **(config.get("tuned") or {})}
        return self.train_config(overrides, seed=config.get("seed"))

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
        model = raw.setdefault("model", {})
        if isinstance(model, dict) and model.get("train_layers") and not model.get("activation_cache"):
            # One cache for every trial, seed, worker and the zero-shot evaluation of the study.
            model["activation_cache"] = self.resources.activation_cache
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
        targets = getattr(self.report.settings, "target_languages", None)  # the data question's setting
        if not targets:
            raise ValueError(f"axis {TARGET_PAIRS_AXIS} needs report.target_languages (report.builder data)")
        caps = dict(self.base.get("data", {}).get("pairs_per_language", {}))
        if value is None or value == "all":
            return caps
        return {**caps, **{lang: value for lang in targets}}


def effective_seed(config: dict, base_seed: int | None) -> int | None:
    """The seed a trial trains with: its own (``--seeds`` re-runs) or the study's base seed."""
    seed = config.get("seed")
    return base_seed if seed is None else int(seed)


def _set_dotted(tree: dict, path: str, value: Any) -> None:
    try:
        set_dotted(tree, path, value)
    except OverrideError as exc:
        raise StudyConfigError(str(exc)) from None


def _parse_set(assignment: str) -> tuple[str, Any]:
    try:
        return parse_assignment(assignment)
    except OverrideError as exc:
        raise StudyConfigError(str(exc)) from None


def apply_sets(raw: dict, assignments: list[str]) -> dict:
    """Apply ``--set key=value`` overrides to a raw study dict.

    A key starting with a study section (``search.seeds``, ``resources.num_workers``)
    edits the study; ``axes.<dotted>`` / ``tune.<dotted>`` replace one axis / tuned
    parameter whole; anything else is a TrainConfig path put under ``base``
    (``max_steps=10``, ``model.num_layers=1``).
    """
    raw = copy.deepcopy(raw)
    sections = set(StudySpec.model_fields)
    axes_before = copy.deepcopy(raw.get("axes")) if isinstance(raw.get("axes"), dict) else {}
    finals_before = _final_datasets(raw)
    for assignment in assignments:
        key, value = _parse_set(assignment)
        head, _, rest = key.partition(".")
        if head in ("axes", "tune") and rest:
            raw.setdefault(head, {})[rest] = value
        elif head in sections:
            _set_dotted(raw, key, value)
        else:
            _set_dotted(raw.setdefault("base", {}), key, value)
    _mark_untestable_claims(raw, axes_before, finals_before)
    return raw


def study_names() -> list[str]:
    """The shipped studies (``study/studies/<name>.yaml``), for ``--study NAME``."""
    return sorted(path.stem for path in STUDIES_DIR.glob("*.yaml"))


def resolve_study_file(name_or_path: str | Path) -> Path:
    """A study name (``languages``) or a YAML path -> the file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise StudyConfigError(f"study file {candidate} does not exist")
        return candidate
    path = STUDIES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise StudyConfigError(f"unknown study {str(name_or_path)!r}; known: {study_names()}")
    return path


def load_study(source: str | Path | dict, sets: list[str] = (), profile: str | None = None) -> StudySpec:
    """Read, override and validate a study; raises :class:`StudyConfigError` naming the field.

    ``profile`` names one of the study's ``profiles``: its overrides apply first, then ``sets``."""
    if isinstance(source, dict):
        raw, origin = source, "<dict>"
    else:
        path = resolve_study_file(source)
        origin = str(path)
        try:
            raw = read_yaml_mapping(path, "study file")
        except OverrideError as exc:
            raise StudyConfigError(str(exc)) from None
    if profile is not None:
        profiles = raw.get("profiles") or {}
        if profile not in profiles:
            raise StudyConfigError(f"--profile {profile!r}: {origin} defines {sorted(profiles) or 'no profiles'}")
        chosen = profiles[profile]
        profile_sets = chosen.get("sets", []) if isinstance(chosen, dict) else []
        raw = {**apply_sets(raw, list(profile_sets)), "profile": profile}
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
