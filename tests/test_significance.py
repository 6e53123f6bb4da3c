"""Paired contrasts, pooled seeds, Holm and verdicts (hybridir.evaluation.significance).

Expected values come from hand computation (weights, exact sign-flip p-values, Holm), from
``LareqaResult.summary`` on real XQuAD-R rows scored by a tiny encoder, from
``scipy.stats.bootstrap`` and from ``numpy.polyfit``: never from the code under test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hybridir.config import ModelConfig
from hybridir.data.registry import load_eval_set
from hybridir.evaluation import encode_corpus, evaluate_lareqa, subset_corpus
from hybridir.evaluation.significance import (
    MEASURES,
    SETTINGS,
    apply_holm,
    difference_weights,
    holm,
    item_contributions,
    minimum_detectable_difference,
    paired_contrast,
    run_statistic,
    slope_weights,
    summary_key,
    two_level_bootstrap,
)
from hybridir.model import BiEncoder
from tests.conftest import build_tiny_encoder_dir


# --- real per-query rows: a tiny random-init encoder on a small XQuAD-R subset ---------------


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """Two tiny encoders (different init seeds) scored on the same uneven XQuAD-R subset.

    The subset is made uneven on purpose, so that weighting by cell size matters: th keeps
    fewer queries than en/de, and 5 items keep only their English answer (single relevant
    candidate: rank distance undefined, cross cells without them)."""
    corpus = subset_corpus(load_eval_set("xquad-r", languages=["en", "de", "th"]), max_queries=40, seed=0)
    items = sorted(corpus.relevant)
    english_only = set(items[:5])
    relevant = {q: ({"en": t["en"]} if q in english_only else t) for q, t in corpus.relevant.items()}
    queries = {l: dict(list(q.items())[: 25 if l == "th" else None]) for l, q in corpus.queries.items()}
    needed = {l: {t[l] for t in relevant.values() if l in t} for l in corpus.candidates}
    # Small candidate pools (every relevant answer + 40 distractors) keep scoring fast.
    candidates = {l: {c: text for i, (c, text) in enumerate(cands.items()) if c in needed[l] or i < 40}
                  for l, cands in corpus.candidates.items()}
    corpus = dataclasses.replace(corpus, queries=queries, candidates=candidates, relevant=relevant)
    results = []
    for seed in (0, 1):
        directory = build_tiny_encoder_dir(tmp_path_factory.mktemp(f"tiny-{seed}"), seed=seed)
        model = BiEncoder.from_config(ModelConfig(name=str(directory), query_prefix="query: ", passage_prefix="passage: "))
        results.append(evaluate_lareqa(encode_corpus(model, corpus, batch_size=64)))
    return results


def test_run_statistic_equals_the_lareqa_summary(real_runs):
    result = real_runs[0]
    per_query = result.per_query.assign(dataset="xquad-r")
    n_cells = per_query[per_query.setting == "cross"].groupby(["query_lang", "candidate_lang"]).size()
    assert n_cells.nunique() > 1  # cells of different sizes: the weighting is exercised
    assert result.summary["n_rank_distance_excluded"] > 0
    for setting in SETTINGS:
        for measure in MEASURES:
            if measure == "rank_distance" and setting != "multi":
                continue
            expected = result.summary[summary_key(setting, measure)]
            assert run_statistic(per_query, setting, measure) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    # d_item sums to the statistic and is a per-item quantity
    contributions = item_contributions(per_query, "cross", "ap")
    assert contributions.index.is_unique and contributions.sum() == pytest.approx(result.summary["cross_map"])


def test_weights_are_one_over_cells_times_cell_size():
    rows = pd.DataFrame({
        "setting": "cross", "query_lang": ["a", "a", "b"], "candidate_lang": ["b", "b", "a"],
        "query_id": ["q1", "q2", "q1"], "ap": [0.2, 0.6, 1.0],
    })
    # cells: a->b mean(0.2, 0.6) = 0.4, b->a = 1.0; macro average 0.7
    # q1: 0.2/(2*2) + 1.0/(2*1) = 0.55; q2: 0.6/(2*2) = 0.15
    d = item_contributions(rows, "cross", "ap")
    assert d.to_dict() == pytest.approx({"q1": 0.55, "q2": 0.15})
    assert run_statistic(rows, "cross", "ap") == pytest.approx(0.7)
    with pytest.raises(ValueError, match="rank_distance"):
        run_statistic(rows, "cross", "rank_distance")
    with pytest.raises(ValueError, match="measure 'map'"):
        run_statistic(rows, "cross", "map")


def _cell(values: dict[str, float], setting="mono") -> pd.DataFrame:
    """One run with one language-pair cell: its statistic is the mean of ``values``."""
    return pd.DataFrame({"setting": setting, "query_lang": "en", "candidate_lang": "en",
                         "query_id": list(values), "ap": list(values.values())})


def test_exact_sign_flip_p_values_by_hand():
    # 3 items in one cell, per-item contributions to mean(A) - mean(B): (3, 6, -1.5) / 3 =
    # (1, 2, -0.5) -> sum 2.5. The 8 sign flips give sums {±1 ±2 ±0.5}: 3.5, 2.5, 0.5, -0.5,
    # 1.5, -1.5, -2.5, -3.5; P(sum >= 2.5) = 2/8, two-sided p = 2 * 2/8 = 0.5.
    a = _cell({"q1": 3.0, "q2": 6.0, "q3": 0.0})
    b = _cell({"q1": 0.0, "q2": 0.0, "q3": 1.5})
    result = paired_contrast({"A": [a], "B": [b]}, difference_weights("A", "B"), "mono", "ap",
                             method="bootstrap-legacy")
    assert result.estimate == pytest.approx(2.5)  # mean(A) - mean(B) = 3 - 0.5
    assert result.p_value == pytest.approx(0.5)
    # 4 items all in favour of A: only the identity flip reaches the observed sum: 2 * 1/16
    a4 = _cell({f"q{i}": 1.0 + i for i in range(4)})
    b4 = _cell({f"q{i}": 0.0 for i in range(4)})
    assert paired_contrast({"A": [a4], "B": [b4]}, {"A": 1, "B": -1}, "mono", "ap",
                           method="bootstrap-legacy").p_value == pytest.approx(0.125)


def test_holm_on_known_lists():
    # sorted p: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> raised to the running max 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.04, 0.001]) == pytest.approx([0.04, 0.002])
    assert holm([0.5, 0.6, 0.9, 0.01]) == pytest.approx([1.0, 1.0, 1.0, 0.04])
    with pytest.raises(ValueError, match="p-values"):
        holm([0.1, float("nan")])


def test_items_missing_from_a_cell_are_dropped_and_counted():
    a = _cell({"q1": 1.0, "q2": 0.0, "q3": 0.5, "q4": 0.5})
    b = _cell({"q1": 0.0, "q2": 0.0, "q3": 0.5})
    result = paired_contrast({"A": [a], "B": [b]}, {"A": 1, "B": -1}, "mono", "ap")
    assert (result.n_items, result.n_items_dropped) == (3, 1)
    # on the shared items q1..q3: A = 0.5, B = 1/6
    assert result.estimate == pytest.approx(0.5 - 1 / 6)


def test_two_level_bootstrap_agrees_with_scipy_with_one_seed(real_runs):
    a, b = (r.per_query for r in real_runs)
    runs, weights = {"A": [a], "B": [b]}, {"A": 1.0, "B": -1.0}
    via_scipy = paired_contrast(runs, weights, "cross", "ap", n_resamples=6000, seed=1, method="bootstrap-legacy")
    two_level = paired_contrast(runs, weights, "cross", "ap", n_resamples=6000, seed=2, force_two_level=True,
                                method="bootstrap-legacy")
    assert "scipy" in via_scipy.ci_method and "two-level" in two_level.ci_method
    # same point estimate: the difference of the two summaries
    assert via_scipy.estimate == pytest.approx(real_runs[0].summary["cross_map"] - real_runs[1].summary["cross_map"])
    # and an independent scipy call on the per-item contrasts
    d = (item_contributions(a, "cross", "ap") - item_contributions(b, "cross", "ap")).to_numpy()
    reference = stats.bootstrap((d,), np.sum, n_resamples=6000, method="percentile", rng=3)
    se = reference.standard_error
    # Monte-Carlo error of a bootstrap SE with B = 6000 is ~1%, of a 2.5% quantile ~0.05 SE
    assert two_level.standard_error == pytest.approx(se, rel=0.06)
    assert two_level.ci_low == pytest.approx(reference.confidence_interval.low, abs=0.15 * se)
    assert two_level.ci_high == pytest.approx(reference.confidence_interval.high, abs=0.15 * se)
    assert via_scipy.ci_low == pytest.approx(reference.confidence_interval.low, abs=0.15 * se)


def test_seed_spread_widens_the_interval(real_runs):
    a, b = (r.per_query for r in real_runs)
    shifted = a.assign(ap=(a["ap"] + 0.05).clip(upper=1.0))  # a second "seed" of A, clearly better
    one_seed = paired_contrast({"A": [a], "B": [b]}, {"A": 1, "B": -1}, "cross", "ap", force_two_level=True,
                               method="bootstrap-legacy")
    two_seeds = paired_contrast({"A": {1: a, 2: shifted}, "B": {1: b, 2: b}}, {"A": 1, "B": -1}, "cross", "ap")
    assert two_seeds.standard_error > one_seed.standard_error
    assert two_seeds.seed_spread["A"] == pytest.approx(
        np.std([run_statistic(a, "cross", "ap"), run_statistic(shifted, "cross", "ap")], ddof=1))
    assert two_seeds.seed_spread["B"] == 0.0 and one_seed.seed_spread["A"] is None
    # seeds 1 and 2 exist in both cells: per-seed differences
    assert two_seeds.per_seed_contrasts[2] == pytest.approx(
        run_statistic(shifted, "cross", "ap") - run_statistic(b, "cross", "ap"))


def test_two_level_bootstrap_seed_level_alone():
    # Items contribute no variance (the items of a run are equal, so any item draw keeps a
    # run's total), seeds do: run totals 0 and 1; the mean of 2 seeds drawn with replacement
    # is 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: SD sqrt(1/8), 95% range [0, 1].
    matrices = {"A": np.array([[0.0, 0.0], [0.5, 0.5]]), "B": np.zeros((1, 2))}
    low, high, se = two_level_bootstrap(matrices, {"A": 1.0, "B": -1.0}, n_resamples=20000, rng=0)
    assert se == pytest.approx(np.sqrt(1 / 8), rel=0.03)
    assert (low, high) == (0.0, 1.0)


def test_slope_contrast_recovers_a_known_slope():
    rng = np.random.default_rng(7)
    xs = [40, 60, 80, 100]
    true_slope = -0.002
    item_effect = rng.normal(0, 0.1, 300)
    runs, cell_means = {}, {}
    for x in xs:
        seeds = {}
        for seed in (1, 2, 3):
            values = 0.5 + true_slope * (x - 40) + item_effect + rng.normal(0, 0.02, 300)
            seeds[seed] = _cell({f"q{i}": v for i, v in enumerate(values)}, setting="cross")
        runs[f"n={x}"] = seeds
        cell_means[x] = np.mean([f["ap"].mean() for f in seeds.values()])
    weights = slope_weights({f"n={x}": x for x in xs})
    result = paired_contrast(runs, weights, "cross", "ap", n_resamples=2000)
    assert result.estimate == pytest.approx(np.polyfit(xs, [cell_means[x] for x in xs], 1)[0])
    assert result.ci_low < true_slope < result.ci_high
    assert result.verdict("less").outcome == "supported"
    assert sum(weights.values()) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="distinct"):
        slope_weights({"a": 1, "b": 1})


def _result(**overrides):
    base = dict(estimate=0.02, ci_low=0.01, ci_high=0.03, standard_error=0.005, p_value=0.001, p_holm=0.001,
                hypothesis="contrast = 0 (two-sided)", margin=None, n_items=100, n_items_dropped=0,
                n_seeds={"A": 3, "B": 3}, cell_statistics={"A": 0.5, "B": 0.48}, seed_spread={"A": 0.01, "B": 0.01},
                per_seed_contrasts=None, mdd=0.014, weights={"A": 1.0, "B": -1.0}, setting="cross", measure="ap")
    base.update(overrides)
    from hybridir.evaluation.significance import ContrastResult

    return ContrastResult(**base)


def test_verdict_rules():
    assert _result().verdict("greater").outcome == "supported"
    assert _result().verdict("less").outcome == "contradicted"
    one_seed = _result(n_seeds={"A": 1, "B": 3}).verdict("greater")
    assert one_seed.outcome == "inconclusive" and "1 seed per cell" in one_seed.reason
    assert "seed-to-seed spread unknown" in one_seed.reason
    straddles = _result(ci_low=-0.01).verdict("greater")
    assert straddles.outcome == "inconclusive" and straddles.reason == "CI includes 0 (design could detect |d| >= 0.014)"
    not_significant = _result(p_holm=0.2).verdict("greater")
    assert not_significant.outcome == "inconclusive" and "Holm p = 0.2" in not_significant.reason
    equivalent = _result(margin=0.05, hypothesis="equivalence")
    assert equivalent.verdict("equivalent", 0.05).outcome == "supported"
    assert _result(margin=0.02, hypothesis="eq").verdict("equivalent", 0.02).outcome == "inconclusive"
    assert _result(margin=0.005, hypothesis="eq").verdict("equivalent", 0.005).outcome == "contradicted"
    with pytest.raises(ValueError, match="margin"):
        _result().verdict("equivalent", 0.05)
    with pytest.raises(ValueError, match="without a margin"):
        equivalent.verdict("greater")
    assert "nan" not in _result(ci_low=float("nan"), ci_high=float("nan")).ci_text()


def test_equivalence_and_holm_on_computed_contrasts():
    rng = np.random.default_rng(3)
    base = rng.uniform(0, 1, 200)
    runs = {"A": {s: _cell({f"q{i}": v + rng.normal(0, 0.01) for i, v in enumerate(base)}) for s in (1, 2)},
            "B": {s: _cell({f"q{i}": v + rng.normal(0, 0.01) for i, v in enumerate(base)}) for s in (1, 2)}}
    near = paired_contrast(runs, {"A": 1, "B": -1}, "mono", "ap", margin=0.01)
    assert "TOST" in near.hypothesis and near.verdict("equivalent", 0.01).outcome == "supported"
    apart = paired_contrast(runs, {"A": 1, "B": -1}, "mono", "ap")
    family = apply_holm([near, apart])
    assert [r.p_holm for r in family] == pytest.approx(list(holm([near.p_value, apart.p_value])))
    assert minimum_detectable_difference(apart.standard_error) == pytest.approx(
        (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * apart.standard_error)
    assert minimum_detectable_difference(1.0) == pytest.approx(2.8016, rel=1e-4)
    # the realised MDD uses t quantiles on the contrast's effective df (2 + 2 seeds pooled: ~2 df)
    assert 2 <= apart.df < 3
    assert apart.mdd == pytest.approx((stats.t.ppf(0.975, apart.df) + stats.t.ppf(0.8, apart.df)) * apart.standard_error)
    assert apart.mdd > 2.8016 * apart.standard_error


# --- the seed x item variance decomposition (hybridir.evaluation.seed_item_variance) ---------


def test_cell_anova_matches_statsmodels_two_way_anova():
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    from hybridir.evaluation.seed_item_variance import cell_anova

    rng = np.random.default_rng(11)
    d = rng.normal(size=(3, 7)) + rng.normal(size=(3, 1)) + rng.normal(size=(1, 7))
    frame = pd.DataFrame([(s, i, d[s, i]) for s in range(3) for i in range(7)], columns=["seed", "item", "y"])
    table = anova_lm(smf.ols("y ~ C(seed) + C(item)", frame).fit())
    anova = cell_anova(d)
    assert anova.ms_item == pytest.approx(table.loc["C(item)", "mean_sq"])
    assert anova.ms_resid == pytest.approx(table.loc["Residual", "mean_sq"])
    # var of the run totals T_s = n * MS_seed
    assert anova.seed_variance == pytest.approx(7 * table.loc["C(seed)", "mean_sq"])
    assert (anova.seed_df, anova.resid_df) == (2, 12)


def _seed_only_runs(totals_a, totals_b, n=50):
    """Cells whose runs differ by a per-run shift only: no residual, no item x cell interaction,
    so the contrast's variance is the seed term alone (the two-sample problem on run totals)."""
    base = np.linspace(0.2, 0.8, n)
    def runs(totals):
        return {s: _cell({f"q{i}": v for i, v in enumerate(base - base.mean() + t)}) for s, t in enumerate(totals)}
    return {"A": runs(totals_a), "B": runs(totals_b)}


