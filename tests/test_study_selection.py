"""The one rule for a cell's best trial (study/selection.py), and that the --seeds re-run
source, the checkpoint the driver keeps, the exported model and the reported trial agree on
tied objectives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridir.model import SETTINGS_FILE
from study.export import select_cells
from study.questions.common import ReportContext, representative_trials
from study.results import ResultStore
from study.run import seed_configs
from study.selection import best_trial_ids, best_trials
from study.spec import dump_study, load_study
from study.tune_callback import ResultsCallback

OBJECTIVE = "inter/cross_map"


def _row(trial_id, cell, objective, finished_at, status="completed", phase="search"):
    return {"trial_id": trial_id, "cell": cell, "status": status, "phase": phase, OBJECTIVE: objective,
            "finished_at": finished_at}


def test_ties_go_to_the_earlier_finished_trial_then_the_smaller_id_whatever_the_row_order():
    rows = [
        _row("b", 0, 0.5, 20.0), _row("a", 0, 0.5, 30.0), _row("c", 0, 0.4, 1.0),  # b: earlier at 0.5
        _row("y", 1, 0.7, 10.0), _row("x", 1, 0.7, 10.0),  # same time: x by id
        _row("n", 2, 0.9, 5.0, status="pruned"), _row("m", 2, np.nan, 1.0), _row("k", 2, 0.1, 9.0),
        _row("e", 3, 0.2, 1.0, status="error"),  # no completed trial: no best
        _row("s", 4, 0.3, np.nan), _row("r", 4, 0.3, 2.0),  # a missing finished_at counts as last
    ]
    frame = pd.DataFrame(rows)
    expected = {0: "b", 1: "x", 2: "k", 4: "r"}
    for seed in range(5):
        shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        assert best_trial_ids(shuffled, OBJECTIVE, "max") == expected
    # mode min: the lowest objective; the same tie-break
    assert best_trial_ids(frame, OBJECTIVE, "min") == {0: "c", 1: "x", 2: "k", 4: "r"}
    # phases: a seed re-run is a candidate over every phase, not among the search phase only
    with_seed = pd.concat([frame, pd.DataFrame([_row("z", 0, 0.8, 40.0, phase="seeds")])], ignore_index=True)
    assert best_trial_ids(with_seed, OBJECTIVE, "max")[0] == "z"
    assert best_trial_ids(with_seed, OBJECTIVE, "max", phases=("search",))[0] == "b"
    assert list(best_trials(frame, OBJECTIVE, "max").columns) == list(frame.columns)  # no helper columns leak
    assert best_trials(frame, "inter/absent", "max").empty
    with pytest.raises(ValueError, match="mode"):
        best_trials(frame, OBJECTIVE, "maximum")


def _checkpoint(storage: Path, trial_id: str) -> Path:
    run = storage / f"train-search-{trial_id}" / "checkpoint_000000"
    (run / "model").mkdir(parents=True)
    (run / "model" / SETTINGS_FILE).write_text("{}")
    return run


def test_rerun_source_kept_checkpoint_export_and_report_agree_on_a_tie(tmp_path):
    spec = load_study("default", ["axes.batching.alpha=[0.0]", "search.samples_per_cell=3", "search.seeds=1",
                                  'tune={"optim.lr": {"distribution": "loguniform", "low": 1.0e-5, "high": 1.0e-4}}'])
    study_dir, storage = tmp_path / "study", tmp_path / "ray"
    study_dir.mkdir()
    dump_study(spec, study_dir / "study.yaml")
    callback = ResultsCallback(study_dir, {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 2},
                               train_runs_dir=str(storage), experiment="search", keep_best=(OBJECTIVE, "max"))
    checkpoints = {trial: _checkpoint(storage, trial) for trial in ("t2", "t1", "t3")}
    # t2 finishes first with 0.5; t1 (a smaller id) ties it later; t3 is worse.
    for trial, objective, lr in (("t2", 0.5, 2e-5), ("t1", 0.5, 3e-5), ("t3", 0.4, 4e-5)):
        config = {"phase": "search", "cell": 0, "axes": {"batching.alpha": 0.0}, "tuned": {"optim.lr": lr},
                  "seed": None}
        callback.record(trial, config, {"study_step": 40, "time_total_s": 1.0, OBJECTIVE: objective,
                                        "final/xquad-r/cross_map": objective}, status=None)

    kept = sorted(trial for trial, path in checkpoints.items() if path.is_dir())
    source = {config["source_trial"] for config in seed_configs(spec, study_dir)}
    exported = [choice.trial_id for choice in select_cells(spec, ResultStore(study_dir).trials(), str(storage), None)]
    store = ResultStore(study_dir)
    context = ReportContext(spec, store, store.trials(), store.history(), tmp_path / "reports")
    reported = list(representative_trials(context)[0]["trial_id"])
    assert kept == ["t2"] and source == {"t2"} and exported == ["t2"] and reported == ["t2"]
    assert seed_configs(spec, study_dir)[0]["tuned"] == {"optim.lr": 2e-5}
