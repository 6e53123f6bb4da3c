"""Each grid cell's Optuna study in a real Optuna storage (journal file or RDB): what it holds,
how a restored or recovering searcher reads it back, and that optuna-dashboard opens it.

The searcher is driven as Tune drives it (suggest / on_trial_result / on_trial_complete,
save / restore to a file, the whole object pickled into tuner.pkl); no Ray cluster starts.
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from io import BytesIO
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from ray.tune.search import Searcher

from study.search import CellGridSearch, config_key
from study.storage import optuna_storage_location
from study.spec import load_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC = load_study("ratio", ["axes.batching.alpha=[0.0, 0.5, 1.0]", "search.samples_per_cell=3", "max_steps=40",
                            "evaluation.intermediate.every=10"])
METRIC = "inter/cross_map"
CELL_STUDIES = [f"ratio/search/cell-{cell}" for cell in range(3)]


def journal(path) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def objective(index: int) -> float:
    return round(0.05 + 0.07 * (index % 5), 4)


def report(searcher: CellGridSearch, trial_id: str, index: int, steps=(10, 20)) -> None:
    for step in steps:
        # training_iteration restarts on a restored trial; the study step is the key.
        searcher.on_trial_result(trial_id, {"study_step": step, METRIC: objective(index) * step / steps[-1],
                                            "training_iteration": 1})


def run(searcher: CellGridSearch, index: int, prefix: str = "t") -> dict:
    """One trial as Tune runs it: suggested, two intermediate reports, completed."""
    trial_id = f"{prefix}{index}"
    config = searcher.suggest(trial_id)
    report(searcher, trial_id, index)
    searcher.on_trial_complete(trial_id, {"study_step": 20, METRIC: objective(index)})
    return config


def trial_of(study: optuna.Study, tune_trial_id: str) -> optuna.trial.FrozenTrial:
    [trial] = [t for t in study.trials if t.user_attrs.get("tune_trial_id") == tune_trial_id]
    return trial


def result_row(trial_id: str, config: dict, value: float) -> dict:
    """A row of results/trials as the driver passes it to skip_finished."""
    return {"trial_id": trial_id, "phase": "search", "cell": config["cell"], METRIC: value, "status": "completed",
            **{f"axis/{k}": v for k, v in config["axes"].items()},
            **{f"tuned/{k}": v for k, v in config["tuned"].items()}}


def test_journal_holds_each_cell_study_with_values_intermediate_values_and_attrs(tmp_path):
    path = tmp_path / "optuna.journal"
    searcher = CellGridSearch(SPEC, storage=str(path))
    configs = [run(searcher, index) for index in range(9)]

    storage = journal(path)  # a second reader, as after the driver exited
    assert sorted(optuna.get_all_study_names(storage)) == CELL_STUDIES
    for cell, name in enumerate(CELL_STUDIES):
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.direction == optuna.study.StudyDirection.MAXIMIZE
        assert study.user_attrs["axis/batching.alpha"] == SPEC.cells()[cell]["batching.alpha"]
        assert study.user_attrs["cell"] == cell and study.user_attrs["objective"] == METRIC
        assert "batching.alpha=" in study.user_attrs["description"]
        assert len(study.trials) == 3  # a continuous space: no redraws
    for index, config in enumerate(configs):
        study = optuna.load_study(study_name=CELL_STUDIES[config["cell"]], storage=storage)
        trial = trial_of(study, f"t{index}")
        assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == objective(index)
        assert trial.params == config["tuned"]
        assert trial.intermediate_values == {10: objective(index) / 2, 20: objective(index)}
        assert trial.user_attrs == {"tune_trial_id": f"t{index}", "cell": config["cell"], "phase": "search",
                                    "axis/batching.alpha": config["axes"]["batching.alpha"], "study_step": 20}


def test_pickled_searcher_reopens_its_journal_and_continues_like_an_uninterrupted_one(tmp_path):
    uninterrupted = []
    reference = CellGridSearch(SPEC, storage=str(tmp_path / "reference.journal"))
    while len(uninterrupted) < 9:
        uninterrupted.append(run(reference, len(uninterrupted)))
    assert reference.suggest("t9") is Searcher.FINISHED

    path = tmp_path / "optuna.journal"
    searcher = CellGridSearch(SPEC, storage=str(path))
    tuner_pkl = pickle.dumps(searcher)  # Tune pickles the searcher into tuner.pkl before any trial
    for index in range(4):
        run(searcher, index)
    checkpoint = tmp_path / "searcher-state.pkl"
    searcher.save(str(checkpoint))
    for blob in (tuner_pkl, checkpoint.read_bytes(), pickle.dumps(searcher)):
        # The storage travels as its location, never as an open journal (locks) or engine.
        assert b"JournalStorage" not in blob and b"JournalFileBackend" not in blob
    del searcher  # the driver dies

    restored = pickle.loads(tuner_pkl)  # what Tuner.restore unpickles, then the newest checkpoint
    restored.restore(str(checkpoint))
    earlier = [t for cell in range(3) for t in restored.cell_study(cell).trials]
    assert sorted(t.user_attrs["tune_trial_id"] for t in earlier) == ["t0", "t1", "t2", "t3"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in earlier)  # TPE sees every one of them
    assert restored.remaining_trials == 5
    rest = [run(restored, index) for index in range(4, 9)]
    assert restored.suggest("t9") is Searcher.FINISHED
    assert rest == uninterrupted[4:]  # same seeds, same journal contents: same suggestions
    for cell in range(3):
        ours = [(t.params, t.value, t.user_attrs["tune_trial_id"]) for t in restored.cell_study(cell).trials]
        theirs = [(t.params, t.value, t.user_attrs["tune_trial_id"]) for t in reference.cell_study(cell).trials]
        assert ours == theirs


def test_restore_trusts_the_journal_over_an_older_checkpoint(tmp_path):
    path = tmp_path / "optuna.journal"
    searcher = CellGridSearch(SPEC, storage=str(path))
    run(searcher, 0)
    searcher.suggest("t1")
    report(searcher, "t1", 1, steps=(10,))
    checkpoint = tmp_path / "searcher-state.pkl"
    searcher.save(str(checkpoint))  # Tune's last checkpoint: t0 finished, t1 running
    searcher.on_trial_complete("t1", {"study_step": 20, METRIC: 0.9})  # after the checkpoint, in the journal only
    lost_running = searcher.suggest("t2")
    lost_finished = searcher.suggest("t3")
    searcher.on_trial_complete("t3", {"study_step": 20, METRIC: 0.4})
    del searcher  # the driver dies; Tune knows t0 (finished) and t1 (running) only

    restored = CellGridSearch(SPEC, storage=str(path))
    restored.restore(str(checkpoint))
    t2 = trial_of(restored.cell_study(lost_running["cell"]), "t2")
    assert t2.state == optuna.trial.TrialState.FAIL and "abandoned" in t2.user_attrs  # no Tune trial will finish it
    t3 = trial_of(restored.cell_study(lost_finished["cell"]), "t3")
    assert t3.state == optuna.trial.TrialState.COMPLETE and t3.value == 0.4  # kept: TPE learns from it
    assert restored._tried[lost_finished["cell"]][config_key(lost_finished["tuned"])] == 0.4
    # Budgets follow Tune's restored state (t2 and t3 are not in it; their slots run again).
    assert restored.remaining_trials == 9 - 2

    # Tune continues t1 from its Train checkpoint: it re-reports and finishes again.
    report(restored, "t1", 1)
    restored.on_trial_complete("t1", {"study_step": 20, METRIC: 0.1})
    study = restored.cell_study(restored._owner["t1"])
    t1 = trial_of(study, "t1")
    # The outcome and the reports told before the driver died stand; the replayed ones are ignored.
    assert t1.value == 0.9 and t1.intermediate_values == {10: objective(1)}
    configs = [run(restored, index) for index in range(4, 11)]
    assert restored.suggest("t11") is Searcher.FINISHED
    per_cell = Counter([restored._owner["t0"], restored._owner["t1"]] + [c["cell"] for c in configs])
    assert per_cell == {0: 3, 1: 3, 2: 3}


def test_skip_finished_after_lost_tune_state_does_not_tell_the_journal_twice(tmp_path):
    path = tmp_path / "optuna.journal"
    first = CellGridSearch(SPEC, storage=str(path))
    configs = [run(first, index) for index in range(4)]
    interrupted = first.suggest("t4")
    report(first, "t4", 4, steps=(10,))
    del first  # Tune's state is broken; results/ holds t0..t3 and a trial the journal never saw
    unseen = {"cell": 2, "axes": SPEC.cells()[2], "tuned": {"optim.lr": 3e-5, "model.temperature": 0.07}}
    rows = [result_row(f"t{i}", c, objective(i)) for i, c in enumerate(configs)] + [result_row("old", unseen, 0.3)]

    fresh = CellGridSearch(SPEC, storage=str(path))  # the driver's new searcher for a new experiment
    assert fresh.skip_finished(rows) == 5
    assert fresh.skip_finished(rows) == 0  # counted once
    assert fresh.remaining_trials == 9 - 5
    trials = [t for cell in range(3) for t in fresh.cell_study(cell).trials]
    ids = Counter(t.user_attrs.get("tune_trial_id") for t in trials)
    assert ids == {"t0": 1, "t1": 1, "t2": 1, "t3": 1, "t4": 1, "old": 1}
    t4 = trial_of(fresh.cell_study(interrupted["cell"]), "t4")
    assert t4.state == optuna.trial.TrialState.FAIL and "abandoned" in t4.user_attrs  # starts over as a new trial
    old = trial_of(fresh.cell_study(2), "old")
    assert old.params == unseen["tuned"] and old.value == 0.3 and old.user_attrs["source"] == "results"
    for index, config in enumerate(configs):
        assert fresh._tried[config["cell"]][config_key(config["tuned"])] == objective(index)
    rest = [run(fresh, index, prefix="n") for index in range(4)]
    assert fresh.suggest("n4") is Searcher.FINISHED
    assert Counter([c["cell"] for c in configs] + [2] + [c["cell"] for c in rest]) == {0: 3, 1: 3, 2: 3}


def test_database_url_keeps_the_cell_studies(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = CellGridSearch(SPEC, storage=url)
    configs = [run(searcher, index) for index in range(3)]
    checkpoint = tmp_path / "searcher-state.pkl"
    searcher.save(str(checkpoint))
    assert b"sqlalchemy" not in checkpoint.read_bytes().lower()  # no engine in the checkpoint
    restored = CellGridSearch(SPEC, storage=url)
    restored.restore(str(checkpoint))
    run(restored, 3)
    assert sorted(optuna.get_all_study_names(url)) == CELL_STUDIES
    for index, config in enumerate(configs):
        trial = trial_of(optuna.load_study(study_name=CELL_STUDIES[config["cell"]], storage=url), f"t{index}")
        assert trial.value == objective(index) and trial.intermediate_values[10] == objective(index) / 2
    assert sum(len(optuna.load_study(study_name=n, storage=url).trials) for n in CELL_STUDIES) == 4


def test_a_storage_holding_another_study_of_that_name_is_refused(tmp_path):
    path = str(tmp_path / "shared.journal")
    run(CellGridSearch(SPEC, storage=path), 0)
    other_axes = load_study("ratio", ["axes.batching.alpha=[0.25, 0.5, 1.0]", "search.samples_per_cell=3"])
    with pytest.raises(ValueError, match="belongs to another study"):
        CellGridSearch(other_axes, storage=path).suggest("x0")
    run(CellGridSearch(other_axes, storage=path, study_name="ratio-b"), 0)  # another name: fine


def test_storage_location_defaults_to_a_journal_in_the_study_directory(tmp_path):
    assert optuna_storage_location(SPEC, tmp_path) == str(tmp_path / "optuna.journal")
    relative = load_study("ratio", ["search.optuna_storage=optuna/cells.journal"])
    assert optuna_storage_location(relative, tmp_path) == str(tmp_path / "optuna" / "cells.journal")
    url = load_study("ratio", ["search.optuna_storage=postgresql://db.example/optuna"])
    assert optuna_storage_location(url, tmp_path) == "postgresql://db.example/optuna"


def test_checkpoint_of_the_in_memory_searcher_version_is_refused(tmp_path):
    searcher = CellGridSearch(SPEC)
    with pytest.raises(ValueError, match="older study/search.py"):
        searcher.__setstate__({"_optuna": [None, None, None], "_remaining": [3, 3, 3]})


def _get(app, path: str) -> dict:
    """One GET of a WSGI app, in process (no server, no socket)."""
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": BytesIO()}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:200])
    return json.loads(body)


def test_optuna_dashboard_opens_the_journal(tmp_path):
    import optuna_dashboard  # the `dashboard` extra (make installs it)
    path = tmp_path / "optuna.journal"
    searcher = CellGridSearch(SPEC, storage=str(path))
    configs = [run(searcher, index) for index in range(6)]
    # `optuna-dashboard <study dir>/optuna.journal`: the CLI guesses the storage from the file
    # path with the same loader wsgi() uses for a string.
    app = optuna_dashboard.wsgi(str(path))
    studies = {s["study_name"]: s for s in _get(app, "/api/studies")["study_summaries"]}
    assert sorted(studies) == CELL_STUDIES
    for cell, name in enumerate(CELL_STUDIES):
        detail = _get(app, f"/api/studies/{studies[name]['study_id']}")
        assert "batching.alpha=" in detail["note"]["body"]  # the study's description as its dashboard note
        trials = {}
        for trial in detail["trials"]:
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            alpha = SPEC.cells()[cell]["batching.alpha"]
            assert attrs["cell"] == str(cell) and attrs["axis/batching.alpha"] == str(alpha)
            trials[attrs["tune_trial_id"]] = trial
        assert sorted(trials) == sorted(f"t{i}" for i, c in enumerate(configs) if c["cell"] == cell)
        for trial_id, trial in trials.items():
            index = int(trial_id[1:])
            assert trial["state"] == "Complete" and trial["values"] == [objective(index)]
            assert [(v["step"], v["value"]) for v in trial["intermediate_values"]] == [
                (10, objective(index) / 2), (20, objective(index))]