@pytest.mark.parametrize("n_a,n_b", [(2, 2), (3, 5)])
def test_pooled_seed_variance_reproduces_student_t(n_a, n_b):
    rng = np.random.default_rng(n_a + n_b)
    ta, tb = 0.5 + rng.normal(0, 0.01, n_a), 0.49 + rng.normal(0, 0.01, n_b)
    runs = _seed_only_runs(ta, tb)
    reference = stats.ttest_ind(ta, tb, equal_var=True)
    ci = reference.confidence_interval(0.95)
    for method in ("gpq", "satterthwaite"):
        result = paired_contrast(runs, {"A": 1, "B": -1}, "mono", "ap", method=method, n_draws=200000)
        assert result.estimate == pytest.approx(ta.mean() - tb.mean())
        assert result.df == pytest.approx(n_a + n_b - 2)
        # GPQ with one chi-square component is exactly t; its Monte-Carlo error (2e5 draws) ~1%
        tolerance = 1e-9 if method == "satterthwaite" else 0.02
        assert result.p_value == pytest.approx(reference.pvalue, rel=tolerance)
        assert result.ci_low == pytest.approx(ci.low, rel=tolerance, abs=1e-12)
        assert result.ci_high == pytest.approx(ci.high, rel=tolerance, abs=1e-12)


