"""Claim types beyond A - B (issue 21, item 3): arbitrary contrasts (interactions), slopes on a
log scale over a range, the same contrast across two datasets, combinations of metrics within
a run, the worst language of a set, bitext claims, ``smallest_effect`` and the "comparable"
note. Each type: a bad input rejected before Ray naming the claim and the field, and its
statistic on synthetic per-query rows against a value computed here independently (plain
pandas), no Ray.
"""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from hybridir.evaluation.claim_statistics import ClaimStatistic, statistic_matrices
from hybridir.evaluation.seed_item_variance import contrast_variance
from hybridir.evaluation.significance import contrast_from_matrices, item_matrices
from study.questions.common import ReportContext
from study.results import ResultStore
from study.spec import STUDIES_DIR, StudyConfigError, claim_cell_weights, dump_study, load_study
from study.verdicts import compute_verdicts, verdict_markdown

LANGS = ["en", "th", "el"]
ITEMS = [f"q{i}" for i in range(60)]
BASE = yaml.safe_load((STUDIES_DIR / "ratio.yaml").read_text())
CLAIM = {"id": "c", "statement": "s", "dataset": "xquad-r", "setting": "cross", "measure": "ap", "direction": "greater"}


def study(axes: dict, claims: list[dict], finals=("xquad-r",)) -> dict:
    raw = copy.deepcopy(BASE)
    raw["axes"] = axes
    raw["claims"] = claims
    raw["evaluation"]["final"] = [{"dataset": name} for name in finals]
    return raw


def lareqa_rows(rng, dataset="xquad-r", shift=None, seed_effect=0.0, items=ITEMS, noise=0.03) -> pd.DataFrame:
    """LAReQA-shaped rows; ``shift``: (setting, query language) -> added to every AP."""
    shift = shift or {}
    # item (question) difficulty: fixed per dataset, shared by every run (the pairing)
    fixed = np.random.default_rng(sum(map(ord, dataset)))
    item_effect = dict(zip(items, fixed.uniform(0.3, 0.6, len(items))))
    rows = []
    for q in LANGS:
        for setting, cands in (("mono", [q]), ("cross", [c for c in LANGS if c != q]), ("multi", ["all"])):
            for c in cands:
                for item in items:
                    ap = item_effect[item] + seed_effect + shift.get((setting, q), 0.0) + rng.normal(0, noise)
                    rows.append({"dataset": dataset, "setting": setting, "query_lang": q, "candidate_lang": c,
                                 "query_id": item, "ap": ap, "ndcg@10": ap, "r@1": float(ap > 0.45), "r@10": 1.0,
                                 "rank_distance": 5.0 + rng.normal(0, 1) if setting == "multi" else np.nan})
    return pd.DataFrame(rows)


def macro(frame: pd.DataFrame, setting: str, measure: str = "ap", dataset=None, language=None) -> float:
    """The LAReQA summary value computed directly: the mean over language-pair cells of cell means."""
    rows = frame[frame.setting == setting]
    if dataset is not None:
        rows = rows[rows.dataset == dataset]
    if language is not None:
        rows = rows[(rows.query_lang == language) | (rows.candidate_lang == language)]
    return float(rows.groupby(["query_lang", "candidate_lang"])[measure].mean().mean())


def run_study(tmp_path, raw: dict, frame_of, seeds=(1, 2, 3)):
    """Writes every cell's seed runs (``frame_of(axes, seed)``) to a ResultStore; the verdicts."""
    spec = load_study(raw)
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    frames = {}
    for cell, axes in enumerate(spec.cells()):
        for seed in seeds:
            trial_id = f"c{cell}s{seed}"
            frames[(cell, seed)] = frame_of(axes, seed)
            store.write_per_query(trial_id, frames[(cell, seed)])
            row = {"trial_id": trial_id, "status": "completed", "phase": "seeds", "cell": cell, "seed": seed,
                   "inter/cross_map": 0.3, "final/xquad-r/cross_map": 0.3}
            row.update({f"axis/{k}": v for k, v in axes.items()})
            store.append_trial(row)
    ctx = ReportContext(spec, store, store.trials(), store.history(), tmp_path / "reports")
    run_study.ctx = ctx  # for a test that draws the report's figures from the same results
    return spec, frames, compute_verdicts(ctx).set_index("claim")


def expect_error(raw: dict, *needles: str) -> None:
    with pytest.raises(StudyConfigError) as info:
        load_study(raw)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


