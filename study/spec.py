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
import functools
import itertools
import math
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

from hybridir.config import ArticleHoldout, TrainConfig
from hybridir.evaluation.vocabulary import ACCURACY, AP, BITEXT, CROSS_MAP, MULTI, RANK_DISTANCE
from hybridir.evaluation.vocabulary import SETTINGS as LAREQA_SETTINGS
from hybridir.overrides import OverrideError, parse_assignment, read_yaml_mapping, set_dotted
from study.question import (
    NoSettings,
    QuestionSettings,
    default_of,
    get_question,
    selector_keywords,
    settings_owner,
)
from study.vocabulary import CONFIG_AXES, CONFIG_TUNED, SEED, TARGET_PAIRS_AXIS

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
    metric: str = Field(CROSS_MAP, description="intermediate-evaluation summary key to optimise")
    mode: Literal["max", "min"] = "max"
    asha: AshaSettings | None = None
    seeds: int = Field(0, ge=0, description="re-run each cell's best configuration with N seeds")
    optuna_storage: str | None = Field(
        None,
        description="where each cell's Optuna study is kept: an RDB URL (sqlite:///..., postgresql://...) or "
        "a journal file path (relative paths count from the study directory); None: <study dir>/optuna.journal",
    )


# The evaluation set whose articles XQuAD training can hold out (they share their 48 titles).
HELD_OUT_DATASET = "xquad-r"


class EvalSetSettings(_Strict):
    dataset: str
    languages: list[str] | None = Field(None, description="language subset (None: all)")
    max_queries: int | None = Field(None, ge=1, description="queries per language (None: all)")
    held_out_articles: ArticleHoldout | None = Field(
        None,
        description="xquad-r only: evaluate only the XQuAD articles that data.holdout_articles with the same "
        "fraction and seed keeps out of training (None: every article)",
    )

    @model_validator(mode="after")
    def _held_out_on_xquad_r(self) -> "EvalSetSettings":
        if self.held_out_articles is not None and self.dataset != HELD_OUT_DATASET:
            raise ValueError(f"held_out_articles applies to dataset {HELD_OUT_DATASET!r} only (got {self.dataset!r})")
        return self

    def article_groups(self) -> set[str] | None:
        """The article groups this set is restricted to (None: all)."""
        if self.held_out_articles is None:
            return None
        from hybridir.data.xquad import held_out_articles

        return held_out_articles(self.held_out_articles.fraction, self.held_out_articles.seed)


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
# What a claim may measure, per evaluator kind (hybridir.evaluation.evaluator): the settings
# its per-query rows have and the measures (per-query columns; "accuracy" = bitext correct@1).
CLAIM_SETTINGS_BY_KIND = {"lareqa": tuple(LAREQA_SETTINGS), "bitext": (BITEXT,)}
CLAIM_MEASURES_BY_KIND = {"lareqa": (AP, "ndcg@10", "r@1", "r@10", RANK_DISTANCE), "bitext": (ACCURACY, AP)}
CLAIM_SETTINGS = tuple(dict.fromkeys(s for settings in CLAIM_SETTINGS_BY_KIND.values() for s in settings))
CLAIM_MEASURES = tuple(dict.fromkeys(m for measures in CLAIM_MEASURES_BY_KIND.values() for m in measures))
SLOPE_SCALES = ("linear", "log2", "log")
# Selector values chosen from the results instead of named (study.question.selector_keywords):
# "best" = the cell of highest claim statistic (lowest for rank_distance) along that axis, per
# combination of the axes the selector leaves open; the questions add their own (the batch
# question's "recommended" = its recommended batch size).


class ClaimCompare(_Strict):
    """Cells A and B of a difference A - B: ``{axis path: value}``; axes left out are averaged."""

    a: dict[str, Any] = Field(..., min_length=1)
    b: dict[str, Any] = Field(..., min_length=1)


