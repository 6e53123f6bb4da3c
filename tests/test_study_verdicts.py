"""Claims in study YAMLs -> verdict.csv and the verdict table of report.md, without Ray.

Results are written through the study's own ResultStore (trials table + per-query parquet +
zero-shot files, the storage contract of study/results.py); expected numbers are computed
here with plain pandas and statsmodels, not by the code under test.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml
from statsmodels.stats.multitest import multipletests

from study.report import build_reports
from study.results import ResultStore
from study.spec import STUDIES_DIR, StudyConfigError, dump_study, load_study

LANGS = ["en", "th", "el", "hi", "tr", "vi"]
ITEMS = [f"q{i}" for i in range(80)]


def per_query_rows(rng, cross_shift=0.0, mono_shift=0.0, bias=10.0) -> pd.DataFrame:
    """LAReQA-shaped per-query rows for 3 languages; th has fewer queries (uneven cells)."""
    item_effect = dict(zip(ITEMS, rng.uniform(0.2, 0.7, len(ITEMS))))
    rows = []
    for q in LANGS:
        items = ITEMS[:60] if q == "th" else ITEMS
        for setting, cands in (("mono", [q]), ("cross", [c for c in LANGS if c != q]), ("multi", ["all"])):
            for c in cands:
                for item in items:
                    shift = {"mono": mono_shift, "cross": cross_shift, "multi": cross_shift}[setting]
                    ap = float(np.clip(item_effect[item] + shift + rng.normal(0, 0.05), 0, 1))
                    rows.append({"dataset": "xquad-r", "setting": setting, "query_lang": q, "candidate_lang": c,
                                 "query_id": item, "ap": ap, "r@1": float(ap > 0.5), "ndcg@10": ap,
                                 "r@10": 1.0, "rank_distance": bias + rng.normal(0, 1) if setting == "multi" else np.nan})
    return pd.DataFrame(rows)


def macro(frame: pd.DataFrame, setting: str, measure: str) -> float:
    """The LAReQA summary value, computed independently: mean over cells of cell means."""
    rows = frame[frame.setting == setting]
    keys = ["query_lang"] if measure == "rank_distance" else ["query_lang", "candidate_lang"]
    return float(rows.groupby(keys)[measure].mean().mean())


def stored_matrices(frame: pd.DataFrame) -> dict:
    """The per-language-pair matrices the driver stores next to a trial (column layout)."""
    pairs = frame[frame.setting.isin(["mono", "cross"])].groupby(["query_lang", "candidate_lang"])["ap"].mean()
    multi = frame[frame.setting == "multi"].groupby("query_lang")[["ap", "rank_distance"]].mean()
    return {"xquad-r": {"map": pairs.unstack("candidate_lang").to_dict(),
                        "multilingual": multi.rename(columns={"ap": "map"}).to_dict()}}


# The verdict machinery on a ratio-shaped study evaluated on XQuAD-R alone, with claims on the
# overall means, the rank distance and the worst of five languages: the shipped ratio.yaml with
# its evaluation and claims replaced (the shipped study evaluates AfriQA and FLORES too).
RATIO_XQUAD_CLAIMS = [
    {"id": "hybrid-beats-xx-cross", "statement": "s", "dataset": "xquad-r", "setting": "cross", "measure": "ap",
     "compare": {"a": {"batching.alpha": 0.5}, "b": {"batching.alpha": 1.0}}, "direction": "greater"},
    {"id": "hybrid-beats-xx-multi", "statement": "s", "dataset": "xquad-r", "setting": "multi", "measure": "ap",
     "compare": {"a": {"batching.alpha": 0.5}, "b": {"batching.alpha": 1.0}}, "direction": "greater"},
    {"id": "hybrid-beats-xy-mono", "statement": "s", "dataset": "xquad-r", "setting": "mono", "measure": "ap",
     "compare": {"a": {"batching.alpha": 0.5}, "b": {"batching.alpha": 0.0}}, "direction": "greater"},
    {"id": "hybrid-less-language-bias", "statement": "s", "dataset": "xquad-r", "setting": "multi",
     "measure": "rank_distance", "compare": {"a": {"batching.alpha": 0.5}, "b": {"batching.alpha": 1.0}},
     "direction": "less"},
    {"id": "hybrid-lifts-worst-low-resource-language", "statement": "s", "dataset": "xquad-r", "setting": "cross",
     "measure": "ap", "worst_language": ["th", "hi", "el", "tr", "vi"],
     "compare": {"a": {"batching.alpha": 0.5}, "b": {"batching.alpha": 1.0}}, "direction": "greater"},
]


def ratio_xquad() -> dict:
    raw = yaml.safe_load((STUDIES_DIR / "ratio.yaml").read_text())
    raw["evaluation"]["final"] = [{"dataset": "xquad-r"}]
    raw["report"]["low_resource_languages"] = ["th", "hi", "el", "tr", "vi"]
    raw["claims"] = copy.deepcopy(RATIO_XQUAD_CLAIMS)
    return raw


def _trial(spec, trial_id, cell, phase, seed=None):
    row = {"trial_id": trial_id, "status": "completed", "phase": phase, "cell": cell, "seed": seed,
           "inter/cross_map": 0.3, "final/xquad-r/cross_map": 0.3}
    row.update({f"axis/{k}": v for k, v in spec.cells()[cell].items()})
    return row


@pytest.fixture
def ratio_study(tmp_path):
    spec = load_study(ratio_xquad(), ["axes.batching.alpha=[0.0, 0.5, 1.0]", "report.low_resource_languages=[th, el]"])
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    # (mono of alpha 0.5 vs 0 has no true difference: inconclusive but in 5% of draws, this is one of the 95%)
    rng = np.random.default_rng(1)
    # alpha 0.5 is clearly better cross-lingually than 1.0 and less biased; mono equal to alpha 0
    effects = {0.0: dict(cross_shift=0.05), 0.5: dict(cross_shift=0.05, bias=6.0), 1.0: dict(cross_shift=-0.05)}
    frames = {}
    for cell, axes in enumerate(spec.cells()):
        alpha = axes["batching.alpha"]
        store.append_trial(_trial(spec, f"search{cell}", cell, "search"))  # superseded by the seed re-runs
        for seed in (1, 2, 3):
            trial_id = f"a{cell}s{seed}"
            frames[(alpha, seed)] = per_query_rows(rng, **effects[alpha])
            store.write_per_query(trial_id, frames[(alpha, seed)])
            store.append_trial(_trial(spec, trial_id, cell, "seeds", seed=seed), stored_matrices(frames[(alpha, seed)]))
    zero = per_query_rows(rng, cross_shift=-0.2)
    metrics = {f"final/xquad-r/{s}_map": macro(zero, s, "ap") for s in ("mono", "cross", "multi")}
    metrics["final/xquad-r/rank_distance"] = macro(zero, "multi", "rank_distance")
    store.write_zero_shot("tiny zero-shot model", metrics, zero)
    return tmp_path, frames, zero


def test_verdicts_of_the_ratio_claims(ratio_study):
    study_dir, frames, _ = ratio_study
    out = build_reports(study_dir)
    verdicts = pd.read_csv(out / "verdict.csv").set_index("claim")
    assert list(verdicts.index) == ["hybrid-beats-xx-cross", "hybrid-beats-xx-multi", "hybrid-beats-xy-mono",
                                    "hybrid-less-language-bias", "hybrid-lifts-worst-low-resource-language"]

    def seed_mean(alpha, setting, measure):
        return np.mean([macro(frames[(alpha, s)], setting, measure) for s in (1, 2, 3)])

    def worst_mean(alpha):  # per run the minimum over the languages of the pairs involving each
        def involving(frame, lang):
            return frame[(frame.query_lang == lang) | (frame.candidate_lang == lang)]
        return np.mean([min(macro(involving(frames[(alpha, s)], lang), "cross", "ap")
                            for lang in ("th", "hi", "el", "tr", "vi")) for s in (1, 2, 3)])

    expected = {
        "hybrid-beats-xx-cross": seed_mean(0.5, "cross", "ap") - seed_mean(1.0, "cross", "ap"),
        "hybrid-beats-xx-multi": seed_mean(0.5, "multi", "ap") - seed_mean(1.0, "multi", "ap"),
        "hybrid-beats-xy-mono": seed_mean(0.5, "mono", "ap") - seed_mean(0.0, "mono", "ap"),
        "hybrid-less-language-bias": seed_mean(0.5, "multi", "rank_distance") - seed_mean(1.0, "multi", "rank_distance"),
        "hybrid-lifts-worst-low-resource-language": worst_mean(0.5) - worst_mean(1.0),
    }
    for claim, value in expected.items():
        assert verdicts.loc[claim, "estimate"] == pytest.approx(value, abs=1e-12)
        assert verdicts.loc[claim, "n_items"] == len(ITEMS) and verdicts.loc[claim, "min_seeds"] == 3
    assert verdicts.loc["hybrid-beats-xx-cross", "verdict"] == "supported"
    assert verdicts.loc["hybrid-less-language-bias", "verdict"] == "supported"
    assert verdicts.loc["hybrid-lifts-worst-low-resource-language", "verdict"] == "supported"
    assert verdicts.loc["hybrid-beats-xy-mono", "verdict"] == "inconclusive"
    assert "CI includes 0" in verdicts.loc["hybrid-beats-xy-mono", "reason"]
    assert verdicts["p_holm"].to_numpy() == pytest.approx(multipletests(verdicts["p_value"], method="holm")[1])
    report = (out / "report.md").read_text()
    assert report.index("## Verdicts") < report.index("## Deviations")
    assert "| **hybrid-beats-xx-cross**" in report and "80 x 3" in report
    assert "nan" not in report.split("## Deviations")[0]


def test_zero_shot_row_and_change_against_it(ratio_study):
    study_dir, frames, zero = ratio_study
    out = build_reports(study_dir)
    ratio = pd.read_csv(out / "ratio.csv")
    zero_row = ratio[ratio["run"] == "zero-shot"].iloc[0]
    # a language's value: the macro over the cross-lingual pairs involving it (as its side or the other)
    th_pairs = zero[(zero.setting == "cross") & ((zero.query_lang == "th") | (zero.candidate_lang == "th"))]
    th_cross = th_pairs.groupby(["query_lang", "candidate_lang"])["ap"].mean().mean()
    assert zero_row["cross_map/th"] == pytest.approx(th_cross)
    trained = ratio[ratio["run"] == "trained"]
    assert trained["mean_delta_vs_zero_shot"].tolist() == pytest.approx(
        (trained["mean"] - zero_row["mean"]).tolist())
    assert len(trained) == 3
    assert "tiny zero-shot model" in (out / "report.md").read_text()


def test_one_run_per_cell_is_inconclusive_and_says_why(tmp_path):
    spec = load_study(ratio_xquad(), ["axes.batching.alpha=[0.0, 0.5, 1.0]"])
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    rng = np.random.default_rng(1)
    for cell, axes in enumerate(spec.cells()):
        store.write_per_query(f"t{cell}", per_query_rows(rng, cross_shift=0.3 if axes["batching.alpha"] == 0.5 else 0))
        store.append_trial(_trial(spec, f"t{cell}", cell, "search"))
    out = build_reports(tmp_path)
    verdicts = pd.read_csv(out / "verdict.csv").set_index("claim")
    row = verdicts.loc["hybrid-beats-xx-cross"]
    assert row["verdict"] == "inconclusive" and "seed-to-seed spread unknown" in row["reason"]
    # no interval over questions alone: with 1 seed the seed-to-seed variance is unknown, an
    # interval without it would be too narrow (docs/metrics.md)
    assert np.isnan(row["ci_low"]) and row["ci"] == "no interval (1 seed per cell: seed-to-seed variance unknown)"
    assert np.isnan(row["p_value"]) and row["estimate"] > 0.1
    assert "seed-to-seed spread unknown" in (out / "report.md").read_text()


def test_claims_outside_an_overridden_grid_are_reported_not_tested(tmp_path):
    spec = load_study(ratio_xquad(), ["axes.batching.alpha=[0.0, 1.0]"])
    assert all(claim.untestable for claim in spec.claims if "hybrid" in claim.id)
    dump_study(spec, tmp_path / "study.yaml")
    assert load_study(tmp_path / "study.yaml").claims[0].untestable  # the frozen study keeps the reason
    store = ResultStore(tmp_path)
    store.append_trial(_trial(spec, "t0", 0, "search"))
    out = build_reports(tmp_path)
    verdicts = pd.read_csv(out / "verdict.csv")
    assert set(verdicts["verdict"]) == {"not tested"}
    assert verdicts["reason"].str.contains("batching.alpha=0.5 is not a value").all()


def test_missing_per_query_results_are_named(tmp_path):
    spec = load_study(ratio_xquad(), ["axes.batching.alpha=[0.0, 0.5, 1.0]"])
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    for cell in range(3):
        store.append_trial(_trial(spec, f"t{cell}", cell, "search"))
    verdicts = pd.read_csv(build_reports(tmp_path) / "verdict.csv")
    assert (verdicts["verdict"] == "not tested").all()
    assert verdicts["reason"].str.contains("per_query").all()


def test_batch_claim_compares_recommended_with_best(tmp_path):
    spec = load_study("batch", ["axes.data.num_languages=[5]", "axes.batching.batch_size=[16, 32, 64]",
                                "evaluation.final=[{dataset: xquad-r}]", "search.seeds=2"])
    claims = {claim.id: claim for claim in spec.claims}
    assert claims["recommended-batch-within-margin-mlqa"].untestable  # mlqa-r not evaluated in this run
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    rng = np.random.default_rng(2)
    # batch 64 has the best accuracy, 32 is within tolerance and cheaper: recommended
    accuracy = {16: 0.30, 32: 0.395, 64: 0.40}
    per_query_shift = {16: -0.1, 32: -0.03, 64: 0.0}  # so that 64 is also best on the per-query rows
    for cell, axes in enumerate(spec.cells()):
        batch = axes["batching.batch_size"]
        for seed in (1, 2):
            trial_id = f"b{batch}s{seed}"
            row = _trial(spec, trial_id, cell, "seeds", seed=seed)
            row.update({"final/xquad-r/cross_map": accuracy[batch], "final/xquad-r/multi_map": 0.2,
                        "train/cost/flops_trained": 1e12 + batch, "train/pairs_per_s_overall": 1.0})
            store.write_per_query(trial_id, per_query_rows(rng, cross_shift=per_query_shift[batch]))
            store.append_trial(row)
    out = build_reports(tmp_path)
    assert pd.read_csv(out / "batch_recommendation.csv")["recommended_batch_size"].tolist() == [32]
    verdicts = pd.read_csv(out / "verdict.csv").set_index("claim")
    row = verdicts.loc["recommended-batch-within-margin-xquad"]
    assert row["cells"] == "(data.num_languages=5, batching.batch_size=32) - (data.num_languages=5, batching.batch_size=64)"
    assert row["estimate"] < 0 and row["verdict"] in ("contradicted", "inconclusive")
    assert row["margin"] == spec.report.accuracy_tolerance
    assert verdicts.loc["recommended-batch-within-margin-mlqa", "verdict"] == "not tested"


BASE = ratio_xquad()


def with_claim(**changes) -> dict:
    raw = copy.deepcopy(BASE)
    claim = {**raw["claims"][0], **changes}
    raw["claims"] = [claim]
    return raw


@pytest.mark.parametrize("changes,needle", [
    ({"compare": {"a": {"batching.alpha": 0.3}, "b": {"batching.alpha": 1.0}}}, "batching.alpha=0.3 is not a value"),
    ({"compare": {"a": {"batching.alfa": 0.5}, "b": {"batching.alpha": 1.0}}}, "'batching.alfa' is not an axis"),
    ({"dataset": "mlqa-r"}, "claims[0] (hybrid-beats-xx-cross).dataset"),
    ({"measure": "map"}, "claims.0.measure"),
    ({"setting": "cross", "measure": "rank_distance"}, "rank_distance exists in setting 'multi' only"),
    ({"slope": {"axis": "batching.alpha", "from": 0.5}}, "exactly one of 'compare', 'slope' or 'contrast'"),
    ({"margin": 0.01}, "'margin' applies to direction 'equivalent' only"),
    ({"compare": {"a": {"batching.alpha": "recommended"}, "b": {"batching.alpha": 1.0}}}, "'recommended'"),
    ({"compare": {"a": {"batching.alpha": 0.5}, "b": {"batching.alpha": 0.5}}}, "select the same cells"),
    ({"typo": 1}, "claims.0.typo"),
])
def test_bad_claims_are_rejected_naming_the_field(changes, needle):
    with pytest.raises(StudyConfigError) as info:
        load_study(with_claim(**changes))
    assert needle in str(info.value)


def test_slope_claim_needs_two_axis_values_from_its_start():
    raw = yaml.safe_load((STUDIES_DIR / "languages.yaml").read_text())
    raw["axes"]["data.num_languages"] = [5, 10, 40]
    with pytest.raises(StudyConfigError, match="fewer than 2 values"):
        load_study(raw)


def test_a_fixed_configuration_counts_its_search_trial_as_the_base_seed(tmp_path):
    """The default study tunes nothing: its search trial (base seed) and its seed re-runs are
    seeds of one configuration (4 in all), paired by seed across cells."""
    from study.questions.common import ReportContext, representative_trials
    from study.verdicts import compute_verdicts

    spec = load_study("default")
    assert not spec.tune and spec.search.seeds == 3
    base = spec.train_config({}).seed
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    rng = np.random.default_rng(1)
    shifts = {0.0: 0.0, 0.5: 0.08, 1.0: -0.08}
    for cell, axes in enumerate(spec.cells()):
        for phase, seed in [("search", None)] + [("seeds", base + k) for k in (1, 2, 3)]:
            trial_id = f"c{cell}{phase}{seed}"
            frame = per_query_rows(rng, cross_shift=shifts[axes["batching.alpha"]])
            store.write_per_query(trial_id, frame)
            store.append_trial(_trial(spec, trial_id, cell, phase, seed=seed), stored_matrices(frame))
    ctx = ReportContext(spec, store, store.trials(), store.history(), tmp_path / "reports")
    assert {cell: len(rows) for cell, rows in representative_trials(ctx).items()} == {0: 4, 1: 4, 2: 4}
    verdicts = compute_verdicts(ctx).set_index("claim")
    row = verdicts.loc["hybrid-beats-xx-cross"]
    assert row["min_seeds"] == 4 and row["max_seeds"] == 4
    assert all(f"seed {base + k}" in row["per_seed_contrasts"] for k in range(4))
    assert row["verdict"] == "supported"


def test_report_plots_claims_and_cells_not_a_one_point_learning_curve(ratio_study):
    study_dir, _, _ = ratio_study
    store = ResultStore(study_dir)
    # one intermediate evaluation per trial (the default study's cadence): not a curve
    for trial_id in store.trials()["trial_id"]:
        store.append_history({"trial_id": trial_id, "cell": 0, "study_step": 40, "inter/cross_map": 0.3})
    out = build_reports(study_dir)
    assert not (out / "learning_curves.png").exists()
    report = (out / "report.md").read_text()
    for name in ("claims_forest.png", "cells_with_ci.png"):
        assert (out / name).stat().st_size > 0 and f"({name})" in report
