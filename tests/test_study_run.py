"""The driver's pure parts: --help, the --seeds re-run selection, reconciling missed trials."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from study.results import ResultStore
from study.run import seed_configs
from study.spec import load_study
from study.tune_callback import ResultsCallback

REPO = Path(__file__).resolve().parent.parent
RESOURCES = {"num_workers": 2, "use_gpu": False, "cpus_per_worker": 1.0}


def test_help_documents_every_option():
    text = subprocess.run([sys.executable, str(REPO / "study" / "run.py"), "--help"],
                          capture_output=True, text=True, check=True).stdout
    for option in ("--study", "--config", "--set", "--resume", "--address", "--num-workers", "--samples",
                   "--seeds", "--output", "languages", "ratio"):
        assert option in text


def test_seed_reruns_take_each_cells_best_search_trial(tmp_path):
    spec = load_study("default", ["search.seeds=2"])
    store = ResultStore(tmp_path)
    rows = [  # (trial, cell, status, objective, final): the final test metric must not decide
        ("a", 0, "completed", 0.20, 0.9), ("b", 0, "completed", 0.30, 0.1), ("c", 1, "completed", 0.25, 0.5),
        ("d", 1, "pruned", 0.40, None), ("e", 2, "error", None, None),
    ]
    for trial_id, cell, status, objective, final in rows:
        store.append_trial({"trial_id": trial_id, "phase": "search", "cell": cell, "status": status,
                            "axis/batching.alpha": spec.cells()[cell]["batching.alpha"],
                            "tuned/optim.lr": 1e-4 * (1 + cell), "inter/cross_map": objective,
                            "final/xquad-r/cross_map": final})
    configs = seed_configs(spec, tmp_path)
    assert [(c["cell"], c["source_trial"], c["seed"]) for c in configs] == [(0, "b", 1), (0, "b", 2), (1, "c", 1), (1, "c", 2)]
    assert configs[0]["axes"] == {"batching.alpha": 0.0} and configs[0]["tuned"] == {"optim.lr": 1e-4}
    assert all(c["phase"] == "seeds" for c in configs)


def test_reconcile_records_only_finished_trials_tune_knows_and_we_missed(tmp_path):
    callback = ResultsCallback(tmp_path, RESOURCES)
    config = {"phase": "search", "cell": 0, "axes": {"batching.alpha": 0.5}, "tuned": {}, "seed": None}
    callback.record("known", config, {"final/xquad-r/cross_map": 0.3, "time_total_s": 10.0}, None)
    grid = [
        SimpleNamespace(metrics={"trial_id": "known", "final/xquad-r/cross_map": 0.3}, config=config, error=None),
        SimpleNamespace(metrics={"trial_id": "missed", "final/xquad-r/cross_map": 0.4, "time_total_s": 20.0,
                                 "matrices_json": json.dumps({"xquad-r": {"map": {"en": {"en": 1.0}}}})},
                        config=config, error=None),
        SimpleNamespace(metrics={"trial_id": "running", "study_step": 10}, config=config, error=None),
        SimpleNamespace(metrics={}, config=config, error=None),  # interrupted before any report
    ]
    assert callback.reconcile(grid) == 1
    trials = callback.store.trials().set_index("trial_id")
    assert sorted(trials.index) == ["known", "missed"]
    assert trials.loc["missed", "status"] == "completed"
    assert trials.loc["missed", "worker_seconds"] == 40.0
    assert list(callback.store.matrices("missed")["xquad-r"]["map"].columns) == ["en"]
    assert callback.reconcile(grid) == 0  # idempotent: a second resume adds nothing


def test_broken_tune_state_is_named_file_by_file(tmp_path):
    import pickle

    from study.recovery import broken_state, quarantine

    experiment = tmp_path / "search"
    assert broken_state(experiment) is None  # nothing saved yet: a fresh start, not an error
    experiment.mkdir()
    (experiment / "tuner.pkl").write_bytes(pickle.dumps({"trainable": "run_trial"}))
    assert "no experiment_state" in broken_state(experiment)
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [], "runner_data": {}}')
    newest = experiment / "experiment_state-2026-01-02_00-00-00.json"
    newest.write_text('{"trial_data": [], "runner_data": {}}')
    (experiment / "searcher-state-2026-01-02_00-00-00.pkl").write_bytes(pickle.dumps({"issued": 3}))
    assert broken_state(experiment) is None

    newest.write_text('{"trial_data": [')  # the newest is what Tune would read
    assert broken_state(experiment).startswith(f"{newest}: JSONDecodeError")
    newest.write_text('{"trial_data": [], "runner_data": {}}')
    searcher = experiment / "searcher-state-2026-01-02_00-00-00.pkl"
    searcher.write_bytes(searcher.read_bytes()[:5])
    assert broken_state(experiment).startswith(f"{searcher}:")
    searcher.write_bytes(pickle.dumps({"issued": 3}))
    (experiment / "tuner.pkl").write_bytes(b"")
    assert broken_state(experiment) == f"{experiment / 'tuner.pkl'}: ValueError: empty file"

    moved = quarantine(experiment)
    assert not experiment.exists() and moved.name.startswith("search.broken-") and (moved / "tuner.pkl").exists()
