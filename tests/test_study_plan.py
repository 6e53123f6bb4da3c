"""``study/run.py --plan`` (study/plan.py): trial counts, the wall-time arithmetic on a synthetic
cost table, the claims' minimum detectable differences against ``design_mdd`` on the shipped
variance components, and clear errors. No Ray, no training."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from hybridir.evaluation.significance import design_mdd, slope_weights
from study import plan as planning
from study.spec import Claim, StudyConfigError, load_study

COSTS = {
    "meta": {"date": "synthetic", "load_average_before": [0.0, 0.0, 0.0]},
    "train_step": {"fixed_s": 0.1, "per_pair_trained_layer_s": 0.01, "per_pair_frozen_layer_s": 0.002,
                   "warm_hit_rate": 0.5},
    "trial": {"ray_start_s": 10.0, "data_load_s": 2.0, "model_load_s": 3.0, "checkpoint_write_s": 1.0,
              "validation_s": 0.5, "validation_per_pair_s": 0.001, "validation_batches": 4},
    "evaluation": {"per_text_full_s": 0.01, "per_text_cached_s": {"2": 0.002, "4": 0.004}, "num_layers": 12},
    "export": {"per_model_s": 5.0},
    "study": {"ray_init_s": 8.0},
    "workers": {"ddp_cpu_factor": 1.5},
}


@pytest.fixture(scope="module")
def variance():
    return planning.read_table(planning.VARIANCE_FILE, "variance-component table")


@pytest.fixture(scope="module")
def default_plan(variance):
    return planning.build_plan(load_study("default"), costs=COSTS, variance=variance, cpus=2)


def test_default_plan_counts_every_trial(default_plan):
    spec = default_plan.spec
    assert (default_plan.search_trials, default_plan.seed_trials) == (3, 9)
    assert default_plan.seeds_per_cell == 4  # nothing tuned: the search trial + 3 re-runs
    assert len(default_plan.trials) == 12 and {cell for _, cell, _ in default_plan.trials} == {0, 1, 2}
    text = planning.format_plan(default_plan)
    assert "trials: 12 = 3 cells x (1 search trial(s) + 3 seed re-run(s) per cell)" in text
    assert "no Ray started" in text and len(spec.claims) == text.count("[compare] MDD")


def test_step_and_text_costs_follow_the_table():
    # c + B * (a K + b (L - K) (1 - h))
    assert planning.step_seconds(COSTS, 16, 2, 12) == pytest.approx(0.1 + 16 * (0.01 * 2 + 0.002 * 10))
    assert planning.step_seconds(COSTS, 16, 2, 12, hit_rate=0.5) == pytest.approx(0.1 + 16 * (0.02 + 0.01))
    assert planning.step_seconds(COSTS, 32, None, 6) == pytest.approx(0.1 + 32 * 0.01 * 6)  # full fine-tuning
    assert planning.step_seconds(COSTS, 16, 2, 12, workers=2) == pytest.approx(1.5 * 0.74)
    assert planning.per_text_seconds(COSTS, 3, 12) == pytest.approx(0.003)  # between the measured K
    assert planning.per_text_seconds(COSTS, 2, 6, full=True) == pytest.approx(0.005)  # depth-scaled
    assert planning.per_text_seconds(COSTS, None, 12) == pytest.approx(0.01)


def test_default_wall_time_is_the_tables_arithmetic(default_plan):
    texts = default_plan.texts
    assert texts["intermediate"] > 0 and texts["final"] > texts["intermediate"]

    def trial(hit):
        step = 0.1 + 16 * (0.01 * 2 + 0.002 * 10 * (1 - hit))
        # validation: step 40 only (validate_every 40; log_every 10 would give 10, 20, 30, 40)
        return ((10 + 2 + 3) + 40 * step + 1 * 1.0 + 1 * 4 * 16 * 0.001 + 1 * texts["intermediate"] * 0.002
                + texts["final"] * 0.002)

    study = 8.0 + texts["final"] * 0.01 + 3 * (5.0 + 3.0)  # export per cell: model load + write
    expected = study + trial(0.0) + 11 * trial(0.5)  # one trial at a time on 2 cores (1 worker x 2 CPUs)
    assert default_plan.concurrency == 1
    assert default_plan.trials[0][2].total == pytest.approx(trial(0.0))
    assert default_plan.wall_s == pytest.approx(expected)
    assert f"{expected / 60:.1f} min" in planning.format_plan(default_plan)
    assert planning.wall_seconds({"x": 10.0}, [30.0, 30.0, 40.0], 2) == pytest.approx(60.0)
    assert planning.validations(40, 10, 40) == 4 and planning.validations(45, 10, 20) == 5  # 10 20 30 40 45
    assert planning.validations(40, 10, 40, validate_every=40) == 1  # the default study: the last step only
    assert planning.validations(45, 10, 20, validate_every=20) == 3  # 20 40 45


def test_mdd_is_design_mdd_on_the_stored_components(default_plan, variance):
    spec = default_plan.spec
    for claim, planned in zip(spec.claims, default_plan.claims):
        entry = planning._lookup(variance, claim.dataset, claim.setting, claim.measure)
        weights = {"a": 1.0, "b": -1.0}
        no_item = design_mdd(weights, 4, entry["seed_sd"], 0.0, entry["n_items"])
        item_se = math.sqrt(entry["item_var_unit"] * 2)
        with_item = design_mdd(weights, 4, entry["seed_sd"], item_se, entry["n_items"])
        assert (planned.mdd_item0, planned.mdd_item) == pytest.approx((no_item, with_item))
        assert (planned.mdd_low, planned.mdd_high) == pytest.approx(tuple(sorted((no_item, with_item))))
        assert planned.mdd_low > 0


def test_shipped_components_name_their_run(variance):
    """Each dataset's components name the run they were measured on: XQuAD-R from the 8-seed
    A/A run, MLQA-R added from the paper study's local run (bench/variance_components.py --add)."""
    sources = {d: s["run"] for s in variance["meta"]["sources"] for d in s["datasets"]}
    assert sources["xquad-r"].endswith("aa-hybrid-8seeds") and sources["mlqa-r"].endswith("paper-local-2026-12-07")
    cross = planning._lookup(variance, "xquad-r", "cross", "ap")
    assert cross["n_seeds"] == 8 and cross["n_items"] == 1190 and 0 < cross["seed_sd"] < 0.01
    mlqa = planning._lookup(variance, "mlqa-r", "multi", "ap")
    assert mlqa["n_seeds"] >= 4 and 0 < mlqa["seed_sd"] < 0.01