def test_per_cell_seed_variance_reproduces_welch():
    ta, tb = np.array([0.51, 0.50, 0.515]), np.array([0.48, 0.492, 0.47, 0.485, 0.49])
    result = paired_contrast(_seed_only_runs(ta, tb), {"A": 1, "B": -1}, "mono", "ap", method="satterthwaite",
                             pool_seeds=False)
    reference = stats.ttest_ind(ta, tb, equal_var=False)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert (result.ci_low, result.ci_high) == pytest.approx(tuple(reference.confidence_interval(0.95)))
    assert result.df == pytest.approx(reference.df)


def test_item_variance_is_paired_and_net_of_the_residual():
    from hybridir.evaluation.seed_item_variance import contrast_variance

    rng = np.random.default_rng(5)
    n, s = 400, 3
    item = rng.normal(0, 1, n)  # large item effects shared by both cells: cancel in the pairing
    interaction = rng.normal(0, 0.2, n)
    a = (item + interaction + rng.normal(0, 0.1, (s, n))) / n
    b = (item + rng.normal(0, 0.1, (s, n))) / n
    cv = contrast_variance({"A": a, "B": b}, {"A": 1.0, "B": -1.0}, pool_seeds=True)
    e = a.mean(axis=0) - b.mean(axis=0)
    assert cv.item_component.value == pytest.approx(n * np.var(e, ddof=1))
    # net item part ~ interaction variance / n (0.04 / 400 = 1e-4), not the item effect's 1 / n
    assert cv.item_part == pytest.approx(0.2 ** 2 / n, rel=0.25)
    assert cv.item_part < cv.item_component.value


