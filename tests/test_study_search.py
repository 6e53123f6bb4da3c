"""Grid over axes + Optuna within each cell; ASHA within each cell; concurrency."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from study.search import CellGridSearch, PerCellASHA, max_concurrent_trials
from study.spec import load_study

SPEC = load_study("ratio", ["axes.batching.alpha=[0.0, 0.5, 1.0]", "search.samples_per_cell=3", "max_steps=40",
                            "evaluation.intermediate.every=10", "search.asha.grace_period=10"])


def drain(searcher: CellGridSearch, prefix: str = "t") -> list[dict]:
    configs = []
    while (config := searcher.suggest(f"{prefix}{len(configs)}")) is not Searcher.FINISHED:
        configs.append(config)
        searcher.on_trial_complete(f"{prefix}{len(configs) - 1}", {"inter/cross_map": 0.1 * len(configs)})
    return configs


def test_every_cell_gets_its_trials_and_tuned_values_stay_in_range():
    configs = drain(CellGridSearch(SPEC))
    assert len(configs) == 9
    assert Counter(c["cell"] for c in configs) == {0: 3, 1: 3, 2: 3}
    for config in configs:
        assert config["axes"] == SPEC.cells()[config["cell"]]
        assert 1e-5 <= config["tuned"]["optim.lr"] <= 1e-4
        assert 0.02 <= config["tuned"]["model.temperature"] <= 0.1
        SPEC.train_config({**config["axes"], **config["tuned"]})  # a valid training config


def test_search_is_seeded_and_resumable(tmp_path):
    first = drain(CellGridSearch(SPEC))
    assert drain(CellGridSearch(SPEC)) == first
    other_seed = load_study("ratio", ["axes.batching.alpha=[0.0, 0.5, 1.0]", "search.samples_per_cell=3",
                                      "search.seed=1"])
    assert [c["tuned"] for c in drain(CellGridSearch(other_seed))] != [c["tuned"] for c in first]

    interrupted = CellGridSearch(SPEC)
    for index in range(4):
        interrupted.suggest(f"t{index}")
        interrupted.on_trial_complete(f"t{index}", {"inter/cross_map": 0.1 * (index + 1)})
    interrupted.save(str(tmp_path / "searcher.pkl"))
    restored = CellGridSearch(SPEC)
    restored.restore(str(tmp_path / "searcher.pkl"))
    rest = []
    while (config := restored.suggest(f"t{4 + len(rest)}")) is not Searcher.FINISHED:
        rest.append(config)
        restored.on_trial_complete(f"t{3 + len(rest)}", {"inter/cross_map": 0.1 * (4 + len(rest))})
    assert rest == first[4:]


def _trial(trial_id: str, cell: int):
    return SimpleNamespace(trial_id=trial_id, config={"cell": cell})


def test_asha_prunes_within_a_cell_only():
    scheduler = PerCellASHA(SPEC)
    strong = [_trial(f"s{i}", 0) for i in range(3)]
    for trial in strong:
        scheduler.on_trial_add(None, trial)
        assert scheduler.on_trial_result(None, trial, {"study_step": 10, "inter/cross_map": 0.9}) == TrialScheduler.CONTINUE
    weak_other_cell = _trial("w1", 1)
    scheduler.on_trial_add(None, weak_other_cell)
    # far below cell 0's trials, but alone in its cell: not pruned
    assert scheduler.on_trial_result(None, weak_other_cell, {"study_step": 10, "inter/cross_map": 0.1}) == TrialScheduler.CONTINUE
    weak_same_cell = _trial("w0", 0)
    scheduler.on_trial_add(None, weak_same_cell)
    assert scheduler.on_trial_result(None, weak_same_cell, {"study_step": 10, "inter/cross_map": 0.1}) == TrialScheduler.STOP


def test_asha_rungs_are_refilled_from_history_after_a_restore():
    history = [{"trial_id": f"s{i}", "phase": "search", "cell": 0, "study_step": 10, "inter/cross_map": 0.9}
               for i in range(3)]
    scheduler = PerCellASHA(SPEC, lambda: history)
    resumed = _trial("s0", 0)  # re-reports its step after resuming from a checkpoint
    assert scheduler.on_trial_result(None, resumed, {"study_step": 10, "inter/cross_map": 0.9}) == TrialScheduler.CONTINUE
    newcomer = _trial("n", 0)
    assert scheduler.on_trial_result(None, newcomer, {"study_step": 10, "inter/cross_map": 0.1}) == TrialScheduler.STOP
    empty = PerCellASHA(SPEC, list)
    assert empty.on_trial_result(None, _trial("n", 0), {"study_step": 10, "inter/cross_map": 0.1}) == TrialScheduler.CONTINUE


def test_max_concurrent_trials_from_cluster_resources():
    cpu = load_study("default")  # 1 worker x 2 CPUs
    assert max_concurrent_trials(cpu, {"CPU": 2, "tune_driver": 1}) == 1
    assert max_concurrent_trials(cpu, {"CPU": 16, "tune_driver": 8}) == 8
    assert max_concurrent_trials(cpu, {"CPU": 16, "tune_driver": 3}) == 3
    gpu = load_study("default", ["resources.use_gpu=true", "resources.num_workers=2"])
    assert max_concurrent_trials(gpu, {"CPU": 64, "GPU": 8, "tune_driver": 8}) == 4
    capped = load_study("default", ["resources.max_concurrent_trials=2"])
    assert max_concurrent_trials(capped, {"CPU": 64, "tune_driver": 8}) == 2


def test_discrete_space_never_repeats_a_configuration_until_exhausted():
    spec = load_study("ratio", [
        "axes.batching.alpha=[0.0]", "search.samples_per_cell=8",
        'tune={"optim.lr": {"distribution": "choice", "values": [1e-5, 3e-5, 1e-4]}, '
        '"model.temperature": {"distribution": "choice", "values": [0.02, 0.05]}}',
    ])
    searcher = CellGridSearch(spec)
    configs = drain(searcher)
    keys = [tuple(sorted(c["tuned"].items())) for c in configs]
    assert len(keys) == 8
    assert len(set(keys[:6])) == 6, "the 6 configurations of the space come first, each once"
    assert set(keys[6:]) <= set(keys[:6])  # then repeats, as the budget exceeds the space
    # Repeats of running trials are told to Optuna as failed; nothing leaks into Tune's ids.
    assert searcher._redraws > 0
    trials = searcher.cell_study(0).trials
    runs = [t for t in trials if "tune_trial_id" in t.user_attrs]
    assert [t.user_attrs["tune_trial_id"] for t in runs] == [f"t{i}" for i in range(8)]
    assert [t.params for t in runs] == [c["tuned"] for c in configs]
    redraws = [t for t in trials if "redraw_of" in t.user_attrs]
    assert len(redraws) == searcher._redraws and len(runs) + len(redraws) == len(trials)
    for redraw in redraws:  # each names the earlier trial it repeats and the Tune trial it was drawn for
        repeated = trials[redraw.user_attrs["redraw_of"]]
        assert repeated.params == redraw.params and "tune_trial_id" in repeated.user_attrs
        assert redraw.user_attrs["redraw_for"] in {t.user_attrs["tune_trial_id"] for t in runs}
        assert redraw.state.name in ("COMPLETE", "FAIL")


def test_tpe_startup_scales_with_the_cell_budget():
    from study.search import startup_trials

    assert [startup_trials(n) for n in (1, 3, 4, 9, 30, 100)] == [1, 1, 1, 3, 10, 10]


def test_skip_finished_counts_results_against_cell_budgets_and_teaches_optuna():
    searcher = CellGridSearch(SPEC)  # 3 cells x 3 trials
    done = [
        {"cell": 0, "tuned/optim.lr": 2e-5, "tuned/model.temperature": 0.05, "inter/cross_map": 0.2},
        {"cell": 0, "tuned/optim.lr": 5e-5, "tuned/model.temperature": 0.03, "inter/cross_map": float("nan")},
        {"cell": 2, "tuned/optim.lr": 3e-5, "tuned/model.temperature": 0.07, "inter/cross_map": 0.1},
    ]
    assert searcher.skip_finished(done) == 3
    assert searcher.remaining_trials == 6
    configs = drain(searcher)
    assert Counter(c["cell"] for c in configs) == {0: 1, 1: 3, 2: 2}
    trials = searcher.cell_study(0).trials
    assert [t.state.name for t in trials[:2]] == ["COMPLETE", "FAIL"]
    assert trials[0].params == {"optim.lr": 2e-5, "model.temperature": 0.05} and trials[0].value == 0.2


def test_fixed_config_search_skips_cell_seed_pairs_already_finished():
    from study.search import FixedConfigSearch

    configs = [{"phase": "seeds", "cell": c, "seed": s, "axes": {}, "tuned": {}} for c in (0, 1) for s in (1, 2)]
    search = FixedConfigSearch(configs, "inter/cross_map", "max")
    assert search.skip_finished([{"cell": 0, "seed": 2}, {"cell": 1, "seed": 1}]) == 2
    handed = []
    while (config := search.suggest(f"t{len(handed)}")) is not Searcher.FINISHED:
        handed.append((config["cell"], config["seed"]))
    assert handed == [(0, 1), (1, 2)] and search.total_trials == 2