def _with_smallest_effect(claim: Claim, value: float) -> Claim:
    return Claim.model_validate({**claim.model_dump(by_alias=True), "smallest_effect": value})


def test_a_smallest_effect_below_the_mdd_is_flagged(variance):
    spec = load_study("default")
    claim = spec.claims[0]
    low = planning.claim_mdd(spec, claim, variance, 4).mdd_low
    small = planning.claim_mdd(spec, _with_smallest_effect(claim, low / 2), variance, 4)
    assert small.verdict.startswith("CANNOT detect smallest_effect")
    big = planning.claim_mdd(spec, _with_smallest_effect(claim, 1.0), variance, 4)
    assert big.verdict.startswith("detects")


def test_one_seed_per_cell_cannot_be_called(variance):
    plan = planning.build_plan(load_study("default", ["search.seeds=0"]), costs=COSTS, variance=variance, cpus=2)
    assert plan.seeds_per_cell == 1 and len(plan.trials) == 3
    assert all(c.mdd_low is None and c.verdict.startswith("cannot be called") for c in plan.claims)


def test_slope_weights_are_the_verdicts_ols_weights(variance):
    spec = load_study("languages", profile="local")
    claim = next(c for c in spec.claims if c.slope is not None and not c.untestable)
    contrast = planning.WEIGHT_RULES["slope"](spec, claim)
    cells = spec.cells()
    xs = {c: float(cells[c][claim.slope.axis]) for c in contrast.terms[0].weights}
    assert all(x >= claim.slope.from_ for x in xs.values())
    expected = slope_weights({x: x for x in sorted(set(xs.values()))})
    assert contrast.terms[0].weights == pytest.approx({c: expected[x] for c, x in xs.items()})