def test_one_seed_per_cell_gives_no_interval_and_no_p(real_runs):
    a, b = (r.per_query for r in real_runs)
    result = paired_contrast({"A": [a], "B": [b]}, {"A": 1, "B": -1}, "cross", "ap")
    assert np.isnan(result.ci_low) and np.isnan(result.p_value) and np.isnan(result.mdd)
    assert result.ci_text() == "no interval (1 seed per cell: seed-to-seed variance unknown)"
    verdict = result.verdict("greater")
    assert verdict.outcome == "inconclusive" and "seed-to-seed spread unknown" in verdict.reason
    # a claim without a p-value stays out of the Holm family
    other = _result(p_value=0.02, p_holm=0.02)
    family = apply_holm([result, other])
    assert np.isnan(family[0].p_holm) and family[1].p_holm == pytest.approx(0.02)
    assert holm([0.02, float("nan"), 0.04], skip_nan=True)[[0, 2]] == pytest.approx([0.04, 0.04])


def test_few_seeds_widen_the_interval():
    """At 2 seeds the t reference on ~2 df is much wider than a normal one (4.30 vs 1.96)."""
    rng = np.random.default_rng(9)
    ta, tb = 0.5 + rng.normal(0, 0.01, 2), 0.5 + rng.normal(0, 0.01, 2)
    result = paired_contrast(_seed_only_runs(ta, tb), {"A": 1, "B": -1}, "mono", "ap")
    half_width = (result.ci_high - result.ci_low) / 2
    assert half_width == pytest.approx(stats.t.ppf(0.975, 2) * result.standard_error, rel=0.03)
    assert half_width > 2 * stats.norm.ppf(0.975) * result.standard_error
    with pytest.raises(ValueError, match="method"):
        paired_contrast(_seed_only_runs(ta, tb), {"A": 1, "B": -1}, "mono", "ap", method="bootstrap")