# --- arbitrary contrasts: an interaction ----------------------------------------------------------
TWO_AXES = {"batching.alpha": [0.0, 1.0], "batching.batch_size": [16, 32]}
INTERACTION = [{"cell": {"batching.alpha": 0.0, "batching.batch_size": 32}, "weight": 1},
               {"cell": {"batching.alpha": 1.0, "batching.batch_size": 32}, "weight": -1},
               {"cell": {"batching.alpha": 0.0, "batching.batch_size": 16}, "weight": -1},
               {"cell": {"batching.alpha": 1.0, "batching.batch_size": 16}, "weight": 1}]


def test_interaction_contrast_weights_and_estimate(tmp_path):
    claim = {**CLAIM, "id": "alpha-helps-more-at-32", "contrast": INTERACTION}
    rng = np.random.default_rng(0)

    def frame_of(axes, seed):  # alpha 0 helps by 0.06 at batch 32, not at 16: interaction 0.06
        lift = 0.06 if (axes["batching.alpha"], axes["batching.batch_size"]) == (0.0, 32) else 0.0
        return lareqa_rows(rng, shift={("cross", q): lift for q in LANGS}, seed_effect=rng.normal(0, 0.003))

    spec, frames, verdicts = run_study(tmp_path, study(TWO_AXES, [claim]), frame_of)
    cells = spec.cells()
    weights = claim_cell_weights(spec, spec.claims[0])
    assert {tuple(cells[c].values()): w for c, w in weights.items()} == {
        (0.0, 32): 1.0, (1.0, 32): -1.0, (0.0, 16): -1.0, (1.0, 16): 1.0}
    expected = sum(w * np.mean([macro(frames[(c, s)], "cross") for s in (1, 2, 3)]) for c, w in weights.items())
    row = verdicts.loc["alpha-helps-more-at-32"]
    assert row["estimate"] == pytest.approx(expected, abs=1e-12)
    assert row["estimate"] == pytest.approx(0.06, abs=0.02)
    assert row["verdict"] == "supported" and row["ci_low"] < 0.06 < row["ci_high"]
    assert row["cells"].startswith("+1 (batching.alpha=0.0, batching.batch_size=32)")


@pytest.mark.parametrize("contrast,needles", [
    ([{**INTERACTION[0], "weight": 1}, {**INTERACTION[1], "weight": -0.5}],
     ["claim 'c'.contrast: the weights must sum to 0", "sum to 0.5"]),
    ([INTERACTION[0]], ["claim 'c'.contrast: needs >= 2 terms"]),
    ([INTERACTION[0], {"cell": {"batching.alpha": 0.5}, "weight": -1}],
     ["claims[0] (c).contrast[1].cell: batching.alpha=0.5 is not a value"]),
    ([INTERACTION[0], {"cell": {"optim.lr": 0.1}, "weight": -1}],
     ["claims[0] (c).contrast[1].cell: 'optim.lr' is not an axis"]),
    ([INTERACTION[0], {"cell": {"batching.alpha": "best"}, "weight": -1}],
     ["claims[0] (c).contrast[1].cell.batching.alpha: 'best' is for compare only"]),
    ([INTERACTION[0], {**INTERACTION[0], "weight": -1}], ["claim 'c'.contrast: a cell appears twice"]),
    ([{"cell": {"batching.alpha": 0.0}, "weight": 1}, {"cell": {"batching.alpha": 0.0, "batching.batch_size": 16},
                                                       "weight": -0.5},
      {"cell": {"batching.alpha": 0.0, "batching.batch_size": 32}, "weight": -0.5}],
     ["claims[0] (c).contrast: the terms cancel"]),
    ([{**INTERACTION[0], "weight": 0}, INTERACTION[1]], ["claim 'c'.contrast[0].weight: 0"]),
])
def test_bad_contrasts_are_rejected_naming_claim_and_field(contrast, needles):
    expect_error(study(TWO_AXES, [{**CLAIM, "contrast": contrast}]), *needles)