class ClaimSlope(_Strict):
    """The OLS slope of the claim statistic per unit of ``axis`` (on its ``scale``: per
    doubling for log2, per e-fold for log), over the cells whose axis value lies in
    [``from``, ``to``] (``to`` None: no upper end; other axes fixed by ``where``, else averaged).
    Non-numeric axis values (``all``) lie outside every range: allowed only with ``to``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    axis: str
    from_: float = Field(..., alias="from")
    to: float | None = None
    scale: Literal[SLOPE_SCALES] = "linear"  # type: ignore[valid-type]
    where: dict[str, Any] = Field(default_factory=dict)

    def x(self, value: float) -> float:
        """An axis value on the slope's scale."""
        return {"linear": float, "log2": math.log2, "log": math.log}[self.scale](value)

    def covers(self, value: Any) -> bool:
        return (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= self.from_
                and (self.to is None or value <= self.to))


class ContrastTerm(_Strict):
    """One term of an arbitrary contrast: the cells ``cell`` selects (axes left out are
    averaged) with ``weight``."""

    cell: dict[str, Any]
    weight: float


class Claim(_Strict):
    id: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    statement: str
    dataset: str = Field(..., description="one of evaluation.final")
    minus_dataset: str | None = Field(
        None, description="the same contrast on this dataset (one of evaluation.final) is subtracted: "
        "dataset minus minus_dataset, per run (e.g. XQuAD-R minus MLQA-R degradation)")
    setting: Literal[CLAIM_SETTINGS] | None = None  # type: ignore[valid-type]
    metric_weights: dict[str, float] | None = Field(
        None, description="instead of setting: a combination of settings within each run, setting -> weight "
        "(e.g. {multi: 1, cross: -1}: multilingual minus cross-lingual, a trade-off)")
    measure: Literal[CLAIM_MEASURES]  # type: ignore[valid-type]
    compare: ClaimCompare | None = None
    slope: ClaimSlope | None = None
    contrast: list[ContrastTerm] | None = Field(
        None, description="arbitrary cell weights summing to 0, e.g. an interaction (+1, -1, -1, +1)")
    direction: Literal["greater", "less", "equivalent"]
    margin: float | None = Field(None, gt=0, description="equivalence margin (default report.accuracy_tolerance)")
    involving: list[str] | None = Field(
        None, min_length=1, description="only language-pair cells whose query or candidate language is one of these"
    )
    worst_language: list[str] | None = Field(
        None, description="the minimum (rank distance: maximum) over these languages of the statistic on the "
        "pairs involving each, per run")
    smallest_effect: float | None = Field(
        None, description="the smallest difference that matters: the report says when the design cannot detect it")
    untestable: str | None = Field(
        None, description="why this run cannot test the claim: set when --set axes.* removed its cells"
    )

    @model_validator(mode="after")
    def _shape(self) -> "Claim":
        where = f"claim {self.id!r}"
        shapes = [name for name in ("compare", "slope", "contrast") if getattr(self, name) is not None]
        if len(shapes) != 1:
            raise ValueError(f"{where}: give exactly one of 'compare', 'slope' or 'contrast'"
                             + (f" (got {shapes})" if shapes else ""))
        if (self.setting is None) == (self.metric_weights is None):
            raise ValueError(f"{where}: give exactly one of 'setting' or 'metric_weights'")
        if self.margin is not None and self.direction != "equivalent":
            raise ValueError(f"{where}: 'margin' applies to direction 'equivalent' only")
        if self.measure == RANK_DISTANCE and self.setting != MULTI:
            raise ValueError(f"{where}: measure rank_distance exists in setting 'multi' only"
                             + (" (not in a metric_weights combination)" if self.metric_weights else ""))
        if self.metric_weights is not None:
            unknown = [s for s in self.metric_weights if s not in CLAIM_SETTINGS]
            if unknown:
                raise ValueError(f"{where}.metric_weights: {unknown} are not settings {CLAIM_SETTINGS}")
            if len(self.metric_weights) < 2 or any(w == 0 for w in self.metric_weights.values()):
                raise ValueError(f"{where}.metric_weights: needs >= 2 settings with non-zero weights, "
                                 f"got {self.metric_weights} (one setting: use 'setting')")
        if self.contrast is not None:
            if len(self.contrast) < 2:
                raise ValueError(f"{where}.contrast: needs >= 2 terms, got {len(self.contrast)}")
            for index, term in enumerate(self.contrast):
                if not term.cell:
                    raise ValueError(f"{where}.contrast[{index}].cell: empty (name the cell's axis values)")
                if term.weight == 0:
                    raise ValueError(f"{where}.contrast[{index}].weight: 0 (drop the term)")
            cells = [repr(sorted(term.cell.items(), key=str)) for term in self.contrast]
            if len(set(cells)) != len(cells):
                raise ValueError(f"{where}.contrast: a cell appears twice: {[t.cell for t in self.contrast]}")
            total = sum(term.weight for term in self.contrast)
            within_run = self.metric_weights is not None and abs(sum(self.metric_weights.values())) < 1e-9
            if abs(total) > 1e-9 and not within_run:
                raise ValueError(f"{where}.contrast: the weights must sum to 0 (a contrast compares cells), they sum "
                                 f"to {total:g}: {[t.weight for t in self.contrast]}")
        if self.slope is not None and self.slope.to is not None and not self.slope.to > self.slope.from_:
            raise ValueError(f"{where}.slope.to: {self.slope.to:g} must exceed from={self.slope.from_:g}")
        if self.minus_dataset is not None and self.minus_dataset == self.dataset:
            raise ValueError(f"{where}.minus_dataset: the same as dataset {self.dataset!r}")
        if self.worst_language is not None:
            if self.involving is not None:
                raise ValueError(f"{where}.worst_language: give either 'involving' or 'worst_language'")
            if len(set(self.worst_language)) < 2:
                raise ValueError(f"{where}.worst_language: needs >= 2 languages, got {self.worst_language}")
        if self.smallest_effect is not None and not self.smallest_effect > 0:
            raise ValueError(f"{where}.smallest_effect: must be > 0, got {self.smallest_effect}")
        return self

    @property
    def datasets(self) -> list[str]:
        """The datasets the claim reads: ``dataset`` (and ``minus_dataset``)."""
        return [self.dataset] + ([self.minus_dataset] if self.minus_dataset else [])

    @property
    def settings(self) -> dict[str, float]:
        """setting -> weight within each run (``{setting: 1}`` for a plain claim)."""
        return dict(self.metric_weights) if self.metric_weights is not None else {self.setting: 1.0}

    @property
    def setting_text(self) -> str:
        """The setting, or the combination ("multi - cross")."""
        if self.metric_weights is None:
            return str(self.setting)
        parts = []
        for setting, weight in self.metric_weights.items():
            sign = "-" if weight < 0 else "+"
            size = "" if abs(weight) == 1 else f"{abs(weight):g} "
            parts.append(f"{sign} {size}{setting}")
        text = " ".join(parts)
        return text[2:] if text.startswith("+ ") else text

    @property
    def dataset_text(self) -> str:
        return self.dataset if self.minus_dataset is None else f"{self.dataset} - {self.minus_dataset}"


