"""``study/run.py --plan``: what a study will cost and what its claims can detect, before it runs.

No Ray, no training: the plan is arithmetic over the validated study and two tables.

* **Trials.** Every grid cell runs ``search.samples_per_cell`` search trials and
  ``search.seeds`` re-runs of its best configuration. The runs a claim sees per cell are the
  re-runs (plus the search trial when nothing is tuned: then it is the same configuration at
  the base seed), as :func:`study.questions.common.representative_trials` picks them.
* **Wall time** from a cost table (:data:`COST_FILE`, measured by ``bench/plan_costs.py``):
  seconds per training step as a function of batch size B, trained layers K and model depth L
  (``c + B * (a * K + b * (L - K) * (1 - h))``, h the activation-cache hit rate: 0 for the
  study's first trial, the measured warm rate after it; full fine-tuning: K = L), a DDP factor
  for several CPU workers, seconds per encoded text (full depth for the zero-shot evaluation,
  top K layers on the cache for the trials), fixed per-trial phases (Ray Train start, data and
  model load, checkpoint writes) and per-study ones (Ray start, the zero-shot evaluation, the
  export of each cell's best model: a model load and a full write). Trials run ``concurrency`` at a time (as
  :func:`study.search.max_concurrent_trials` decides on this machine's CPUs). ASHA may stop
  search trials early: the estimate is the upper bound where every trial runs to the end.
  With a study directory (``--plan --resume DIR``) the trials it finished replace the table's
  numbers with their own ``phase_s/*`` timings (:func:`costs_from_results`), and only what is
  left is added up.
* **Minimum detectable difference** (MDD) per claim: the claim's contrast weights over cells
  (:func:`study.spec.claim_cell_weights`, the verdicts' rule, for every claim shape) and its
  per-run statistic (:func:`study.verdicts.claim_statistic`: one term per dataset and setting
  it combines, added as independent, with a note where that is approximate), the design's seeds per cell and the seed x
  item variance components of earlier runs (:data:`VARIANCE_FILE`, written by
  ``bench/variance_components.py``; from a study directory, its own) go into
  :func:`hybridir.evaluation.significance.design_mdd`. A range over two item terms: 0 (the
  configurations' item effects alike) and the item term of "trained minus untrained" per unit
  weight (a large one); the MDD is not monotone in it (the item term's ~n degrees of freedom
  raise the effective df). A claim's
  ``smallest_effect`` below the MDD is flagged: the design cannot detect it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridir.evaluation.vocabulary import DATASET, MULTI, RANK_DISTANCE, SETTING, SETTINGS
from hybridir.timing import PREFIX as PHASE_PREFIX
from hybridir.train import validation_due
from study.results import read_per_query
from study.spec import CLAIM_MEASURES_BY_KIND, StudyConfigError, StudySpec
from study.vocabulary import (
    CELL,
    COMPLETED,
    MEASURE,
    PHASE,
    PHASES,
    SEEDS,
    SPEC_FILE,
    STATUS,
    TRIAL_ID,
    WALL_TIME,
    ZERO_SHOT,
)

COSTS_DIR = Path(__file__).resolve().parent / "costs"
COST_FILE = COSTS_DIR / "this-machine.json"
VARIANCE_FILE = COSTS_DIR / "variance.json"


# ---------------------------------------------------------------------------- tables
def read_table(path: Path, what: str) -> dict:
    """A JSON table; StudyConfigError naming the file when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise StudyConfigError(f"--plan: no {what} at {path} (bench/plan_costs.py / bench/variance_components.py "
                               "write them)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StudyConfigError(f"--plan: {what} {path} is not valid JSON ({exc})") from None


def _need(table: dict, *keys: str) -> Any:
    """table[k1][k2]...; StudyConfigError naming the missing field."""
    value: Any = table
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise StudyConfigError(f"cost table: missing field {'.'.join(keys[:depth + 1])}")
        value = value[key]
    return value


# ---------------------------------------------------------------------------- cost model
def step_seconds(costs: dict, batch_size: int, train_layers: int | None, num_layers: int, workers: int = 1,
                 hit_rate: float = 0.0) -> float:
    """Seconds per training step (see the module docstring)."""
    fit = _need(costs, "train_step")
    trained = num_layers if train_layers is None else train_layers
    frozen = 0 if train_layers is None else num_layers - train_layers
    seconds = (float(fit["fixed_s"]) + batch_size * (float(fit["per_pair_trained_layer_s"]) * trained
                                                     + float(fit["per_pair_frozen_layer_s"]) * frozen * (1 - hit_rate)))
    if workers > 1:
        seconds *= float(_need(costs, "workers", "ddp_cpu_factor"))
    return max(seconds, 0.0)


def per_text_seconds(costs: dict, train_layers: int | None, num_layers: int, full: bool = False) -> float:
    """Seconds per encoded text: every layer (``full``, or full fine-tuning: no cache), else the
    top K layers on the cached bottom (linear in K through the measured points)."""
    evaluation = _need(costs, "evaluation")
    depth = float(evaluation.get("num_layers") or num_layers)
    if full or train_layers is None:
        return float(evaluation["per_text_full_s"]) * num_layers / depth
    cached = {int(k): float(v) for k, v in _need(costs, "evaluation", "per_text_cached_s").items()}
    if train_layers in cached:
        return cached[train_layers]
    ks = sorted(cached)
    if len(ks) == 1:
        return cached[ks[0]] * train_layers / ks[0]
    low, high = ks[0], ks[-1]
    slope = (cached[high] - cached[low]) / (high - low)
    if slope < 0:  # more layers cannot cost less: measurement noise (a loaded machine); their mean
        return float(np.mean(list(cached.values())))
    return max(cached[low] + slope * (train_layers - low), 0.0)


@dataclass
class TrialCost:
    """Seconds of one trial, by part."""

    parts: dict[str, float]

    @property
    def total(self) -> float:
        return float(sum(self.parts.values()))


def validations(max_steps: int, log_every: int, every: int, validate_every: int | None = None) -> int:
    """How often the loop computes its validation loss: at every log step and every checkpoint
    (the steps it logs) that ``validate_every`` admits (multiples of it and the last step)."""
    return sum(1 for step in range(1, max_steps + 1)
               if (step % log_every == 0 or step % every == 0 or step == max_steps)
               and validation_due(step, max_steps, validate_every))


def trial_cost(costs: dict, *, max_steps: int, batch_size: int, train_layers: int | None, num_layers: int,
               workers: int, every: int, inter_texts: int, final_texts: int, hit_rate: float,
               step_override: float | None = None, log_every: int | None = None,
               validates: bool = True, validate_every: int | None = None) -> TrialCost:
    """One trial to its last step: Ray Train start, loads, steps, checkpoints, validation,
    evaluations. Validation: ``validation_per_pair_s`` x its batches x B per validation when the
    table has it, else ``validation_s`` per checkpoint; none when the trial holds no documents
    out (``validates`` False: data.validation_fraction 0, the loop has no validation batches)."""
    trial = _need(costs, "trial")
    checkpoints = max_steps // every + (1 if max_steps % every else 0)
    if not validates:
        validation = 0.0
    elif trial.get("validation_per_pair_s") is not None:
        validation = (validations(max_steps, log_every or max_steps, every, validate_every)
                      * int(trial.get("validation_batches", 4))
                      * batch_size * float(trial["validation_per_pair_s"]))
    else:
        validation = checkpoints * float(trial.get("validation_s", 0.0))
    evaluations = checkpoints  # one intermediate evaluation per checkpoint (the final step's included)
    step = step_override if step_override is not None else step_seconds(
        costs, batch_size, train_layers, num_layers, workers, hit_rate)
    cached = per_text_seconds(costs, train_layers, num_layers)
    parts = {
        "ray_start": float(trial["ray_start_s"]),
        "load": float(trial["data_load_s"]) + float(trial["model_load_s"]),
        "steps": max_steps * step,
        "checkpoints": checkpoints * (float(trial["checkpoint_write_s"]) + float(trial.get("reporting_s", 0.0))),
        "validation": validation,
        "intermediate_eval": evaluations * inter_texts * cached,
        "final_eval": final_texts * cached,
    }
    if trial.get("other_s"):
        parts["other"] = float(trial["other_s"])
    return TrialCost(parts)


def wall_seconds(study_parts: dict[str, float], trial_seconds: list[float], concurrency: int) -> float:
    """Per-study parts plus the trials, ``concurrency`` at a time (their sum divided: trials of
    similar length, as a study's are)."""
    return float(sum(study_parts.values()) + sum(trial_seconds) / max(1, concurrency))


# ---------------------------------------------------------------------------- evaluation texts
_TEXT_COUNTS: dict[tuple, int] = {}


def count_texts(settings, seed: int = 0) -> int:
    """Distinct texts one evaluation set encodes (queries + candidates, as encode_corpus does)."""
    from hybridir.evaluation import build_evaluator

    groups = settings.article_groups()  # XQuAD-R's held-out articles (held_out_articles), else None
    key = (settings.dataset, tuple(settings.languages or ()), settings.max_queries, seed,
           None if groups is None else tuple(sorted(groups)))
    if key not in _TEXT_COUNTS:
        evaluator = build_evaluator(settings.dataset, languages=settings.languages, max_queries=settings.max_queries,
                                    seed=seed, groups=groups)
        corpus = evaluator.corpus
        queries = {text for items in corpus.queries.values() for text in items.values()}
        candidates = {text for items in corpus.candidates.values() for text in items.values()}
        _TEXT_COUNTS[key] = len(queries) + len(candidates)
    return _TEXT_COUNTS[key]


def _covered(inter, finals) -> bool:
    """Whether the intermediate set's texts are among a final set's (then cached by the zero-shot run)."""
    for final in finals:
        if final.dataset != inter.dataset or final.max_queries is not None:
            continue
        if final.languages is None or set(inter.languages or []) <= set(final.languages) and inter.languages:
            return True
    return False


# ---------------------------------------------------------------------------- claims -> weights
@dataclass
class Term:
    """One part of a claim's contrast: weights over cells on one (dataset, setting, measure)."""

    dataset: str
    setting: str
    measure: str
    weights: dict[int, float]


@dataclass
class PlannedContrast:
    terms: list[Term]
    notes: list[str] = field(default_factory=list)


WeightRule = Callable[[StudySpec, Any], PlannedContrast]
# claim field name -> rule: the first field a claim sets (not None) picks its rule. New claim
# types register theirs with @weight_rule("<field>").
WEIGHT_RULES: dict[str, WeightRule] = {}


def weight_rule(kind: str) -> Callable[[WeightRule], WeightRule]:
    def register(rule: WeightRule) -> WeightRule:
        WEIGHT_RULES[kind] = rule
        return rule
    return register


def claim_kind(claim: Any) -> str:
    for kind in WEIGHT_RULES:
        if getattr(claim, kind, None) is not None:
            return kind
    raise StudyConfigError(f"claim {getattr(claim, 'id', claim)!r}: --plan has no weight rule for its type "
                           f"(known: {sorted(WEIGHT_RULES)}; study/plan.py weight_rule)")


def _cell_label(spec: StudySpec, cell: int) -> str:
    axes = (spec.cells() or [{}])[cell]
    return ", ".join(f"{path}={value}" for path, value in axes.items()) or "the single cell"


def _keyword_notes(spec: StudySpec, claim: Any, weights: dict[int, float]) -> list[str]:
    """A note per keyword selector ("best", ...): chosen from the results, planned with the
    representative cell of each group that :func:`study.spec.claim_cell_weights` stands in with."""
    from study.question import selector_keywords

    keywords = selector_keywords()
    selectors = ([claim.compare.a, claim.compare.b] if claim.compare is not None
                 else [term.cell for term in claim.contrast] if claim.contrast is not None else [])
    notes = []
    for selector in selectors:
        for path, value in selector.items():
            if value in keywords:
                notes.append(f"{path}={value!r} is chosen from the results: planned with one representative cell "
                             f"per group, equal weights (cells {', '.join(map(str, sorted(weights)))})")
                break
    return notes


def _statistic_terms(claim: Any, weights: dict[int, float]) -> PlannedContrast:
    """The claim's per-run statistic (:func:`study.verdicts.claim_statistic`) over the cell
    weights: one term per (dataset, setting) it combines, each with the components of its own
    table row; the terms are added as independent (notes say where that is approximate)."""
    from study.verdicts import claim_statistic

    statistic = claim_statistic(claim)
    terms = [Term(dataset, setting, statistic.measure, {c: sign * share * w for c, w in weights.items()})
             for dataset, sign in statistic.datasets.items() for setting, share in statistic.metrics.items()]
    notes = []
    if len(statistic.datasets) > 1:
        first, second = statistic.datasets
        notes.append(f"minus_dataset: variance = {first} terms + {second} terms (item terms: different questions, "
                     f"independent); seed term: the within-run difference, with components stored per dataset "
                     f"only planned as the independent sum: approximate, conservative when the two datasets' "
                     f"seed effects correlate positively")
    if len(statistic.metrics) > 1:
        combination = " ".join(f"{w:+g} {s}" for s, w in statistic.metrics.items())
        notes.append(f"metric_weights ({combination}): the settings' components combined as independent; their "
                     f"correlation within a run (same model, same questions) is ignored: approximate")
    if statistic.worst_of is not None:
        notes.append(f"approximate: per-language components not stored; worst_language "
                     f"{list(statistic.worst_of)} planned with the overall components of each dataset and setting "
                     f"(one language's items are fewer and the minimum is not a linear contrast)")
    return PlannedContrast(terms, notes)


def _cell_weights(spec: StudySpec, claim: Any) -> PlannedContrast:
    """The one rule: :func:`study.spec.claim_cell_weights` (what the verdicts weight the cells
    with), then the claim's statistic over them."""
    from study.spec import claim_cell_weights

    from study.question import selector_keywords

    # A keyword side stands in with one cell per group, other than the cells the claim's other
    # sides take (both sides "best" / "recommended" would otherwise pick the same cell and cancel).
    keywords = selector_keywords()
    selectors = ([claim.compare.a, claim.compare.b] if claim.compare is not None
                 else [term.cell for term in claim.contrast] if claim.contrast is not None else [])
    taken: set[int] = set()
    for selector in selectors:
        if not any(value in keywords for value in selector.values()):
            taken |= set(spec._matching_cells(selector))

    def representative(keyword: str, path: str, members: list[int]) -> list[int]:
        chosen = next((cell for cell in members if cell not in taken), members[0])
        taken.add(chosen)
        return [chosen]

    try:
        weights = claim_cell_weights(spec, claim, pick=representative)
    except ValueError as exc:
        raise StudyConfigError(str(exc)) from None
    planned = _statistic_terms(claim, weights)
    planned.notes[:0] = _keyword_notes(spec, claim, weights)
    return planned


for _kind in ("compare", "slope", "contrast"):  # the claim shapes claim_cell_weights covers
    weight_rule(_kind)(_cell_weights)


# ---------------------------------------------------------------------------- variance components
def _claim_runs(spec: StudySpec, trials: pd.DataFrame) -> dict[int, list[str]]:
    """cell -> trial ids of the runs that share the cell's configuration (>= 1)."""
    if trials.empty:
        return {}
    done = trials[trials[STATUS] == COMPLETED]
    out: dict[int, list[str]] = {}
    for cell, group in done.groupby(CELL, sort=True):
        rows = group[group[PHASE].isin(list(PHASES))] if not spec.tune else group[group[PHASE] == SEEDS]
        if len(rows):
            out[int(cell)] = list(rows[TRIAL_ID])
    return out


def read_trials(study_dir: Path) -> pd.DataFrame:
    """results/trials.jsonl of a study directory (last row per trial), without writing anything."""
    path = Path(study_dir) / "results" / "trials.jsonl"
    if not path.is_file():
        return pd.DataFrame()
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    frame = pd.DataFrame(rows)
    return frame.drop_duplicates(subset=[TRIAL_ID], keep="last").reset_index(drop=True) if len(frame) else frame


def variance_components_of_run(run_dir: Path) -> dict:
    """Seed x item variance components of a study directory's stored per-query results, per
    final dataset, setting and measure (bench/variance_components.py writes them)."""
    from hybridir.evaluation.seed_item_variance import cell_anova, contrast_variance
    from hybridir.evaluation.significance import item_matrices
    from study.spec import load_study

    run_dir = Path(run_dir)
    spec = load_study(run_dir / SPEC_FILE)
    per_query_dir = run_dir / "results" / "per_query"
    runs = {cell: ids for cell, ids in _claim_runs(spec, read_trials(run_dir)).items() if len(ids) >= 2}
    if not runs:
        raise StudyConfigError(f"{run_dir}: no cell has >= 2 finished runs of one configuration with per-query "
                               "results (seed variance needs 2 seeds)")
    frames = {cell: {tid: read_per_query(per_query_dir / f"{tid}.parquet") for tid in ids
                     if (per_query_dir / f"{tid}.parquet").is_file()} for cell, ids in runs.items()}
    frames = {cell: f for cell, f in frames.items() if len(f) >= 2}
    zero_path = per_query_dir / f"{ZERO_SHOT}.parquet"
    zero = read_per_query(zero_path) if zero_path.is_file() else None
    components = []
    for final in spec.evaluation.final:
        for setting in SETTINGS:
            for measure in CLAIM_MEASURES_BY_KIND["lareqa"]:
                if measure == RANK_DISTANCE and setting != MULTI:
                    continue
                entry = _components(frames, zero, final.dataset, setting, measure, cell_anova, contrast_variance,
                                    item_matrices)
                if entry is not None:
                    components.append({DATASET: final.dataset, "languages": final.languages,
                                       "max_queries": final.max_queries, SETTING: setting, MEASURE: measure,
                                       **entry})
    return {"meta": {"what": "seed x item variance components for study/run.py --plan (study/plan.py)",
                     "run": str(run_dir), "study": spec.name,
                     "cells": {str(c): sorted(f) for c, f in frames.items()},
                     "model": spec.base_config.model.name, "train_layers": spec.base_config.model.train_layers,
                     "max_steps": spec.base_config.max_steps},
            "components": components}


def _components(frames, zero, dataset, setting, measure, cell_anova, contrast_variance, item_matrices) -> dict | None:
    seed_ss = seed_df = resid_ss = resid_df = item_ss = item_df = 0.0
    item_units, n_items, n_seeds = [], None, 0
    for cell, runs in frames.items():
        rows = {tid: f[f[DATASET] == dataset] for tid, f in runs.items()}
        if any(r.empty or measure not in r.columns or r[measure].isna().all() for r in rows.values()):
            return None
        try:
            matrices, _, shared, _ = item_matrices({CELL: rows}, setting, measure)
        except ValueError:
            return None
        anova = cell_anova(matrices[CELL])
        seed_ss += anova.seed_df * anova.seed_variance
        seed_df += anova.seed_df
        resid_ss += anova.resid_df * anova.ms_resid
        resid_df += anova.resid_df
        item_ss += (anova.n_items - 1) * anova.ms_item
        item_df += anova.n_items - 1
        n_items = anova.n_items if n_items is None else min(n_items, anova.n_items)
        n_seeds += anova.n_seeds
        if zero is not None:
            zrows = zero[zero[DATASET] == dataset]
            try:
                both, _, _, _ = item_matrices({"trained": rows, "untrained": {0: zrows}}, setting, measure)
                cv = contrast_variance(both, {"trained": 1.0, "untrained": -1.0}, pool_seeds=True)
                item_units.append(cv.item_part / 2)  # sum(w^2) = 2
            except ValueError:
                pass
    return {"n_seeds": n_seeds, "seed_df": int(seed_df), "n_items": int(n_items),
            "seed_sd": float(math.sqrt(seed_ss / seed_df)), "ms_item": float(item_ss / item_df),
            "ms_resid": float(resid_ss / resid_df) if resid_df else None,
            "item_var_unit": float(np.mean(item_units)) if item_units else None}


def _lookup(variance: dict, dataset: str, setting: str, measure: str) -> dict | None:
    for entry in variance.get("components", []):
        if (entry.get(DATASET), entry.get(SETTING), entry.get(MEASURE)) == (dataset, setting, measure):
            return entry
    return None


# ---------------------------------------------------------------------------- the plan
@dataclass
class ClaimPlan:
    id: str
    kind: str
    cells: str
    seeds: int
    mdd_low: float | None
    mdd_high: float | None
    smallest_effect: float | None
    verdict: str  # what the design can do for this claim
    notes: list[str]
    mdd_item0: float | None = None  # item term 0
    mdd_item: float | None = None  # item term of trained minus untrained per unit weight


def design_seeds(spec: StudySpec) -> int:
    """Runs per cell a claim compares: seed re-runs, plus the search trial when nothing is tuned."""
    if not spec.tune:
        return spec.search.samples_per_cell + spec.search.seeds
    return spec.search.seeds if spec.search.seeds else 1


def claim_mdd(spec: StudySpec, claim: Any, variance: dict, seeds: int) -> ClaimPlan:
    """The design's MDD of one claim: the range between item term 0 and the item term per unit weight."""
    from hybridir.evaluation.seed_item_variance import design_standard_error
    from hybridir.evaluation.significance import minimum_detectable_difference

    smallest = getattr(claim, "smallest_effect", None)
    kind = claim_kind(claim)
    if getattr(claim, "untestable", None):
        return ClaimPlan(claim.id, kind, "", seeds, None, None, smallest, f"untestable: {claim.untestable}", [])
    planned = WEIGHT_RULES[kind](spec, claim)
    notes = list(planned.notes)
    cells = "; ".join(" ".join(f"{w:+.3g} cell {c}" for c, w in t.weights.items()) for t in planned.terms)
    if seeds < 2:
        return ClaimPlan(claim.id, kind, cells, seeds, None, None, smallest,
                         "cannot be called: 1 run per cell (seed-to-seed variance unknown)", notes)
    finals = {f.dataset: f for f in spec.evaluation.final}
    bounds = []
    for with_items in (False, True):
        variance_sum, dfs = 0.0, []
        for term in planned.terms:
            entry = _lookup(variance, term.dataset, term.setting, term.measure)
            if entry is None:
                return ClaimPlan(claim.id, kind, cells, seeds, None, None, smallest,
                                 f"MDD unknown: no variance components for {term.dataset} {term.setting} "
                                 f"{term.measure} in the table", notes)
            unit = entry.get("item_var_unit") if with_items else 0.0
            if unit is None:
                bounds.append(None)
                break
            item_se = math.sqrt(unit * sum(w * w for w in term.weights.values()))
            se, df = design_standard_error(term.weights, seeds, entry["seed_sd"], item_se, entry.get("n_items"))
            variance_sum += se * se
            dfs.append(df)
            if not with_items:
                final = finals.get(term.dataset)
                if final is not None and (final.languages != entry.get("languages")
                                          or final.max_queries != entry.get("max_queries")):
                    notes.append(f"components of {term.dataset} measured on languages "
                                 f"{entry.get('languages') or 'all'} ({entry.get('n_items')} items); this study "
                                 f"evaluates {final.languages or 'all'}")
                if getattr(claim, "involving", None):
                    notes.append(f"involving {claim.involving}: components are of all language pairs")
        else:
            bounds.append(minimum_detectable_difference(math.sqrt(variance_sum), df=min(dfs)))
    notes = list(dict.fromkeys(notes))  # one per term otherwise
    # Not monotone in the item term: its ~n degrees of freedom raise the effective df, so the
    # t quantile can fall by more than the SE grows (few seeds). Report the range.
    no_item, with_item = bounds[0], bounds[1] if len(bounds) > 1 else None
    low = no_item if with_item is None else min(no_item, with_item)
    high = None if with_item is None else max(no_item, with_item)
    if smallest is None:
        verdict = "no smallest_effect named"
    elif smallest < low:
        verdict = f"CANNOT detect smallest_effect {smallest:g} < MDD {low:.3g}"
    elif high is not None and smallest < high:
        verdict = f"may miss smallest_effect {smallest:g} (between the MDD bounds)"
    else:
        verdict = f"detects smallest_effect {smallest:g}"
    margin = getattr(claim, "margin", None)
    if getattr(claim, "direction", None) == "equivalent" and margin is not None and margin < low:
        verdict += f"; equivalence margin {margin:g} < MDD {low:.3g}: equivalence cannot be shown"
    return ClaimPlan(claim.id, kind, cells, seeds, low, high, smallest, verdict, notes, no_item, with_item)


@dataclass
class Plan:
    spec: StudySpec
    cells: list[dict]
    search_trials: int
    seed_trials: int
    seeds_per_cell: int
    concurrency: int
    study_parts: dict[str, float] | None
    trials: list[tuple[str, int, TrialCost]]  # (phase, cell, cost) of every planned trial
    done_trial_ids: set[str]
    wall_s: float | None
    remaining_s: float | None
    claims: list[ClaimPlan]
    notes: list[str]
    cost_source: str
    variance_source: str
    texts: dict[str, int]


def _num_layers(model_config) -> int:
    from hybridir.model import model_depth

    return model_depth(model_config)


def costs_from_results(costs: dict, spec: StudySpec, trials: pd.DataFrame, final_texts: int,
                       inter_texts: int) -> tuple[dict, dict[int, float], list[str]]:
    """The cost table with a study's own finished trials' ``phase_s/*`` in place of the bench's
    (medians over the trials), and the observed seconds per step of each cell."""
    notes: list[str] = []
    if trials.empty or PHASE_PREFIX + "steps" not in trials.columns:
        return costs, {}, notes
    done = trials[(trials[STATUS] == COMPLETED) & trials[PHASE_PREFIX + "steps"].notna()]
    if done.empty:
        return costs, {}, notes
    costs = json.loads(json.dumps(costs))
    every = spec.evaluation.intermediate.every

    def median(column: str) -> float | None:
        column = PHASE_PREFIX + column
        return float(done[column].median()) if column in done and done[column].notna().any() else None

    trial = costs.setdefault("trial", {})
    for name, key in (("ray_start", "ray_start_s"), ("data_load", "data_load_s"), ("model_load", "model_load_s")):
        value = median(name)
        if value is not None:
            trial[key] = value
    step_column = next((c for c in ("train/step", "study_step") if c in done), None)
    if step_column is None:
        return costs, {}, notes
    steps_per_trial = done[step_column]
    checkpoints = np.ceil(steps_per_trial.astype(float) / every)
    for name, key in (("checkpoint_write", "checkpoint_write_s"), ("reporting", "reporting_s")):
        column = PHASE_PREFIX + name
        if column in done:
            trial[key] = float((done[column].fillna(0.0) / checkpoints).median())
    if PHASE_PREFIX + "validation" in done:
        config = spec.base_config
        count = (validations(config.max_steps, config.log_every, every, config.validate_every)
                 * int(trial.get("validation_batches", 4)))
        trial["validation_per_pair_s"] = float(done[PHASE_PREFIX + "validation"].fillna(0.0).median()
                                               / (count * config.batching.batch_size))
    per_step = done[PHASE_PREFIX + "steps"] / steps_per_trial.astype(float)
    observed = {int(c): float(v) for c, v in per_step.groupby(done[CELL]).median().items()}
    layers = spec.base_config.model.train_layers
    if PHASE_PREFIX + "final_eval" in done and final_texts and layers is not None:
        rate = float((done[PHASE_PREFIX + "final_eval"] / final_texts).median())
        costs.setdefault("evaluation", {}).setdefault("per_text_cached_s", {})[str(layers)] = rate
    phase_columns = [c for c in done.columns if c.startswith(PHASE_PREFIX)]
    if WALL_TIME in done:
        other = done[WALL_TIME] - done[phase_columns].fillna(0.0).sum(axis=1)
        trial["other_s"] = float(max(other.median(), 0.0))
    notes.append(f"costs: {len(done)} finished trial(s) of this study replace the table's per-trial phases, "
                 f"seconds per step (per cell) and per text")
    return costs, observed, notes


def build_plan(spec: StudySpec, costs: dict | None = None, variance: dict | None = None,
               study_dir: Path | None = None, cpus: int | None = None) -> Plan:
    """The plan of a validated study (see the module docstring); no Ray, no training."""
    notes: list[str] = []
    root = Path(__file__).resolve().parent.parent
    cost_source = str(COST_FILE.relative_to(root)) if costs is None else "given"
    variance_source = str(VARIANCE_FILE.relative_to(root)) if variance is None else "given"
    costs = read_table(COST_FILE, "cost table") if costs is None else costs
    variance = read_table(VARIANCE_FILE, "variance-component table") if variance is None else variance
    cost_source += f" (measured {costs.get('meta', {}).get('date', '?')}, load average " \
                   f"{costs.get('meta', {}).get('load_average_before', '?')})"
    variance_source += f" (from {variance.get('meta', {}).get('run', '?')})"
    cells = spec.cells() or [{}]
    n_cells = len(cells)
    search_trials = n_cells * spec.search.samples_per_cell
    seed_trials = n_cells * spec.search.seeds
    seeds = design_seeds(spec)
    trials = read_trials(study_dir) if study_dir is not None else pd.DataFrame()

    inter = spec.evaluation.intermediate
    texts = {"intermediate": count_texts(inter, seed=spec.search.seed),
             "final": sum(count_texts(f) for f in spec.evaluation.final)}
    if study_dir is not None:
        costs, observed, more = costs_from_results(costs, spec, trials, texts["final"], texts["intermediate"])
        notes += more
        try:
            own = variance_components_of_run(study_dir)
            keys = {(e[DATASET], e[SETTING], e[MEASURE]) for e in own["components"]}
            variance = {"meta": own["meta"], "components": own["components"] + [
                e for e in variance.get("components", []) if (e[DATASET], e[SETTING], e[MEASURE]) not in keys]}
            variance_source = f"{study_dir} (its own results; the shipped table for the rest)"
        except StudyConfigError as exc:
            notes.append(f"variance components: shipped table ({exc})")
    else:
        observed = {}

    resources = spec.resources
    cpus = cpus or os.cpu_count() or 1
    if resources.max_concurrent_trials:
        concurrency = resources.max_concurrent_trials
    elif resources.use_gpu:
        concurrency = 1
    else:
        concurrency = max(1, int(cpus // (resources.num_workers * resources.cpus_per_worker)))

    planned: list[tuple[str, int, TrialCost]] = []
    study_parts: dict[str, float] | None = None
    wall = remaining = None
    if resources.use_gpu:
        notes.append("resources.use_gpu: the cost table holds CPU costs of this machine only; no wall estimate")
    else:
        hit = float(costs.get("train_step", {}).get("warm_hit_rate", 0.0))
        # Observed cells calibrate the others: the median ratio observed / table.
        depth_of: dict[int, int] = {}
        configs = {}
        for index, axes in enumerate(cells):
            config = spec.train_config(axes)
            configs[index] = config
            depth_of[index] = _num_layers(config.model)
        ratio = 1.0
        if observed:
            ratios = [observed[c] / step_seconds(costs, configs[c].batching.batch_size, configs[c].model.train_layers,
                                                 depth_of[c], resources.num_workers, hit) for c in observed]
            ratio = float(np.median(ratios))
            notes.append(f"seconds per step: {len(observed)} cell(s) observed; the others scaled by the observed / "
                         f"table ratio {ratio:.2f}")
        first = True
        for phase, per_cell in (("search", spec.search.samples_per_cell), ("seeds", spec.search.seeds)):
            for index in range(n_cells):
                config = configs[index]
                for _ in range(per_cell):
                    step = observed.get(index)
                    if step is None:
                        step = ratio * step_seconds(costs, config.batching.batch_size, config.model.train_layers,
                                                    depth_of[index], resources.num_workers, 0.0 if first else hit)
                    planned.append((phase, index, trial_cost(
                        costs, max_steps=config.max_steps, batch_size=config.batching.batch_size,
                        train_layers=config.model.train_layers, num_layers=depth_of[index],
                        workers=resources.num_workers, every=inter.every, inter_texts=texts["intermediate"],
                        final_texts=texts["final"], hit_rate=0.0 if first else hit, step_override=step,
                        log_every=config.log_every, validates=config.data.validation_fraction > 0,
                        validate_every=config.validate_every)))
                    first = False
        base = spec.base_config.model
        depth = _num_layers(base)
        study_parts = {"ray_init": float((costs.get("study") or {}).get("ray_init_s") or 0.0),
                       "zero_shot": texts["final"] * per_text_seconds(costs, base.train_layers, depth, full=True)}
        if not _covered(inter, spec.evaluation.final) and base.train_layers is not None:
            study_parts["intermediate_cold"] = texts["intermediate"] * (
                per_text_seconds(costs, base.train_layers, depth, full=True)
                - per_text_seconds(costs, base.train_layers, depth))
        if resources.export_models:
            # Per cell: load the best trial's model (as a trial's model load) and write it whole.
            study_parts["export"] = n_cells * (float(_need(costs, "export", "per_model_s"))
                                               + float(_need(costs, "trial", "model_load_s")))
        if not (costs.get("study") or {}).get("ray_init_s"):
            notes.append("Ray start not in the cost table (bench/plan_costs.py --no-ray): counted as 0")
        wall = wall_seconds(study_parts, [c.total for _, _, c in planned], concurrency)
        if spec.search.asha and spec.search.samples_per_cell > 1:
            notes.append("ASHA may stop search trials early: the estimate is the upper bound (every trial to its end)")
        if resources.num_workers > 1:
            notes.append(f"{resources.num_workers} DDP workers per trial on CPU: seconds per step x the table's DDP "
                         f"factor {float(_need(costs, 'workers', 'ddp_cpu_factor')):.2f} (measured for 2 workers on 2 cores)")
    done_ids: set[str] = set()
    if len(trials):
        done_ids = set(trials[trials[STATUS] == COMPLETED][TRIAL_ID])
    if wall is not None:
        remaining = wall
        if done_ids:
            done_phases = trials[trials[STATUS] == COMPLETED][PHASE].value_counts().to_dict()
            left = []
            for phase in ("search", "seeds"):
                of_phase = [c.total for p, _, c in planned if p == phase]
                n_done = int(done_phases.get(phase, 0))
                left += of_phase[n_done:]
            zero_done = (Path(study_dir) / "results" / "zero_shot.json").is_file()
            remaining_parts = {k: v for k, v in study_parts.items() if not (zero_done and k == "zero_shot")}
            remaining = wall_seconds(remaining_parts, left, concurrency)
    claims = [claim_mdd(spec, claim, variance, seeds) for claim in spec.claims]
    return Plan(spec, cells, search_trials, seed_trials, seeds, concurrency, study_parts, planned, done_ids, wall,
                remaining, claims, notes, cost_source, variance_source, texts)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def format_plan(plan: Plan, source: str = "") -> str:
    spec = plan.spec
    lines = [f"plan of study {spec.name!r}{f' ({source})' if source else ''}"
             f"{f', profile {spec.profile!r}' if spec.profile else ''}: no Ray started, nothing trained"]
    axes = ", ".join(f"{path} = {' / '.join(map(str, values))}" for path, values in spec.axes.items()) or "no axes"
    lines.append(f"cells: {len(plan.cells)} ({axes})")
    for index, axes_values in enumerate(plan.cells):
        config = spec.train_config(axes_values)
        layers = config.model.train_layers
        lines.append(f"  cell {index}: {_cell_label(spec, index)}: {config.max_steps} steps x batch "
                     f"{config.batching.batch_size}, {config.model.name}, "
                     f"{'all layers' if layers is None else f'top {layers} layers'} trained")
    seeds_text = (f"{spec.search.samples_per_cell} search trial(s) + {spec.search.seeds} seed re-run(s) per cell")
    lines.append(f"trials: {plan.search_trials + plan.seed_trials} = {len(plan.cells)} cells x ({seeds_text}); "
                 f"runs per cell for the claims: {plan.seeds_per_cell}"
                 + ("" if spec.tune else " (nothing tuned: the search trial counts as a seed)"))
    if plan.done_trial_ids:
        lines.append(f"finished already: {len(plan.done_trial_ids)} trial(s)")
    lines.append(f"evaluation texts: intermediate {plan.texts['intermediate']} every "
                 f"{spec.evaluation.intermediate.every} steps; final {plan.texts['final']}")
    if plan.wall_s is None:
        lines.append("estimated wall time: not available (see notes)")
    else:
        lines.append(f"estimated wall time on this machine: {_minutes(plan.wall_s)}"
                     + (f"; left: {_minutes(plan.remaining_s)}" if plan.done_trial_ids else ""))
        study = ", ".join(f"{k} {v:.0f} s" for k, v in plan.study_parts.items())
        lines.append(f"  per study: {study}")
        by_cell: dict[int, list[TrialCost]] = {}
        for _, cell, cost in plan.trials:
            by_cell.setdefault(cell, []).append(cost)
        first = plan.trials[0][2] if plan.trials else None
        if first is not None:
            lines.append(f"  first trial (cold activation cache): {first.total:.0f} s")
        shown = list(by_cell.items())
        if len(shown) > 12:
            shown = shown[:6] + [(None, None)] + shown[-3:]
        for cell, costs in shown:
            if cell is None:
                lines.append(f"  ... ({len(by_cell) - 9} more cells)")
                continue
            cost = costs[-1]
            parts = ", ".join(f"{k} {v:.0f}" for k, v in cost.parts.items())
            lines.append(f"  cell {cell}: {len(costs)} trial(s) of {cost.total:.0f} s ({parts})")
        lines.append(f"  {plan.concurrency} trial(s) at a time; cost table: {plan.cost_source}; load average "
                     f"now {' '.join(f'{v:.2f}' for v in os.getloadavg())} (the estimate scales with the load)")
    if plan.claims:
        lines.append(f"claims: minimum detectable difference (80% power, two-sided 0.05, {plan.seeds_per_cell} "
                     f"runs per cell; the range between item term 0 and the item term of trained minus "
                     f"untrained); "
                     f"variance components: {plan.variance_source}")
        for claim in plan.claims:
            if claim.mdd_low is None:
                mdd = "-"
            elif claim.mdd_high is None:
                mdd = f"{claim.mdd_low:.4g} (upper unknown)"
            else:
                mdd = f"{claim.mdd_low:.4g} .. {claim.mdd_high:.4g}"
            lines.append(f"  {claim.id} [{claim.kind}] MDD {mdd}: {claim.verdict}")
            if claim.cells:
                lines.append(f"      contrast: {claim.cells}")
            for note in claim.notes:
                lines.append(f"      note: {note}")
    else:
        lines.append("claims: none")
    for note in plan.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def plan_command(spec: StudySpec, study_dir: Path | None = None, source: str = "") -> str:
    """What ``study/run.py --plan`` prints."""
    return format_plan(build_plan(spec, study_dir=study_dir), source)