def test_contrast_excludes_compare_and_slope():
    expect_error(study(TWO_AXES, [{**CLAIM, "contrast": INTERACTION,
                                   "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}}]),
                 "claim 'c': give exactly one of 'compare', 'slope' or 'contrast'")


# --- slopes on a log scale over a named range ------------------------------------------------------
STEPS = {"max_steps": [100, 200, 400, 800]}


def test_log2_slope_over_a_range(tmp_path):
    claim = {**CLAIM, "id": "falls-per-doubling", "direction": "less",
             "slope": {"axis": "max_steps", "from": 100, "to": 400, "scale": "log2"}}
    rng = np.random.default_rng(1)

    def frame_of(axes, seed):  # -0.02 per doubling up to 40, then a jump the range leaves out
        x = np.log2(axes["max_steps"] / 100)
        level = -0.02 * x + (0.3 if axes["max_steps"] == 800 else 0.0)
        return lareqa_rows(rng, shift={("cross", q): level for q in LANGS}, seed_effect=rng.normal(0, 0.002))

    spec, frames, verdicts = run_study(tmp_path, study(STEPS, [claim]), frame_of)
    weights = claim_cell_weights(spec, spec.claims[0])
    # OLS weights on log2 x = 0, 1, 2: the middle cell weighs 0; 800 lies outside the range
    assert {spec.cells()[c]["max_steps"]: w for c, w in weights.items()} == pytest.approx({100: -0.5, 400: 0.5})
    means = [np.mean([macro(frames[(c, s)], "cross") for s in (1, 2, 3)]) for c in (0, 1, 2)]
    expected = np.polyfit(np.log2([100, 200, 400]), means, 1)[0]  # the least-squares slope, per doubling
    row = verdicts.loc["falls-per-doubling"]
    assert row["estimate"] == pytest.approx(expected, abs=1e-12)
    assert row["estimate"] == pytest.approx(-0.02, abs=0.01)
    assert row["verdict"] == "supported" and row["cells"] == "slope over max_steps = 100, 200, 400 (log2 scale)"


@pytest.mark.parametrize("slope,needles", [
    ({"axis": "max_steps", "from": 100, "to": 100}, ["claim 'c'.slope.to: 100 must exceed from=100"]),
    ({"axis": "max_steps", "from": 100, "to": 150}, ["claims[0] (c).slope: fewer than 2 values", "<= to=150"]),
    ({"axis": "max_steps", "from": 0, "scale": "log2"}, ["claims[0] (c).slope.scale: log2 needs axis values > 0"]),
    ({"axis": "max_steps", "from": 100, "scale": "log10"}, ["claims.0.slope.scale"]),
])
def test_bad_slopes_are_rejected_naming_claim_and_field(slope, needles):
    expect_error(study(STEPS, [{**CLAIM, "slope": slope}]), *needles)


def test_a_word_axis_value_needs_a_slope_that_ends_below_it():
    """data.pairs_per_target_language = [..., 250, "all"]: "all" has no x; a slope must name
    its upper end (to) so it cannot silently stop below "all", and then leaves it out."""
    from hybridir.evaluation.significance import slope_weights

    axis = "data.pairs_per_target_language"
    slope = {**CLAIM, "id": "grows", "involving": ["th"], "slope": {"axis": axis, "from": 50, "scale": "log2"}}
    sets = [f"axes.{axis}=[0, 50, 100, 250, all]", "report.target_languages=[th]"]
    with pytest.raises(StudyConfigError) as error:
        load_study("data", sets + [f"claims=[{json.dumps(slope)}]"])
    for needle in ("claims[0] (grows).slope.axis", "non-numeric values ['all']", "slope.to"):
        assert needle in str(error.value)
    slope["slope"]["to"] = 250
    spec = load_study("data", sets + [f"claims=[{json.dumps(slope)}]"])
    weights = claim_cell_weights(spec, spec.claims[0])
    expected = slope_weights({x: x for x in np.log2([50, 100, 250])})
    assert {spec.cells()[c][axis]: w for c, w in weights.items()} == pytest.approx(
        dict(zip([50, 100, 250], expected.values())))  # 0 is below from, "all" outside the range


# --- the same contrast across two datasets --------------------------------------------------------
def _two_dataset_runs(rng, seeds=(1, 2, 3, 4)):
    """Cells a, b; each run has XQuAD-R and MLQA-R rows sharing the run's seed effect. The
    a - b lift is 0.05 on XQuAD-R and 0.01 on MLQA-R: the difference of contrasts is 0.04."""
    runs = {}
    for cell, lift in (("a", {"xquad-r": 0.05, "mlqa-r": 0.01}), ("b", {"xquad-r": 0.0, "mlqa-r": 0.0})):
        runs[cell] = {}
        for seed in seeds:
            shared = rng.normal(0, 0.01)  # one training run: the same seed effect on both datasets
            runs[cell][seed] = pd.concat([
                lareqa_rows(rng, "xquad-r", {("cross", q): lift["xquad-r"] for q in LANGS}, shared),
                lareqa_rows(rng, "mlqa-r", {("cross", q): lift["mlqa-r"] for q in LANGS}, shared,
                            items=[f"m{i}" for i in range(40)]),
            ], ignore_index=True)
    return runs


def test_difference_across_datasets_pairs_seeds_and_sums_item_variances():
    runs = _two_dataset_runs(np.random.default_rng(2))
    stat = ClaimStatistic("ap", {"cross": 1.0}, {"xquad-r": 1.0, "mlqa-r": -1.0})
    built = statistic_matrices(runs, stat)
    assert len(built.items) == 60 + 40 and built.n_items_dropped == 0
    # the per-run statistic is T_xquad - T_mlqa of the same run
    for cell in ("a", "b"):
        for row, seed in zip(built.matrices[cell], built.seed_labels[cell]):
            frame = runs[cell][seed]
            assert row.sum() == pytest.approx(macro(frame, "cross", dataset="xquad-r")
                                              - macro(frame, "cross", dataset="mlqa-r"), abs=1e-12)
    weights = {"a": 1.0, "b": -1.0}
    assert built.item_blocks == ["xquad-r"] * 60 + ["mlqa-r"] * 40
    result = contrast_from_matrices(built.matrices, built.seed_labels, weights, "cross", "ap",
                                    item_blocks=built.item_blocks)
    truth = 0.04
    assert result.estimate == pytest.approx(truth, abs=0.02)
    assert result.ci_low < truth < result.ci_high
    # seed term: the variance of the within-run differences (the shared seed effect cancels);
    # item term: the sum of the two datasets' own item terms (independent question sets)
    per_dataset = {d: item_matrices({c: {s: f[f.dataset == d] for s, f in runs[c].items()} for c in runs},
                                    "cross", "ap")[0] for d in ("xquad-r", "mlqa-r")}
    separate = [contrast_variance(per_dataset[d], weights, pool_seeds=True) for d in per_dataset]
    combined = contrast_variance(built.matrices, weights, pool_seeds=True, item_blocks=built.item_blocks)
    # each mean square of the item part is the sum of the datasets' own (up to n / (n - 2) vs
    # n_k / (n_k - 1) in the degrees of freedom)
    assert combined.item_component.value == pytest.approx(sum(v.item_component.value for v in separate), rel=0.02)
    assert sum(c.value for c in combined.resid_components) == pytest.approx(
        sum(c.value for v in separate for c in v.resid_components), rel=0.02)
    assert result.standard_error ** 2 == pytest.approx(combined.variance)
    differences = {c: built.matrices[c].sum(axis=1) for c in runs}
    pooled = np.mean([np.var(v, ddof=1) for v in differences.values()])
    assert combined.seed_part == pytest.approx(pooled * (1 / 4 + 1 / 4), rel=1e-9)
    assert combined.seed_part < 0.5 * sum(
        contrast_variance(per_dataset[d], weights, pool_seeds=True).seed_part for d in per_dataset)


def test_cross_dataset_claim_end_to_end_and_bad_inputs(tmp_path):
    claim = {**CLAIM, "id": "xquad-gain-exceeds-mlqa", "minus_dataset": "mlqa-r",
             "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}}
    raw = study({"batching.alpha": [0.0, 1.0]}, [claim], finals=("xquad-r", "mlqa-r"))
    rng = np.random.default_rng(3)

    def frame_of(axes, seed):
        lift = 0.05 if axes["batching.alpha"] == 0.0 else 0.0
        shared = rng.normal(0, 0.01)
        return pd.concat([lareqa_rows(rng, "xquad-r", {("cross", q): lift for q in LANGS}, shared),
                          lareqa_rows(rng, "mlqa-r", {}, shared, items=ITEMS[:40])], ignore_index=True)

    spec, frames, verdicts = run_study(tmp_path, raw, frame_of)
    row = verdicts.loc["xquad-gain-exceeds-mlqa"]

    def mean(cell, dataset):
        return np.mean([macro(frames[(cell, s)], "cross", dataset=dataset) for s in (1, 2, 3)])

    assert row["estimate"] == pytest.approx((mean(0, "xquad-r") - mean(1, "xquad-r"))
                                            - (mean(0, "mlqa-r") - mean(1, "mlqa-r")), abs=1e-12)
    assert row["dataset"] == "xquad-r - mlqa-r" and row["verdict"] == "supported"
    assert row["n_items"] == 60 + 40
    expect_error(study({"batching.alpha": [0.0, 1.0]}, [claim]), "claims[0] (xquad-gain-exceeds-mlqa).minus_dataset",
                 "'mlqa-r' is not among evaluation.final")
    expect_error(study({"batching.alpha": [0.0, 1.0]}, [{**claim, "minus_dataset": "xquad-r"}]),
                 "claim 'xquad-gain-exceeds-mlqa'.minus_dataset: the same as dataset")
    expect_error(study({"batching.alpha": [0.0, 1.0]}, [{**claim, "minus_dataset": "tatoeba"}],
                       finals=("xquad-r", "tatoeba")),
                 "claims[0] (xquad-gain-exceeds-mlqa).minus_dataset: 'tatoeba' is scored as kind 'bitext'")


# --- a combination of metrics within one run ------------------------------------------------------
def test_metric_combination_is_combined_within_each_run():
    rng = np.random.default_rng(4)
    # a large seed effect shared by the settings of one run: it cancels in multi - cross
    runs = {cell: {s: lareqa_rows(rng, shift={("multi", q): lift for q in LANGS}, seed_effect=rng.normal(0, 0.05))
                   for s in (1, 2, 3)} for cell, lift in (("a", 0.03), ("b", 0.0))}
    stat = ClaimStatistic("ap", {"multi": 1.0, "cross": -1.0})
    built = statistic_matrices(runs, stat)
    for cell in runs:
        for row, seed in zip(built.matrices[cell], built.seed_labels[cell]):
            frame = runs[cell][seed]
            assert row.sum() == pytest.approx(macro(frame, "multi") - macro(frame, "cross"), abs=1e-12)
    result = contrast_from_matrices(built.matrices, built.seed_labels, {"a": 1.0, "b": -1.0}, "multi - cross", "ap")
    assert result.ci_low < 0.03 < result.ci_high and result.ci_low > 0
    plain = contrast_from_matrices(*item_matrices(runs, "multi", "ap")[:2], {"a": 1.0, "b": -1.0}, "multi", "ap")
    assert result.seed_se < plain.seed_se / 5  # the shared seed effect is gone from the combination


@pytest.mark.parametrize("changes,needles", [
    ({"setting": None, "metric_weights": {"multi": 1, "crosss": -1}}, ["claim 'c'.metric_weights", "'crosss'"]),
    ({"setting": None, "metric_weights": {"multi": 1}}, ["claim 'c'.metric_weights: needs >= 2 settings"]),
    ({"metric_weights": {"multi": 1, "cross": -1}}, ["claim 'c': give exactly one of 'setting' or 'metric_weights'"]),
    ({"setting": None, "metric_weights": {"multi": 1, "cross": -1}, "measure": "rank_distance"},
     ["claim 'c': measure rank_distance exists in setting 'multi' only"]),
    ({"setting": None, "metric_weights": {"multi": 1, "bitext": -1}},
     ["claims[0] (c).metric_weights: 'bitext' is not a setting of 'xquad-r' (kind 'lareqa'"]),
])
def test_bad_metric_combinations_are_rejected_naming_claim_and_field(changes, needles):
    claim = {**CLAIM, "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}, **changes}
    claim = {k: v for k, v in claim.items() if v is not None}
    expect_error(study({"batching.alpha": [0.0, 1.0]}, [claim]), *needles)


def test_a_trade_off_of_one_cell_is_a_claim_when_the_metric_weights_sum_to_zero(tmp_path):
    """multi - cross within the runs of one cell: the contrast over cells may then be a level."""
    claim = {**CLAIM, "id": "multi-above-cross", "setting": None, "metric_weights": {"multi": 1, "cross": -1},
             "contrast": [{"cell": {"batching.alpha": 0.0}, "weight": 1}, {"cell": {"batching.alpha": 1.0}, "weight": 1}]}
    claim = {k: v for k, v in claim.items() if v is not None}
    rng = np.random.default_rng(5)
    spec, frames, verdicts = run_study(
        tmp_path, study({"batching.alpha": [0.0, 1.0]}, [claim]),
        lambda axes, seed: lareqa_rows(rng, shift={("multi", q): 0.04 for q in LANGS}, seed_effect=rng.normal(0, 0.02)))
    expected = sum(np.mean([macro(frames[(c, s)], "multi") - macro(frames[(c, s)], "cross") for s in (1, 2, 3)])
                   for c in (0, 1))
    row = verdicts.loc["multi-above-cross"]
    assert row["estimate"] == pytest.approx(expected, abs=1e-12) and row["setting"] == "multi - cross"
    assert row["verdict"] == "supported"
    bad = {**claim, "metric_weights": {"multi": 1, "cross": 1}}
    expect_error(study({"batching.alpha": [0.0, 1.0]}, [bad]), "claim 'multi-above-cross'.contrast: the weights must sum to 0")


def test_cells_figure_draws_every_claim_statistic(tmp_path, monkeypatch):
    """The report's cells figure (study.report.plot_cells) plots each claim's own statistic: a
    combination of settings, a cross-dataset difference, a worst language."""
    import study.report as report_module

    compare = {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}
    claims = [{**CLAIM, "id": "combo", "setting": None, "metric_weights": {"multi": 1, "cross": -1}, "compare": compare},
              {**CLAIM, "id": "datasets", "minus_dataset": "mlqa-r", "compare": compare},
              {**CLAIM, "id": "worst", "worst_language": ["th", "el"], "compare": compare}]
    claims = [{k: v for k, v in c.items() if v is not None} for c in claims]
    rng = np.random.default_rng(10)
    run_study(tmp_path, study({"batching.alpha": [0.0, 1.0]}, claims, finals=("xquad-r", "mlqa-r")),
              lambda axes, seed: pd.concat([lareqa_rows(rng, "xquad-r"), lareqa_rows(rng, "mlqa-r", items=ITEMS[:30])],
                                           ignore_index=True))
    drawn = []
    monkeypatch.setattr(report_module, "save_figure", lambda fig, path: drawn.append(fig) or path)
    assert report_module.plot_cells(run_study.ctx, tmp_path / "cells.png") is not None
    titles = [ax.get_title() for ax in drawn[0].axes]
    assert [t.split("\n")[0] for t in titles] == ["xquad-r multi - cross mAP", "xquad-r - mlqa-r cross mAP",
                                                   "xquad-r cross mAP (worst of th el)"]
    for ax in drawn[0].axes:  # two cells, each with its CI, and the zero-shot line is absent (none stored)
        assert len(ax.get_xticklabels()) == 2


# --- the worst language of a set ------------------------------------------------------------------
def test_worst_language_is_the_per_run_minimum(tmp_path):
    claim = {**CLAIM, "id": "worst-language-improves", "worst_language": ["en", "th", "el"],
             "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}}
    rng = np.random.default_rng(6)

    def frame_of(axes, seed):  # th is the worst language everywhere; alpha 0 lifts th by 0.05
        lift = 0.05 if axes["batching.alpha"] == 0.0 else 0.0
        return lareqa_rows(rng, shift={("cross", "th"): -0.15 + lift}, seed_effect=rng.normal(0, 0.003))

    spec, frames, verdicts = run_study(tmp_path, study({"batching.alpha": [0.0, 1.0]}, [claim]), frame_of)

    def worst(cell):
        return np.mean([min(macro(frames[(cell, s)], "cross", language=lang) for lang in LANGS) for s in (1, 2, 3)])

    row = verdicts.loc["worst-language-improves"]
    assert row["estimate"] == pytest.approx(worst(0) - worst(1), abs=1e-12)
    assert row["worst_language_per_run"] == "th x6" and row["verdict"] == "supported"
    text = "\n".join(verdict_markdown(verdicts.reset_index()))
    assert "worst of en th el; worst per run: th x6" in text and "per run the minimum" in text


def test_worst_language_with_switching_argmin_sums_to_the_minimum():
    """Two languages within noise of each other: the argmin changes between runs; every run's
    item contributions still sum to its own minimum (zero for items the argmin lacks)."""
    rng = np.random.default_rng(7)
    runs = {"a": {s: lareqa_rows(rng, shift={("cross", "th"): -0.1, ("cross", "el"): -0.1}, noise=0.08)
                  for s in range(6)}}
    built = statistic_matrices(runs, ClaimStatistic("ap", {"cross": 1.0}, worst_of=("en", "th", "el")))
    for row, seed in zip(built.matrices["a"], built.seed_labels["a"]):
        frame = runs["a"][seed]
        assert row.sum() == pytest.approx(min(macro(frame, "cross", language=lang) for lang in LANGS), abs=1e-12)
    assert {by["xquad-r" if None not in by else None] for by in built.worst.values()} <= {"th", "el"}


@pytest.mark.parametrize("changes,needles", [
    ({"worst_language": ["th"]}, ["claim 'c'.worst_language: needs >= 2 languages"]),
    ({"worst_language": ["th", "el"], "involving": ["th"]}, ["claim 'c'.worst_language: give either 'involving'"]),
])
def test_bad_worst_language_is_rejected_naming_claim_and_field(changes, needles):
    claim = {**CLAIM, "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}, **changes}
    expect_error(study({"batching.alpha": [0.0, 1.0]}, [claim]), *needles)


def test_worst_language_outside_the_evaluated_languages_fails_the_pre_ray_checks():
    from study.checks import check_claims

    claim = {**CLAIM, "worst_language": ["th", "sw"], "compare": {"a": {"batching.alpha": 0.0},
                                                                  "b": {"batching.alpha": 1.0}}}
    spec = load_study(study({"batching.alpha": [0.0, 1.0]}, [claim]))
    with pytest.raises(StudyConfigError, match=r"claims\[0\] \(c\)\.worst_language\[1\]: xquad-r .* has no language 'sw'"):
        check_claims(spec)


# --- evaluator kinds: bitext accuracy, AfriQA -------------------------------------------------------
def bitext_rows(rng, lift=0.0, n=50) -> pd.DataFrame:
    rows = []
    for x, y in (("de", "en"), ("en", "de"), ("fr", "en"), ("en", "fr")):
        p = 0.6 + lift + (0.1 if x == "en" else 0.0)
        correct = (rng.uniform(size=n) < p).astype(float)
        rows.append(pd.DataFrame({"dataset": "tatoeba", "setting": "bitext", "query_lang": x, "candidate_lang": y,
                                  "query_id": [f"t{i}" for i in range(n)], "correct@1": correct,
                                  "ap": np.where(correct == 1, 1.0, 0.5), "rank": np.where(correct == 1, 1, 2)}))
    return pd.concat(rows, ignore_index=True)


def test_bitext_accuracy_claim(tmp_path):
    claim = {"id": "alpha0-better-bitext", "statement": "s", "dataset": "tatoeba", "setting": "bitext",
             "measure": "accuracy", "direction": "greater",
             "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}}
    rng = np.random.default_rng(8)
    spec, frames, verdicts = run_study(
        tmp_path, study({"batching.alpha": [0.0, 1.0]}, [claim], finals=("tatoeba",)),
        lambda axes, seed: bitext_rows(rng, lift=0.2 if axes["batching.alpha"] == 0.0 else 0.0))

    def accuracy(frame):  # BitextResult.summary["accuracy"]: the mean over directions
        return float(frame.groupby(["query_lang", "candidate_lang"])["correct@1"].mean().mean())

    row = verdicts.loc["alpha0-better-bitext"]
    expected = np.mean([accuracy(frames[(0, s)]) for s in (1, 2, 3)]) - np.mean([accuracy(frames[(1, s)])
                                                                                 for s in (1, 2, 3)])
    assert row["estimate"] == pytest.approx(expected, abs=1e-12)
    assert row["verdict"] == "supported" and row["setting"] == "bitext"


@pytest.mark.parametrize("changes,needles", [
    ({"setting": "cross"}, ["claims[0] (c).setting: 'cross' is not a setting of 'tatoeba' (kind 'bitext'"]),
    ({"setting": "bitext", "measure": "ndcg@10"},
     ["claims[0] (c).measure: 'ndcg@10' is not a measure of 'tatoeba' (kind 'bitext'"]),
])
def test_bitext_claims_with_lareqa_settings_are_rejected(changes, needles):
    claim = {**CLAIM, "dataset": "tatoeba", "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}},
             **changes}
    expect_error(study({"batching.alpha": [0.0, 1.0]}, [claim], finals=("tatoeba",)), *needles)


def test_lareqa_claim_with_bitext_accuracy_is_rejected():
    claim = {**CLAIM, "measure": "accuracy", "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}}
    expect_error(study({"batching.alpha": [0.0, 1.0]}, [claim]),
                 "claims[0] (c).measure: 'accuracy' is not a measure of 'xquad-r' (kind 'lareqa'")


def test_a_kind_claims_do_not_support_is_named(monkeypatch):
    import study.spec as spec_module

    monkeypatch.delitem(spec_module.CLAIM_SETTINGS_BY_KIND, "bitext")
    claim = {**CLAIM, "dataset": "tatoeba", "setting": "bitext", "measure": "accuracy",
             "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}}
    expect_error(study({"batching.alpha": [0.0, 1.0]}, [claim], finals=("tatoeba",)),
                 "claims[0] (c).dataset: 'tatoeba' is scored as kind 'bitext', which claims do not support")


def test_afriqa_has_no_monolingual_setting_before_ray():
    from study.checks import check_claims

    claim = {**CLAIM, "dataset": "afriqa", "setting": "mono",
             "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}}
    raw = study({"batching.alpha": [0.0, 1.0]}, [claim])
    raw["evaluation"]["final"] = [{"dataset": "afriqa", "languages": ["hau", "swa"]}]
    spec = load_study(raw)
    with pytest.raises(StudyConfigError, match=r"claims\[0\] \(c\)\.setting: afriqa has no 'mono' setting"):
        check_claims(spec)
    spec.claims[0].setting = "cross"
    check_claims(spec)  # cross-lingual AfriQA claims pass


# --- smallest_effect and "comparable" --------------------------------------------------------------
def test_smallest_effect_beyond_the_design_is_said_beside_the_verdict(tmp_path):
    claims = [{**CLAIM, "id": "tiny", "smallest_effect": 0.0001,
               "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}},
              {**CLAIM, "id": "large", "smallest_effect": 0.5,
               "statement": "alpha 0 is comparable to alpha 1",
               "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}}]
    rng = np.random.default_rng(9)
    _, _, verdicts = run_study(tmp_path, study({"batching.alpha": [0.0, 1.0]}, claims),
                               lambda axes, seed: lareqa_rows(rng, seed_effect=rng.normal(0, 0.01)))
    assert not verdicts.loc["tiny", "detects_smallest_effect"] and verdicts.loc["large", "detects_smallest_effect"]
    text = "\n".join(verdict_markdown(verdicts.reset_index()))
    tiny = next(line for line in text.splitlines() if "**tiny**" in line)
    assert "design cannot detect the named effect" in tiny and "smallest_effect 0.0001" in tiny
    assert "cannot detect" not in next(line for line in text.splitlines() if "**large**" in line)
    assert "Claim **large** says \"comparable\" but is tested as direction 'greater'" in text
    assert "equivalence claim" in text and "Claim **tiny**" not in text
    expect_error(study({"batching.alpha": [0.0, 1.0]}, [{**claims[0], "smallest_effect": 0}]),
                 "claim 'tiny'.smallest_effect: must be > 0")


def test_planner_weights_need_no_results():
    """claim_cell_weights works from the spec alone, "best" standing for one cell per group."""
    spec = load_study(study(TWO_AXES, [{**CLAIM, "compare": {"a": {"batching.alpha": "best"},
                                                             "b": {"batching.alpha": 1.0}}}]))
    weights = claim_cell_weights(spec, spec.claims[0])
    assert sorted(weights.values()) == [-0.5, -0.5, 0.5, 0.5]
    assert all(len(list(group)) for _, group in itertools.groupby(weights))


def test_set_overrides_that_remove_a_claims_cells_or_second_dataset_mark_it_untestable():
    """A small local run (--set) keeps the new claim types, marked untestable with the reason."""
    interaction = {**CLAIM, "id": "interaction", "contrast": INTERACTION}
    across = {**CLAIM, "id": "across", "minus_dataset": "mlqa-r",
              "compare": {"a": {"batching.alpha": 0.0}, "b": {"batching.alpha": 1.0}}}
    spec = load_study(study(TWO_AXES, [interaction, across], finals=("xquad-r", "mlqa-r")),
                      ["axes.batching.batch_size=[16]", "evaluation.final=[{dataset: xquad-r}]"])
    claims = {claim.id: claim for claim in spec.claims}
    assert "contrast[0].cell: batching.batch_size=32 is not a value" in claims["interaction"].untestable
    assert "dataset 'mlqa-r' is not among evaluation.final" in claims["across"].untestable


def test_cross_dataset_inference_is_calibrated_on_aa_simulations():
    """A/A: both cells from one distribution; each run's seed effect is partly shared by the two
    datasets, items have their own effects and scales per dataset (60 and 40 items). The
    difference of contrasts is 0; at 3 seeds per cell the 95% CI covers it and p < 0.05 in about
    5% of 400 replications (matrix level: the blocks as statistic_matrices lays them out)."""
    from hybridir.evaluation.significance import contrast_inference

    rng = np.random.default_rng(11)
    n_a, n_b, seeds = 60, 40, 3
    blocks = ["a"] * n_a + ["b"] * n_b
    rejections = covered = 0
    reps = 400
    for rep in range(reps):
        item_a, item_b = rng.normal(0, 0.2, n_a), rng.normal(0, 0.2, n_b)
        matrices = {}
        for cell in ("x", "y"):
            rows = []
            for _ in range(seeds):
                shared, own_a, own_b = rng.normal(0, 0.01, 3)
                a = (item_a + rng.normal(0, 0.1, n_a)) / n_a + (shared + own_a) / n_a
                b = (item_b + rng.normal(0, 0.1, n_b)) / n_b + (shared + own_b) / n_b
                rows.append(np.concatenate([a, -b]))
            matrices[cell] = np.vstack(rows)
        inference = contrast_inference(matrices, {"x": 1.0, "y": -1.0}, n_draws=2000, rng=rep, item_blocks=blocks)
        rejections += inference.p_value < 0.05
        covered += inference.ci_low <= 0 <= inference.ci_high
    assert 0.02 <= rejections / reps <= 0.085
    assert 0.915 <= covered / reps <= 0.98


def test_slope_scales_rescale_the_weights():
    """Per e-fold = per doubling / ln 2; linear: per unit of the axis (OLS on the raw values)."""
    def weights(scale):
        claim = {**CLAIM, "slope": {"axis": "max_steps", "from": 100, "scale": scale}}
        spec = load_study(study(STEPS, [claim]))
        return {spec.cells()[c]["max_steps"]: w for c, w in claim_cell_weights(spec, spec.claims[0]).items()}

    log2, log = weights("log2"), weights("log")
    assert log == pytest.approx({x: w / np.log(2) for x, w in log2.items()})
    x = np.array([100, 200, 400, 800], dtype=float)
    assert list(weights("linear").values()) == pytest.approx((x - x.mean()) / ((x - x.mean()) ** 2).sum())