def test_equivalence_p_is_tost_on_the_t_reference():
    ta, tb = np.array([0.501, 0.503, 0.499]), np.array([0.500, 0.498, 0.502])
    runs = _seed_only_runs(ta, tb)
    margin = 0.01
    reference = [stats.ttest_ind(ta + margin, tb, alternative="greater").pvalue,  # H0: diff <= -margin
                 stats.ttest_ind(ta - margin, tb, alternative="less").pvalue]      # H0: diff >= +margin
    for method, tolerance in (("satterthwaite", 1e-9), ("gpq", 0.03)):
        result = paired_contrast(runs, {"A": 1, "B": -1}, "mono", "ap", margin=margin, method=method, n_draws=200000)
        assert "TOST" in result.hypothesis
        assert result.p_value == pytest.approx(max(reference), rel=tolerance)
    # beyond the margin: the one-sided test of exceeding it on the estimate's side
    far = paired_contrast(_seed_only_runs(ta + 0.05, tb), {"A": 1, "B": -1}, "mono", "ap", margin=margin,
                          method="satterthwaite")
    assert "beyond the margin" in far.hypothesis
    assert far.p_value == pytest.approx(stats.ttest_ind(ta + 0.05 - margin, tb, alternative="greater").pvalue)


def test_design_mdd_before_a_run():
    from hybridir.evaluation.significance import design_mdd

    # seed term only, 4 seeds in each of 2 cells: SE = sd * sqrt(2 / 4), t on 6 df
    expected = (stats.t.ppf(0.975, 6) + stats.t.ppf(0.8, 6)) * 0.002 * np.sqrt(0.5)
    assert design_mdd({"A": 1, "B": -1}, 4, seed_sd=0.002) == pytest.approx(expected)
    # more seeds -> smaller; an item term adds variance (and degrees of freedom)
    assert design_mdd({"A": 1, "B": -1}, 8, seed_sd=0.002) < expected
    assert design_mdd({"A": 1, "B": -1}, 4, seed_sd=0.002, item_se=0.002, n_items=1000) > expected
    with pytest.raises(ValueError, match=">= 2 seeds"):
        design_mdd({"A": 1, "B": -1}, 1, seed_sd=0.002)


def test_display_digits_keep_two_significant_digits_below_a_thousandth():
    from hybridir.evaluation.significance import display_digits

    assert display_digits(0.0055, -0.0119) == 4  # ordinary mAP differences: 4 decimals, as before
    assert display_digits(-2.19e-05, -9.45e-05, 5.07e-05) == 6  # a slope per added language
    assert f"{-9.45e-05:.{display_digits(-9.45e-05)}f}" == "-0.000095"
    assert display_digits(0.000102, significant=3) == 6
    assert display_digits(0.0, float("nan"), None) == 4  # nothing to scale by
