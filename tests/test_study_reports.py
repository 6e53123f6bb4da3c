"""Report builders on a results directory written through the study's own ResultStore.

Expected rows are derived independently from the inputs (numpy.polyfit, scipy's t
interval, brute-force Pareto dominance), never copied from the code under test.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from scipy import stats

from study.report import build_reports
from study.questions.common import fit_slope, mean_ci, pareto_mask
from study.results import ResultStore
from study.spec import dump_study, load_study


def test_fit_slope_matches_polyfit_and_linregress():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 90, 12)
    y = 0.3 - 0.002 * x + rng.normal(0, 0.01, 12)
    fit = fit_slope(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    reg = stats.linregress(x, y)
    half = stats.t.ppf(0.975, len(x) - 2) * reg.stderr
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(intercept)
    assert (fit["slope_ci_low"], fit["slope_ci_high"]) == pytest.approx((reg.slope - half, reg.slope + half))
    assert np.isnan(fit_slope([1, 1], [2, 3])["slope"])


def test_mean_ci_matches_t_interval():
    values = [0.31, 0.35, 0.29, 0.33]
    mean, low, high, n = mean_ci(values + [float("nan")])
    expected = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (mean, n) == (pytest.approx(np.mean(values)), 4)
    assert (low, high) == pytest.approx(expected)
    assert np.isnan(mean_ci([0.5])[1])


def test_pareto_mask_matches_brute_force():
    rng = np.random.default_rng(1)
    gain, cost = rng.integers(0, 6, 40).astype(float), rng.integers(0, 6, 40).astype(float)
    expected = [
        not any(gain[j] >= gain[i] and cost[j] <= cost[i] and (gain[j] > gain[i] or cost[j] < cost[i])
                for j in range(len(gain)))
        for i in range(len(gain))
    ]
    assert pareto_mask(gain, cost).tolist() == expected


def _trial(spec, trial_id, cell, phase, metrics, seed=None, tuned=None):
    row = {"trial_id": trial_id, "status": "completed", "phase": phase, "cell": cell, "seed": seed}
    row.update({f"axis/{k}": v for k, v in (spec.cells()[cell]).items()})
    row.update({f"tuned/{k}": v for k, v in (tuned or {}).items()})
    row.update(metrics)
    return row


def test_languages_report_change_and_slope(tmp_path):
    spec = load_study("languages", ["axes.data.num_languages=[10, 40, 60, 80]"])
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    rng = np.random.default_rng(2)
    truth = {}
    for cell, cell_axes in enumerate(spec.cells()):
        n = cell_axes["data.num_languages"]
        # a pruned-for-seeds search trial: must be ignored once seed re-runs exist
        store.append_trial(_trial(spec, f"s{cell}", cell, "search", {"inter/cross_map": 0.5,
                                                                      "final/xquad-r/cross_map": 0.99}))
        for seed in range(3):
            values = {"xquad-r": 0.40 - 0.001 * max(n - 40, 0) + rng.normal(0, 0.005),
                      "mlqa-r": 0.30 - 0.002 * max(n - 40, 0) + rng.normal(0, 0.005)}
            metrics = {}
            for dataset, value in values.items():
                truth[(n, dataset, seed)] = value
                metrics.update({f"final/{dataset}/cross_map": value, f"final/{dataset}/cross_f1@10": value / 5,
                                f"final/{dataset}/multi_map": value / 2})
            store.append_trial(_trial(spec, f"r{cell}{seed}", cell, "seeds", metrics, seed=seed + 1))
    out = build_reports(tmp_path)
    table = pd.read_csv(out / "languages.csv")
    slopes = pd.read_csv(out / "languages_slope.csv")
    for dataset in ("xquad-r", "mlqa-r"):
        means = {n: np.mean([truth[(n, dataset, s)] for s in range(3)]) for n in (10, 40, 60, 80)}
        rows = table[table["dataset"] == dataset].set_index("num_languages")
        for n, mean in means.items():
            assert rows.loc[n, "cross_map"] == pytest.approx(mean)
            assert rows.loc[n, "cross_map_change_vs_ref"] == pytest.approx(mean - means[40])
        xs = [n - 40 for n in (40, 60, 80) for _ in range(3)]
        ys = [truth[(n, dataset, s)] for n in (40, 60, 80) for s in range(3)]
        slope = slopes[(slopes["dataset"] == dataset) & (slopes["metric"] == "cross_map")].iloc[0]
        assert slope["slope"] == pytest.approx(np.polyfit(xs, ys, 1)[0])
        assert slope["slope_ci_low"] < slope["slope"] < slope["slope_ci_high"]
    assert (out / "languages_cross_map.png").stat().st_size > 0
    assert "NTREX-128" in (out / "report.md").read_text()


def test_languages_report_proves_the_dilution_from_the_recorded_exposure(tmp_path):
    """languages_exposure.csv: per count, the evaluation languages' share of the training texts
    computed from train/exposure/* (not from the design), and the report.md line stating it."""
    spec = load_study("languages", ["axes.data.num_languages=[4, 8]", "evaluation.final=[{dataset: xquad-r, languages: [de, ar]}]",
                                    "claims=[]", "tune={}", "search.samples_per_cell=1"])
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    langs = ["en", "ar", "de", "el", "es", "hi", "ru", "th"]
    expected_share = {}
    for cell, axes in enumerate(spec.cells()):
        n = axes["data.num_languages"]
        for seed in range(2):
            metrics = {"inter/cross_map": 0.5, "final/xquad-r/cross_map": 0.4}
            if n == 4 or seed == 0:  # the 8-language cell: one trial predates the exposure record
                texts_eval = total = 0
                for k, lang in enumerate(langs[:n]):
                    # X-X pairs count twice (query and passage); X-Y pairs once per side
                    counts = {"xx_batches": 1, "xx_pairs": 4 + k + seed, "xy_query_pairs": 3 + k, "xy_passage_pairs": 2 + seed}
                    metrics.update({f"train/exposure/{lang}/{f}": v for f, v in counts.items()})
                    total += counts["xx_pairs"] + counts["xy_query_pairs"]
                    if lang in ("de", "ar"):
                        texts_eval += 2 * counts["xx_pairs"] + counts["xy_query_pairs"] + counts["xy_passage_pairs"]
                expected_share.setdefault(n, []).append(texts_eval / (2 * total))
            store.append_trial(_trial(spec, f"t{cell}{seed}", cell, "search" if seed == 0 else "seeds", metrics,
                                      seed=None if seed == 0 else seed))
    out = build_reports(tmp_path)
    exposure = pd.read_csv(out / "languages_exposure.csv").set_index("num_languages")
    assert list(exposure.index) == [4, 8]
    assert exposure.loc[4, "n_trials_with_exposure"] == 2 and exposure.loc[8, "n_trials_with_exposure"] == 1
    for n in (4, 8):
        assert exposure.loc[n, "eval_languages_text_share"] == pytest.approx(np.mean(expected_share[n]))
        assert exposure.loc[n, "even_spread_share"] == pytest.approx(2 / n)
        assert exposure.loc[n, "languages_with_exposure"] == n
    assert exposure.loc[4, "evaluation_languages"] == "de ar"
    report = (out / "report.md").read_text()
    assert "Recorded exposure" in report and "falls" in report
    assert f"4: {100 * np.mean(expected_share[4]):.1f}%" in report


def test_batch_report_frontier_and_recommendation(tmp_path):
    spec = load_study("batch", ["axes.data.num_languages=[5, 20]", "axes.batching.batch_size=[16, 32, 64, 128]"])
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    rng = np.random.default_rng(3)
    points = {}
    for cell, axes in enumerate(spec.cells()):
        acc, cost = float(rng.uniform(0.2, 0.4)), float(rng.uniform(100, 400))
        points[(axes["data.num_languages"], axes["batching.batch_size"])] = (acc, cost)
        store.append_trial(_trial(spec, f"t{cell}", cell, "search", {
            "inter/cross_map": acc, "final/xquad-r/cross_map": acc, "final/xquad-r/multi_map": acc / 2,
            "final/mlqa-r/cross_map": acc, "final/mlqa-r/multi_map": acc / 2,
            "train/pairs_per_s_overall": 10.0, "wall_time_s": 1.0, "worker_seconds": 1.0,  # wall time: not the cost
            "train/cost/flops_trained": cost * 1e9, "train/cost/flops": cost * 2e9, "train/cost/cpu_s": cost}))
    out = build_reports(tmp_path)
    table = pd.read_csv(out / "batch_frontier.csv")
    recommendation = pd.read_csv(out / "batch_recommendation.csv").set_index("num_languages")
    for langs in (5, 20):
        mine = {b: points[(langs, b)] for b in (16, 32, 64, 128)}
        front = {b for b, (a, c) in mine.items()
                 if not any(a2 >= a and c2 <= c and (a2 > a or c2 < c) for a2, c2 in mine.values())}
        rows = table[table["num_languages"] == langs]
        assert set(rows[rows["on_front"]]["batch_size"]) == front
        best = max(mine[b][0] for b in front)
        eligible = [b for b in front if mine[b][0] >= best - 0.01]
        pick = min(eligible, key=lambda b: mine[b][1])
        assert recommendation.loc[langs, "recommended_batch_size"] == pick
        assert recommendation.loc[langs, "cost_measure"] == "flops_trained"
        assert recommendation.loc[langs, "cost"] == pytest.approx(mine[pick][1] * 1e9)
        assert rows[rows["recommended"]]["batch_size"].tolist() == [pick]
        # the trade-off per run: multilingual minus cross-lingual mAP (here -acc / 2)
        for _, row in rows.iterrows():
            acc = mine[int(row["batch_size"])][0]
            assert row["xquad-r_multi_minus_cross_map"] == pytest.approx(-acc / 2)
            assert row["pairs_seen"] == spec.base_config.max_pairs == row["steps"] * row["batch_size"]
    tradeoff = pd.read_csv(out / "batch_tradeoff.csv").set_index("num_languages")
    assert tradeoff.loc[5, "xquad-r_multi_minus_cross_map"] == pytest.approx(
        np.mean([-points[(5, b)][0] / 2 for b in (16, 32, 64, 128)]))
    assert (out / "batch_frontier.png").stat().st_size > 0
    assert (out / "batch_tradeoff.png").stat().st_size > 0
    # the frontier table in report.md: one row per cell (one run each here: no interval)
    report = (out / "report.md").read_text()
    for (langs, batch), (acc, cost) in points.items():
        steps = spec.base_config.max_pairs // batch
        cell_row = table[(table["num_languages"] == langs) & (table["batch_size"] == batch)].iloc[0]
        line = (f"| {langs} | {batch} | {steps} | {spec.base_config.max_pairs:,} | 1 | {acc:.4f} | {-acc / 2:.4f} "
                f"| {cost * 1e9 / 1e12:.2f} | {cost * 2e9 / 1e12:.2f} | {cost:.0f} "
                f"| {'yes' if cell_row['on_front'] else ''} | {'yes' if cell_row['recommended'] else ''} |")
        assert line in report, line


def _matrices(values: dict[str, dict[str, float]], multi: dict[str, float]) -> dict:
    langs = list(values)
    table = {c: {q: values[q][c] for q in langs} for c in langs}  # DataFrame.to_json column layout
    return {"xquad-r": {"map": table, "ndcg@10": table,
                        "multilingual": {"map": multi, "rank_distance": {l: 10.0 for l in langs}}}}


def test_ratio_report_worst_language_and_spread(tmp_path):
    """Per language: the cross-lingual mAP of the pairs involving it (the worst-language claims'
    statistic), from the stored per-query rows; worst language, spread, and the resource table."""
    from tests.test_study_verdicts import per_query_rows, ratio_xquad

    spec = load_study(ratio_xquad(), ["axes.batching.alpha=[0.0, 1.0]", "report.low_resource_languages=[th, el]"])
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    expected = {}
    rng = np.random.default_rng(4)
    for cell, axes in enumerate(spec.cells()):
        frame = per_query_rows(rng, cross_shift=0.1 * cell)
        cross = frame[frame.setting == "cross"]
        expected[axes["batching.alpha"]] = {
            lang: cross[(cross.query_lang == lang) | (cross.candidate_lang == lang)]
            .groupby(["query_lang", "candidate_lang"])["ap"].mean().mean() for lang in ("th", "el")}
        row = _trial(spec, f"t{cell}", cell, "search", {"inter/cross_map": 0.3, "final/xquad-r/cross_map": 0.3},
                     tuned={"optim.lr": 1e-4})
        store.write_per_query(f"t{cell}", frame)
        store.append_trial(row)
    out = build_reports(tmp_path)
    table = pd.read_csv(out / "ratio.csv").set_index("alpha")
    for alpha, cross in expected.items():
        worst = min(cross, key=cross.get)
        assert table.loc[alpha, "worst_language"] == worst
        assert table.loc[alpha, "worst"] == pytest.approx(cross[worst])
        assert table.loc[alpha, "spread_max_minus_min"] == pytest.approx(max(cross.values()) - min(cross.values()))
    # the criterion: XQuAD-R has no language of Joshi et al. classes 0-2; th and el are class 3
    levels = pd.read_csv(out / "ratio_resource_levels.csv").set_index("language")
    assert not levels["low_resource"].any() and levels.loc["th", "joshi_class"] == 3
    report = (out / "report.md").read_text()
    assert "Joshi et al. 2020" in report and "xquad-r: meet it: none" in report


def _low_resource_rows(rng, alpha: float) -> pd.DataFrame:
    """Per-query rows of the shipped ratio study's three final sets: XQuAD-R (en/el/th), AfriQA
    (African-language queries -> en, fon -> fr) and FLORES bitext (en <-> each language, both
    directions); cross-lingual values fall with alpha."""
    rows = []
    for q in ("en", "el", "th"):
        for c in [x for x in ("en", "el", "th") if x != q]:
            for i in range(40):
                rows.append({"dataset": "xquad-r", "setting": "cross", "query_lang": q, "candidate_lang": c,
                             "query_id": f"x{i}", "ap": float(np.clip(0.5 - 0.1 * alpha + rng.normal(0, 0.05), 0, 1))})
    for lang in ("fon", "ha", "ig", "rw", "sw", "tw", "yo", "zu"):
        for i in range(30):
            rows.append({"dataset": "afriqa", "setting": "cross", "query_lang": lang,
                         "candidate_lang": "fr" if lang == "fon" else "en", "query_id": f"{lang}{i}",
                         "ap": float(np.clip(0.3 - 0.1 * alpha + rng.normal(0, 0.05), 0, 1))})
    for lang in ("am", "fon", "ha", "ig", "rw", "so", "sw", "tw", "yo", "zu"):
        for i in range(30):
            for q, c in (("en", lang), (lang, "en")):
                correct = float(rng.uniform() < 0.6 - 0.2 * alpha)
                rows.append({"dataset": "flores", "setting": "bitext", "query_lang": q, "candidate_lang": c,
                             "query_id": f"f{i}", "correct@1": correct, "ap": correct, "rank": 1.0})
    return pd.DataFrame(rows)


def test_ratio_report_and_claims_on_afriqa_and_flores(tmp_path):
    """The shipped ratio study's local design end to end on synthetic per-query rows: every claim
    (AfriQA, FLORES bitext, XQuAD-R; trends, worst language) gets a verdict, the report follows
    each language on its sets (bitext accuracy on FLORES) and lists who meets the criterion."""
    spec = load_study("ratio", profile="local")
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    rng = np.random.default_rng(5)
    frames = {}
    for cell, axes in enumerate(spec.cells()):
        for seed in (1, 2):
            trial_id = f"a{cell}s{seed}"
            frames[trial_id] = _low_resource_rows(rng, axes["batching.alpha"])
            store.write_per_query(trial_id, frames[trial_id])
            store.append_trial(_trial(spec, trial_id, cell, "seeds" if seed > 1 else "search",
                                      {"inter/accuracy": 0.5}, seed=seed))
    out = build_reports(tmp_path)
    verdicts = pd.read_csv(out / "verdict.csv").set_index("claim")
    assert list(verdicts.index) == [claim.id for claim in spec.claims]
    assert not (verdicts["verdict"] == "not tested").any(), verdicts["reason"].to_dict()
    for claim in ("afriqa-cross-trend", "flores-bitext-trend", "xquad-el-th-cross-trend"):
        assert verdicts.loc[claim, "estimate"] < 0
    table = pd.read_csv(out / "ratio.csv")
    flores = table[(table["dataset"] == "flores") & (table["alpha"] == 0.0)].iloc[0]
    assert flores["metric"] == "bitext_accuracy"
    sw = [f[(f.dataset == "flores") & ((f.query_lang == "sw") | (f.candidate_lang == "sw"))]
          .groupby(["query_lang", "candidate_lang"])["correct@1"].mean().mean() for f in (frames["a0s1"], frames["a0s2"])]
    assert flores["bitext_accuracy/sw"] == pytest.approx(np.mean(sw))
    levels = pd.read_csv(out / "ratio_resource_levels.csv")
    afriqa = levels[levels["dataset"] == "afriqa"]
    assert afriqa["low_resource"].all() and set(afriqa["language"]) == {"fon", "ha", "ig", "rw", "sw", "tw", "yo", "zu"}
    report = (out / "report.md").read_text()
    assert "low-resource = class 0-2" in report and "xquad-r: meet it: none" in report
    assert "Followed but NOT low-resource by this criterion" in report and "el (class 3" in report


def test_scale_report_gain_of_hybrid_per_rung(tmp_path):
    """Q4: per rung of the depth ladder, hybrid minus X-X (cross mAP) and minus X-Y (mono mAP)
    with a Welch interval over the cells' seeds, computed here with scipy."""
    spec = load_study("scale", profile="local")
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    rng = np.random.default_rng(6)
    values = {}
    for cell, axes in enumerate(spec.cells()):
        layers, mode = axes["model.num_layers"], axes["batching.mode"]
        for seed in (1, 2, 3):
            cross = 0.3 + 0.01 * layers + (0.002 * layers if mode == "hybrid" else 0) + rng.normal(0, 0.005)
            mono = 0.5 + (0.001 * layers if mode == "hybrid" else 0) + rng.normal(0, 0.005)
            values.setdefault((layers, mode), []).append((cross, mono))
            metrics = {"inter/cross_map": 0.3}
            for dataset in ("xquad-r", "mlqa-r"):
                metrics.update({f"final/{dataset}/cross_map": cross, f"final/{dataset}/mono_map": mono,
                                f"final/{dataset}/multi_map": 0.2, f"final/{dataset}/rank_distance": 10.0})
            store.append_trial(_trial(spec, f"c{cell}s{seed}", cell, "seeds" if seed > 1 else "search", metrics,
                                      seed=seed))
    out = build_reports(tmp_path)
    gains = pd.read_csv(out / "scale_gain.csv")
    rows = gains[gains["dataset"] == "xquad-r"].set_index("rung")
    assert list(rows.index) == [1, 2, 3] and "4 layers" in rows.loc[1, "model"]
    for rung, layers in ((1, 4), (2, 8), (3, 12)):
        for other, index, column in (("xx", 0, "hybrid_minus_xx_cross_map"), ("xy", 1, "hybrid_minus_xy_mono_map")):
            a = [v[index] for v in values[(layers, "hybrid")]]
            b = [v[index] for v in values[(layers, other)]]
            welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
            assert rows.loc[rung, column] == pytest.approx(np.mean(a) - np.mean(b))
            assert (rows.loc[rung, f"{column}_ci_low"], rows.loc[rung, f"{column}_ci_high"]) == pytest.approx(
                (welch.low, welch.high))
    table = pd.read_csv(out / "scale.csv")
    assert set(table["rung"]) == {1, 2, 3}
    assert (out / "scale_gain_xx_xquad-r.png").stat().st_size > 0
    # the findings: each rung's level averaged over the batchings, and what the untrained row is
    findings = (out / "report.md").read_text().split("## Findings", 1)[1]
    cross_4 = np.mean([v[0] for mode in ("xx", "xy", "hybrid") for v in values[(4, mode)]])
    assert f"me5-small-offline (4 layers) {cross_4:.4f}" in findings.split("xquad-r cross-lingual mAP", 1)[1]
    assert "the cut rungs are not evaluated untrained" in findings


def test_store_dedupes_rows_of_a_resumed_study(tmp_path):
    store = ResultStore(tmp_path)
    store.append_history({"trial_id": "a", "study_step": 10, "inter/cross_map": 0.1})
    store.append_history({"trial_id": "a", "study_step": 10, "inter/cross_map": 0.2})  # re-reported after resume
    store.append_history({"trial_id": "a", "study_step": 20, "inter/cross_map": 0.3})
    store.append_trial({"trial_id": "a", "status": "pruned"})
    store.append_trial({"trial_id": "a", "status": "completed"})
    with (store.dir / "trials.jsonl").open("a") as handle:
        handle.write('{"trial_id": "b", "sta')  # a line cut by a killed driver
    history = store.history()
    assert history[["study_step", "inter/cross_map"]].values.tolist() == [[10, 0.2], [20, 0.3]]
    trials = store.trials()
    assert trials["trial_id"].tolist() == ["a"] and trials["status"].tolist() == ["completed"]


def test_data_report_pairs_with_target_languages(tmp_path):
    spec = load_study("data", ["axes.data.pairs_per_target_language=[0, 100, all]", "report.target_languages=[th]"])
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    langs = ["en", "de", "th"]
    rng = np.random.default_rng(5)
    expected = {}
    for cell, axes in enumerate(spec.cells()):
        values = {q: {c: float(rng.uniform(0, 1)) for c in langs} for q in langs}
        size = axes["data.pairs_per_target_language"]
        expected[str(size)] = np.mean([values[q][c] for q in langs for c in langs if "th" in (q, c)])
        row = _trial(spec, f"t{cell}", cell, "search", {"inter/cross_ndcg@10": 0.3})
        store.append_trial(row, _matrices(values, {l: 0.5 for l in langs}))
    out = build_reports(tmp_path)
    pairs = pd.read_csv(out / "data.csv")
    # only pairs that involve the target language: 3 x 3 minus the 2 x 2 without "th"
    assert len(pairs) == 3 * 5
    assert not ((pairs["query_lang"] != "th") & (pairs["candidate_lang"] != "th")).any()
    per_target = pd.read_csv(out / "data_per_target.csv").astype({"pairs_per_target_language": str})
    got = per_target.set_index("pairs_per_target_language")["mean_ndcg@10"].to_dict()
    assert got == pytest.approx(expected)


def test_data_report_shows_the_target_languages_exposure(tmp_path):
    spec = load_study("data", ["axes.data.pairs_per_target_language=[0, 50, all]", "report.target_languages=[th]"])
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    langs = ["en", "th"]
    fields = ("xx_batches", "xx_pairs", "xy_query_pairs", "xy_passage_pairs")
    expected = {}
    for cell, axes in enumerate(spec.cells()):
        size = str(axes["data.pairs_per_target_language"])
        values = {q: {c: 0.5 for c in langs} for q in langs}
        for seed in range(2):
            metrics = {"inter/cross_ndcg@10": 0.3}
            if size != "all":  # the "all" cell stands for runs from before exposure was recorded
                counts = {field: 10 * cell + 3 * seed + k for k, field in enumerate(fields)}
                metrics.update({f"train/exposure/th/{field}": value for field, value in counts.items()})
                metrics["train/exposure/en/xx_pairs"] = 999  # not a target language: not shown
                for field, value in counts.items():
                    expected.setdefault((size, field), []).append(value)
            row = _trial(spec, f"t{cell}{seed}", cell, "seeds", metrics, seed=seed + 1)
            store.append_trial(row, _matrices(values, {l: 0.5 for l in langs}))
    out = build_reports(tmp_path)
    exposure = pd.read_csv(out / "data_exposure.csv").astype({"pairs_per_target_language": str})
    assert set(exposure["target_language"]) == {"th"}
    exposure = exposure.set_index("pairs_per_target_language")
    per_target = pd.read_csv(out / "data_per_target.csv").astype({"pairs_per_target_language": str})
    per_target = per_target.set_index("pairs_per_target_language")
    for size in ("0", "50"):
        assert exposure.loc[size, "n_trials_with_exposure"] == 2
        for field in fields:
            assert exposure.loc[size, f"exposure_{field}"] == pytest.approx(np.mean(expected[(size, field)]))
            assert per_target.loc[size, f"exposure_{field}"] == pytest.approx(np.mean(expected[(size, field)]))
    assert exposure.loc["all", "n_trials_with_exposure"] == 0
    assert exposure.loc["all", [f"exposure_{field}" for field in fields]].isna().all()
    assert "exposure_xx_pairs" in (out / "report.md").read_text()


def test_data_report_map_beside_ndcg_growth_per_doubling_and_epochs(tmp_path):
    """mAP beside nDCG@10 (per pair and per target), the per-target growth slope per doubling
    of the in-language pairs (OLS over log2 size, every trial a point, sizes > 0), the exposure's
    epochs (pairs with the language / its pairs) and the findings line that reads them."""
    spec = load_study("data", ["axes.data.pairs_per_target_language=[0, 50, 100, 200]", "report.target_languages=[th]",
                               "tune={}", "search.samples_per_cell=1", "claims=[]"])
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    langs = ["en", "th"]
    rng = np.random.default_rng(9)
    points, maps, epochs = [], {}, {}
    for cell, axes in enumerate(spec.cells()):
        size = axes["data.pairs_per_target_language"]
        for seed in range(2):
            level = 0.4 + 0.02 * np.log2(max(size, 1)) + rng.normal(0, 0.005)
            ndcg = {q: {c: level + (0.01 if q == c else 0.0) for c in langs} for q in langs}
            ap = {q: {c: level / 2 for c in langs} for q in langs}
            seen = min(size, 100)  # 200 pairs get the exposure of 100: below one epoch
            counts = {"xx_batches": 2, "xx_pairs": 3 * seen // 5, "xy_query_pairs": seen // 2, "xy_passage_pairs": seen // 4}
            metrics = {"inter/cross_ndcg@10": 0.3, **{f"train/exposure/th/{f}": v for f, v in counts.items()}}
            if size:
                points.append((size, np.mean([ndcg[q][c] for q in langs for c in langs if "th" in (q, c)])))
                epochs.setdefault(size, []).append((counts["xx_pairs"] + counts["xy_query_pairs"]
                                                    + counts["xy_passage_pairs"]) / size)
            maps.setdefault(size, []).append(np.mean([ap[q][c] for q in langs for c in langs if "th" in (q, c)]))
            table = {"map": {c: {q: ap[q][c] for q in langs} for c in langs},
                     "ndcg@10": {c: {q: ndcg[q][c] for q in langs} for c in langs}}
            store.append_trial(_trial(spec, f"t{cell}{seed}", cell, "search" if seed == 0 else "seeds", metrics,
                                      seed=None if seed == 0 else seed), {"xquad-r": table})
    out = build_reports(tmp_path)
    per_target = pd.read_csv(out / "data_per_target.csv").set_index("pairs_per_target_language")
    for size, values in maps.items():
        assert per_target.loc[size, "mean_map"] == pytest.approx(np.mean(values))
        assert per_target.loc[size, "mean_map_ci_low"] < per_target.loc[size, "mean_map"] or np.ptp(values) == 0
    assert "map" in pd.read_csv(out / "data.csv")
    growth = pd.read_csv(out / "data_growth.csv").set_index("metric")
    xs, ys = np.log2([p[0] for p in points]), [p[1] for p in points]
    assert growth.loc["ndcg@10", "slope_per_doubling"] == pytest.approx(np.polyfit(xs, ys, 1)[0])
    assert growth.loc["ndcg@10", "slope_per_doubling_ci_low"] < growth.loc["ndcg@10", "slope_per_doubling"]
    assert (growth.loc["ndcg@10", "from_pairs"], growth.loc["ndcg@10", "to_pairs"]) == (50, 200)
    exposure = pd.read_csv(out / "data_exposure.csv").set_index("pairs_per_target_language")
    for size, values in epochs.items():
        assert exposure.loc[size, "exposure_epochs"] == pytest.approx(np.mean(values))
    assert np.isnan(exposure.loc[0, "exposure_epochs"])
    report = (out / "report.md").read_text()
    assert "nominal epochs" in report and f"50: {np.mean([3 * 50 // 5 + 25 + 12] * 2):,.0f} pairs" in report
    assert f"Fewest epochs: {np.mean(epochs[200]):.2f} (th at 200 pairs): below 1" in report


def test_scale_report_best_mode_per_model(tmp_path):
    spec = load_study("scale", ["axes={model.name: [me5-small-offline-l3, me5-small-offline], batching.mode: [xx, hybrid]}",
                                "model.num_layers=null"])
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    rng = np.random.default_rng(6)
    scores = {}
    for cell, axes in enumerate(spec.cells()):
        value = float(rng.uniform(0, 1))
        scores[(axes["model.name"], axes["batching.mode"])] = value
        metrics = {"inter/cross_map": value}
        for dataset in ("xquad-r", "mlqa-r", "afriqa"):
            metrics.update({f"final/{dataset}/{m}": value for m in ("mono_map", "cross_map", "multi_map")})
            metrics[f"final/{dataset}/rank_distance"] = 5.0
        store.append_trial(_trial(spec, f"t{cell}", cell, "search", metrics))
    out = build_reports(tmp_path)
    best = pd.read_csv(out / "scale_best_mode.csv")
    for model in ("me5-small-offline-l3", "me5-small-offline"):
        winner = max(("xx", "hybrid"), key=lambda mode: scores[(model, mode)])
        rows = best[best["model"] == model]
        assert set(rows["best_batching_for_cross_map"]) == {winner}
    table = pd.read_csv(out / "scale.csv")
    assert sorted(table["rung"].unique()) == [1, 2]  # the ladder's order: the model axis's values


def test_paper_report_tables_beside_the_published_rows(tmp_path):
    """Our rows (seed means, the zero-shot row) in the paper's table 1 / 2 layout, the
    published rows copied from the YAML and labelled as the paper's, and per-cell intervals,
    changes against the zero-shot model and the paper's value of the same sampling."""
    spec = load_study("paper")
    dump_study(spec, tmp_path / "study.yaml")
    store = ResultStore(tmp_path)
    rng = np.random.default_rng(7)
    metrics_of = ("mono_map", "cross_map", "multi_map", "rank_distance")
    values = {}
    for cell, axes in enumerate(spec.cells()):
        for phase, seed in (("search", None), ("seeds", 1)):
            metrics = {"inter/cross_map": 0.5}
            for dataset in ("xquad-r", "mlqa-r"):
                for metric in metrics_of:
                    value = float(rng.uniform(100, 300) if metric == "rank_distance" else rng.uniform(0.3, 0.8))
                    values.setdefault((axes["data.source"], axes["batching.alpha"], dataset, metric), []).append(value)
                    metrics[f"final/{dataset}/{metric}"] = value
            metrics["model/display_name"] = "tiny model"
            store.append_trial(_trial(spec, f"c{cell}{phase}", cell, phase, metrics, seed=seed))
    zero = {f"final/{d}/{m}": (250.0 if m == "rank_distance" else 0.4) for d in ("xquad-r", "mlqa-r") for m in metrics_of}
    store.write_zero_shot("tiny model", zero, pd.DataFrame({"dataset": ["xquad-r"], "setting": ["mono"],
                                                            "query_lang": ["en"], "candidate_lang": ["en"],
                                                            "query_id": ["q"], "ap": [0.4]}))
    out = build_reports(tmp_path)
    table1 = pd.read_csv(out / "paper_table1_map.csv")
    # One block of our rows per training source (the study sweeps data.source), then the zero-shot row.
    assert list(table1["source"].iloc[:7]) == ["ours"] + ["ours (ntrex)"] * 3 + ["ours (xquad)"] * 3
    assert table1.set_index("source").loc["ours", "mlqa-r Mul"] == pytest.approx(0.4)
    for source in ("xquad", "ntrex"):
        ours = table1[table1["source"] == f"ours ({source})"].set_index("sampling")
        assert list(ours.index) == ["X-X", "X-Y", "hybrid"]
        for alpha, label in ((1.0, "X-X"), (0.0, "X-Y"), (0.5, "hybrid")):
            assert ours.loc[label, "xquad-r Cr"] == pytest.approx(np.mean(values[(source, alpha, "xquad-r", "cross_map")]))
            assert ours.loc[label, "mlqa-r Mo"] == pytest.approx(np.mean(values[(source, alpha, "mlqa-r", "mono_map")]))
            assert str(ours.loc[label, "runs"]) == "2"
    paper = table1[~table1["source"].str.startswith("ours")]
    assert len(paper) == 6 and set(paper["model"]) == {"XLM-R", "LaBSE"} and set(paper["runs"]) == {"published"}
    published = {(r.model, r.sampling, r.dataset): r for r in spec.report.settings.published}
    for _, row in paper.iterrows():
        assert row["xquad-r Mul"] == pytest.approx(published[(row["model"], row["sampling"], "xquad-r")].multi_map)
        assert row["mlqa-r Cr"] == pytest.approx(published[(row["model"], row["sampling"], "mlqa-r")].cross_map)
    table2 = pd.read_csv(out / "paper_table2_rank_distance.csv")
    hybrid_bias = table2[(table2["source"] == "ours (xquad)") & (table2["sampling"] == "hybrid")]["mlqa-r rank distance"]
    assert hybrid_bias.iloc[0] == pytest.approx(np.mean(values[("xquad", 0.5, "mlqa-r", "rank_distance")]))
    cells = pd.read_csv(out / "paper_cells.csv")
    row = cells[(cells["training"] == "ntrex") & (cells["sampling"] == "X-Y") & (cells["dataset"] == "xquad-r")
                & (cells["metric"] == "cross_map")].iloc[0]
    seeds = values[("ntrex", 0.0, "xquad-r", "cross_map")]
    half = stats.t.ppf(0.975, 1) * np.std(seeds, ddof=1) / np.sqrt(2)
    assert row["ci_low"] == pytest.approx(np.mean(seeds) - half) and row["ci_high"] == pytest.approx(np.mean(seeds) + half)
    assert row["delta_vs_zero_shot"] == pytest.approx(np.mean(seeds) - 0.4)
    assert row["paper/XLM-R"] == pytest.approx(0.700) and row["paper/LaBSE"] == pytest.approx(0.762)
    report = (out / "report.md").read_text()
    assert "## paper_table1_map.csv" in report and "paper (arXiv 2408.10536 tables 1-2)" in report