def _selectors(compare: Any, slope: Any, contrast: Any) -> list[tuple[str, Any]]:
    selectors = []
    if isinstance(compare, dict):
        selectors += [("compare.a", compare.get("a")), ("compare.b", compare.get("b"))]
    if isinstance(slope, dict):
        selectors.append(("slope.where", slope.get("where") or {}))
    if isinstance(contrast, list):
        selectors += [(f"contrast[{i}].cell", term.get("cell")) for i, term in enumerate(contrast)
                      if isinstance(term, dict)]
    return selectors


def claim_grid_problem(compare: Any, slope: Any, axes: dict[str, list[Any]], contrast: Any = None) -> str | None:
    """Why a claim's cells are not in the grid ``axes`` (None: they are). Works on raw dicts
    (``--set`` handling, before validation) and on validated claims alike."""
    def as_dict(value):
        if isinstance(value, list):
            return [as_dict(v) for v in value]
        return value.model_dump(by_alias=True) if isinstance(value, BaseModel) else value

    compare, slope, contrast = as_dict(compare), as_dict(slope), as_dict(contrast)
    axes = {path: values for path, values in axes.items() if isinstance(values, list)}  # others: schema errors
    for where, selector in _selectors(compare, slope, contrast):
        for path, value in (selector or {}).items() if isinstance(selector, dict) else ():
            if path in axes and value not in selector_keywords() and value not in axes[path]:
                return f"{where}: {path}={value!r} is not a value of axes[{path!r}] {axes[path]}"
    if isinstance(slope, dict) and slope.get("axis") in axes:
        axis, start, end = slope["axis"], slope.get("from"), slope.get("to")
        numeric = [v for v in axes[axis] if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if isinstance(start, (int, float)):
            inside = [v for v in numeric if v >= start and (not isinstance(end, (int, float)) or v <= end)]
            if len(inside) < 2:
                span = f">= from={start}" + (f" and <= to={end}" if isinstance(end, (int, float)) else "")
                return f"slope: fewer than 2 values of axes[{axis!r}] {axes[axis]} are {span}"
    return None


def _check_claim_kind(claim: Claim, where: str) -> None:
    """The claim's settings and measure exist in the per-query rows of its datasets' evaluator
    kind (``lareqa``: mono / cross / multi; ``bitext``: bitext accuracy); an unregistered
    dataset is left to :func:`study.checks.check_data`, which names it."""
    from hybridir.data.registry import eval_set_kind

    kinds = {}
    for field in ("dataset", "minus_dataset"):
        name = getattr(claim, field)
        if name is None:
            continue
        try:
            kinds[field] = eval_set_kind(name)
        except ValueError:
            return
        if kinds[field] not in CLAIM_SETTINGS_BY_KIND:
            raise ValueError(f"{where}.{field}: {name!r} is scored as kind {kinds[field]!r}, which claims do not "
                             f"support (claims support kinds {sorted(CLAIM_SETTINGS_BY_KIND)})")
    if not kinds:
        return
    if len(set(kinds.values())) > 1:
        raise ValueError(f"{where}.minus_dataset: {claim.minus_dataset!r} is scored as kind {kinds['minus_dataset']!r}, "
                         f"dataset {claim.dataset!r} as {kinds['dataset']!r}: a difference needs one kind")
    kind = kinds.get("dataset") or kinds["minus_dataset"]
    settings, measures = CLAIM_SETTINGS_BY_KIND[kind], CLAIM_MEASURES_BY_KIND[kind]
    field = "setting" if claim.metric_weights is None else "metric_weights"
    for setting in claim.settings:
        if setting not in settings:
            raise ValueError(f"{where}.{field}: {setting!r} is not a setting of {claim.dataset!r} (kind {kind!r}: "
                             f"settings {list(settings)})")
    if claim.measure not in measures:
        raise ValueError(f"{where}.measure: {claim.measure!r} is not a measure of {claim.dataset!r} (kind {kind!r}: "
                         f"measures {list(measures)})")


def claim_cell_weights(spec: "StudySpec", claim: Claim, pick: Any = None, drop_zero: bool = True) -> dict[int, float]:
    """Grid cell index -> the claim's contrast weight (cells of weight 0 dropped), from the spec
    alone: what the verdicts and the planner (``--plan``) weight the cells with.

    ``compare``: +1 / -1 spread equally over the cells each side selects (axes it leaves open
    are averaged); ``slope``: OLS weights on the axis values in [from, to] on the claim's scale
    (cells sharing an x value share its weight); ``contrast``: each term's weight spread over
    the cells it selects. A keyword selector ("best", "recommended") picks one cell per
    combination of the open axes: ``pick(keyword, path, members) -> cells`` chooses from the
    results (study.verdicts); without it (planning, validation) the first member stands in,
    which gives the same design (one cell per group).
    """
    from hybridir.evaluation.significance import slope_weights

    cells = spec.cells() or [{}]
    keywords = selector_keywords()

    def side(selector: dict) -> list[int]:
        matching = spec._matching_cells(selector)
        keyword_axes = [path for path, value in selector.items() if value in keywords]
        if not keyword_axes:
            return matching
        path = keyword_axes[0]
        open_axes = [p for p in spec.axes if p not in selector]
        groups: dict[tuple, list[int]] = {}
        for cell in matching:
            groups.setdefault(tuple(repr(cells[cell][p]) for p in open_axes), []).append(cell)
        chosen: list[int] = []
        for members in groups.values():
            chosen += list(pick(selector[path], path, members)) if pick is not None else members[:1]
        return chosen

    weights: dict[int, float] = {}
    if claim.compare is not None or claim.contrast is not None:
        terms = ([(claim.compare.a, 1.0), (claim.compare.b, -1.0)] if claim.compare is not None
                 else [(term.cell, term.weight) for term in claim.contrast])
        for selector, weight in terms:
            chosen = side(selector)
            if not chosen:
                raise ValueError(f"claim {claim.id!r}: no grid cell matches {selector}")
            for cell in chosen:
                weights[cell] = weights.get(cell, 0.0) + weight / len(chosen)
    else:
        slope = claim.slope
        by_x: dict[float, list[int]] = {}
        for cell in spec._matching_cells(slope.where):
            if slope.covers(cells[cell][slope.axis]):
                by_x.setdefault(slope.x(cells[cell][slope.axis]), []).append(cell)
        per_x = slope_weights({x: x for x in by_x})
        for x, group in by_x.items():  # other open axes: averaged at each x
            for cell in group:
                weights[cell] = per_x[x] / len(group)
    return {cell: w for cell, w in weights.items() if abs(w) > 1e-12 or not drop_zero}


def _claim_axes(claim: Any) -> set[str]:
    """The axis paths a raw claim names."""
    paths: set[str] = set()
    compare, slope, contrast = claim.get("compare"), claim.get("slope"), claim.get("contrast")
    for _, selector in _selectors(compare, slope, contrast):
        paths |= set(selector) if isinstance(selector, dict) else set()
    if isinstance(slope, dict):
        paths |= {slope.get("axis")}
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
        dropped = [d for d in (claim.get("dataset"), claim.get("minus_dataset"))
                   if d is not None and finals is not None and finals != finals_before and d not in finals
                   and d in (finals_before or [])]
        if dropped:
            claim["untestable"] = f"dataset {dropped[0]!r} is not among evaluation.final {finals} (changed by --set)"
            continue
        if not (_claim_axes(claim) & changed_axes):
            continue
        removed = sorted(p for p in _claim_axes(claim) & changed_axes if p not in axes)
        problem = (f"{', '.join(removed)} no longer an axis" if removed
                   else claim_grid_problem(claim.get("compare"), claim.get("slope"), axes, claim.get("contrast")))
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
        """Claims name existing axes, values of the grid, a final dataset, a setting and measure
        of that dataset's evaluator kind; errors name the claim and the field."""
        finals = [final.dataset for final in self.evaluation.final]
        ids = [claim.id for claim in self.claims]
        if len(set(ids)) != len(ids):
            raise ValueError(f"claims: ids repeat: {ids}")
        for index, claim in enumerate(self.claims):
            where = f"claims[{index}] ({claim.id})"
            for field in ("dataset", "minus_dataset"):
                name = getattr(claim, field)
                if name is not None and name not in finals and claim.untestable is None:
                    raise ValueError(f"{where}.{field}: {name!r} is not among evaluation.final {finals}")
            _check_claim_kind(claim, where)
            if claim.direction == "equivalent" and claim.margin is None:
                if self.report.accuracy_tolerance <= 0:
                    raise ValueError(f"{where}.margin: needed (report.accuracy_tolerance is 0)")
                claim.margin = self.report.accuracy_tolerance
            if claim.compare:
                selectors = {"compare.a": claim.compare.a, "compare.b": claim.compare.b}
            elif claim.slope:
                selectors = {"slope.where": claim.slope.where}
            else:
                selectors = {f"contrast[{i}].cell": term.cell for i, term in enumerate(claim.contrast)}
            known = selector_keywords()
            for field, selector in selectors.items():
                keywords = [path for path, value in selector.items() if value in known]
                if len(keywords) > 1:
                    raise ValueError(f"{where}.{field}: at most one of {tuple(known)} per side, got {keywords}")
                for path, value in selector.items():
                    if path not in self.axes:
                        if claim.untestable is not None:  # --set removed the axis: reported, not tested
                            continue
                        raise ValueError(f"{where}.{field}: {path!r} is not an axis of the study {sorted(self.axes)}")
                    if value in known and not field.startswith("compare"):
                        raise ValueError(f"{where}.{field}.{path}: {value!r} is for compare only")
                    owner = known.get(value) if value in known else None
                    if owner is not None:
                        rule = get_question(owner).selectors[value]
                        if path != rule.axis or self.report.builder != owner:
                            raise ValueError(f"{where}.{field}.{path}: {value!r} is the {owner} report's "
                                             f"{rule.description} (axis {rule.axis}, report.builder {owner}) only")
            if claim.compare and claim.compare.a == claim.compare.b:
                raise ValueError(f"{where}.compare: a and b select the same cells {claim.compare.a}")
            if claim.slope and claim.untestable is None:
                axis = claim.slope.axis
                if axis not in self.axes:
                    raise ValueError(f"{where}.slope.axis: {axis!r} is not an axis of the study {sorted(self.axes)}")
                if axis in claim.slope.where:
                    raise ValueError(f"{where}.slope.where: fixes the slope's own axis {axis!r}")
                words = [v for v in self.axes[axis] if not isinstance(v, (int, float)) or isinstance(v, bool)]
                # A word value ("all": the whole source) has no place on a numeric scale: a slope
                # with an upper end (to) leaves it out; without one it would silently end below it.
                if words and claim.slope.to is None:
                    raise ValueError(f"{where}.slope.axis: {axis!r} has non-numeric values {words} "
                                     f"(of {self.axes[axis]}): give slope.to to end the range below them")
                if claim.slope.scale != "linear":
                    bad = [v for v in self.axes[axis] if claim.slope.covers(v) and v <= 0]
                    if bad or claim.slope.from_ <= 0:
                        raise ValueError(f"{where}.slope.scale: {claim.slope.scale} needs axis values > 0 in the "
                                         f"range (from={claim.slope.from_:g}; got {bad or claim.slope.from_})")
            problem = claim_grid_problem(claim.compare, claim.slope, self.axes, claim.contrast)
            if problem and claim.untestable is None:
                raise ValueError(f"{where}.{problem} (edit the claim, or drop claims with --set claims=[])")
            if claim.contrast and claim.untestable is None:
                for i, term in enumerate(claim.contrast):
                    if not self._matching_cells(term.cell):
                        raise ValueError(f"{where}.contrast[{i}].cell: no cell of the grid matches {term.cell}")
                if not claim_cell_weights(self, claim):
                    raise ValueError(f"{where}.contrast: the terms cancel (every cell's weight sums to 0)")

    def _matching_cells(self, selector: dict) -> list[int]:
        """The grid cells a selector names (keyword values match every cell)."""
        keywords = selector_keywords()
        return [i for i, axes in enumerate(self.cells() or [{}])
                if all(axes.get(path) == value for path, value in selector.items() if value not in keywords)]

    @functools.cached_property
    def base_config(self) -> TrainConfig:
        """The TrainConfig of the base alone (no axis, nothing tuned, the base seed), validated
        once per spec (a StudySpec is not changed after validation; read it, do not modify it)."""
        return self.train_config({})

    @functools.cached_property
    def base_seed(self) -> int:
        """The seed search trials run with (``--seeds`` re-runs take base_seed + 1, + 2, ...)."""
        return self.base_config.seed

    def cells(self) -> list[dict[str, Any]]:
        """The grid over the scaling axes: one dict (dotted path -> value) per cell."""
        return [dict(zip(self.axes, combo)) for combo in itertools.product(*self.axes.values())]

    def trial_train_config(self, config: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of a trial config (``{"axes", "tuned", "seed"}``, as the searchers
        hand them out): axes and tuned values over the base, the trial's seed."""
        overrides = {**(config.get(CONFIG_AXES) or {}), **(config.get(CONFIG_TUNED) or {})}
        return self.train_config(overrides, seed=config.get(SEED))

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
    seed = config.get(SEED)
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