def test_keyword_selectors_plan_a_representative_cell_and_say_so(variance):
    spec = load_study("batch")
    claim = next(claim for claim in spec.claims if claim.id == "recommended-batch-within-margin-xquad")
    contrast = planning.WEIGHT_RULES["compare"](spec, claim)
    weights = contrast.terms[0].weights
    assert sum(w > 0 for w in weights.values()) == sum(w < 0 for w in weights.values()) == 4
    assert any("chosen from the results" in note for note in contrast.notes)


def test_an_unknown_claim_type_is_named():
    with pytest.raises(StudyConfigError, match="no weight rule"):
        planning.claim_kind(SimpleNamespace(id="odd", compare=None, slope=None))


def test_a_studys_own_trials_replace_the_table(tmp_path, variance):
    spec = load_study("default")
    results = tmp_path / "results"
    results.mkdir()
    rows = [{"trial_id": f"t{i}", "status": "completed", "phase": "search", "cell": i, "train/step": 40,
             "phase_s/steps": 40 * 2.0, "phase_s/ray_start": 20.0, "phase_s/data_load": 1.0,
             "phase_s/model_load": 1.0, "phase_s/checkpoint_write": 2.0, "phase_s/final_eval": 50.0,
             "wall_time_s": 200.0} for i in range(2)]
    (results / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = planning.build_plan(spec, costs=COSTS, variance=variance, study_dir=tmp_path, cpus=2)
    assert plan.done_trial_ids == {"t0", "t1"}
    cell0 = next(cost for _, cell, cost in plan.trials if cell == 0)
    assert cell0.parts["steps"] == pytest.approx(80.0) and cell0.parts["ray_start"] == pytest.approx(20.0)
    assert cell0.parts["final_eval"] == pytest.approx(50.0)
    assert cell0.parts["other"] == pytest.approx(200.0 - (80 + 20 + 1 + 1 + 2 + 50))
    assert plan.remaining_s < plan.wall_s
    assert any("finished trial(s) of this study" in note for note in plan.notes)


def test_cli_plan_and_clear_errors(capsys):
    from study.run import main

    assert main(["--study", "default", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "trials: 12" in out and "estimated wall time on this machine" in out and "hybrid-beats-xx-cross" in out
    assert main(["--study", "no-such-study", "--plan"]) == 2
    assert "unknown study 'no-such-study'" in capsys.readouterr().err
    assert main(["--study", "default", "--profile", "nope", "--plan"]) == 2
    assert "--profile 'nope'" in capsys.readouterr().err



def test_cli_plan_names_an_unreachable_data_file_without_a_traceback(capsys, monkeypatch):
    """A data file the plan needs (to count evaluation texts) that cannot be read or
    downloaded is one error line naming it, exit 2: no traceback."""
    from hybridir.data.files import DataFileError
    from study.run import main

    def unreachable(*args, **kwargs):
        raise DataFileError("google-research-datasets/lareqa@9bc8c7f:xquad-r/en.json: cannot download (offline)")

    monkeypatch.setattr("hybridir.evaluation.build_evaluator", unreachable)  # study.plan imports it from there
    monkeypatch.setattr(planning, "_TEXT_COUNTS", {})  # counts of earlier tests would skip the read
    assert main(["--study", "default", "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: google-research-datasets/lareqa@9bc8c7f:xquad-r/en.json") and "Traceback" not in err

def test_a_broken_cost_table_is_named(tmp_path):
    path = tmp_path / "costs.json"
    path.write_text("{")
    with pytest.raises(StudyConfigError, match="not valid JSON"):
        planning.read_table(path, "cost table")
    with pytest.raises(StudyConfigError, match="train_step"):
        planning.step_seconds({}, 16, 2, 12)


def test_noisy_text_costs_never_make_more_layers_cheaper():
    costs = {**COSTS, "evaluation": {**COSTS["evaluation"], "per_text_cached_s": {"2": 0.004, "4": 0.002}}}
    assert planning.per_text_seconds(costs, 2, 12) == pytest.approx(0.004)  # measured points as they are
    assert planning.per_text_seconds(costs, 3, 12) == pytest.approx(0.003)  # between: their mean
    assert planning.per_text_seconds(costs, 6, 12) == pytest.approx(0.003)


# --- every claim type: the planned weights are claim_cell_weights, the statistic per type ------
def _variant(claim: Claim, **changes) -> Claim:
    return Claim.model_validate({**claim.model_dump(by_alias=True, exclude_none=True), **changes})


def _claim_cases():
    default = load_study("default")
    compare = default.claims[0]
    languages = load_study("languages")
    slope = next(c for c in languages.claims if c.slope is not None and not c.untestable and not c.minus_dataset)
    minus = next(c for c in languages.claims if c.minus_dataset and not c.untestable)
    scale = load_study("scale")
    contrast = next(c for c in scale.claims if c.contrast is not None)
    ratio = load_study("ratio")
    worst = next(c for c in ratio.claims if c.worst_language)
    slope_dict = slope.slope.model_dump(by_alias=True)
    values = sorted(float(cell[slope.slope.axis]) for cell in languages.cells())
    log_range = {**slope_dict, "scale": "log2", "from": values[1], "to": values[-2]}
    return [
        ("compare", default, compare, None),
        ("slope", languages, slope, None),
        ("slope", languages, _variant(slope, slope=log_range), None),
        ("contrast", scale, contrast, None),
        (planning.claim_kind(minus), languages, minus, "minus_dataset: variance ="),
        ("compare", default, _variant(compare, setting=None, metric_weights={"multi": 1.0, "cross": -1.0}),
         "correlation within a run"),
        ("compare" if worst.compare is not None else ("slope" if worst.slope is not None else "contrast"), ratio,
         worst, "approximate: per-language components not stored"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_every_claim_type_plans_claim_cell_weights_and_its_statistic(case, variance):
    from study.spec import claim_cell_weights
    from study.verdicts import claim_statistic

    kind, spec, claim, note = _claim_cases()[case]
    assert planning.claim_kind(claim) == kind
    contrast = planning.WEIGHT_RULES[kind](spec, claim)
    expected = claim_cell_weights(spec, claim)
    statistic = claim_statistic(claim)
    # one term per (dataset, setting) of the statistic, each the cell weights x its factor
    assert len(contrast.terms) == len(statistic.datasets) * len(statistic.metrics)
    for term in contrast.terms:
        factor = statistic.datasets[term.dataset] * statistic.metrics[term.setting]
        assert term.measure == claim.measure
        assert term.weights == pytest.approx({c: factor * w for c, w in expected.items()})
    assert abs(sum(expected.values())) < 1e-9 and expected
    planned = planning.claim_mdd(spec, claim, variance, 3)
    text = "\n".join(planned.notes)
    if note is None:
        assert not any(word in text for word in ("minus_dataset", "metric_weights", "per-language"))
    else:
        assert note in text


@pytest.mark.parametrize("scale, log", [("log2", math.log2), ("log", math.log)])
def test_a_log_slope_over_a_range_plans_ols_on_the_logs_within_the_range(scale, log, variance):
    _, spec, claim, _ = _claim_cases()[2]
    claim = _variant(claim, slope={**claim.slope.model_dump(by_alias=True), "scale": scale})
    weights = planning.WEIGHT_RULES["slope"](spec, claim).terms[0].weights
    cells = spec.cells()
    xs = {c: float(cells[c][claim.slope.axis]) for c in weights}
    assert min(xs.values()) >= claim.slope.from_ and max(xs.values()) <= claim.slope.to
    assert len(weights) == len(cells) - 2  # the smallest and the largest value are outside [from, to]
    expected = slope_weights({log(x): log(x) for x in set(xs.values())})
    assert weights == pytest.approx({c: expected[log(x)] for c, x in xs.items()})


def test_the_plan_prints_the_statistic_notes(variance):
    spec = load_study("default")
    combined = _variant(spec.claims[0], setting=None, metric_weights={"multi": 1.0, "cross": -1.0})
    spec = spec.model_copy(update={"claims": [combined]})
    text = planning.format_plan(planning.build_plan(spec, costs=COSTS, variance=variance, cpus=2))
    assert "note: metric_weights (+1 multi -1 cross)" in text and "approximate" in text
    assert "contrast: " in text and text.count("[compare] MDD") == 1
