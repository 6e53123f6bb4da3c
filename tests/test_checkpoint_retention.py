"""Which Train checkpoints a study keeps: each cell's best completed trial (the model the export
publishes), nothing of the others, and nothing at all with the pre-export behaviour."""

from __future__ import annotations

from pathlib import Path

from study.tune_callback import ResultsCallback

RESOURCES = {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 2}


def _checkpoint(runs: Path, phase: str, trial_id: str) -> Path:
    directory = runs / f"train-{phase}-{trial_id}" / "checkpoint_2026-12-02_10-00-00.000000" / "model"
    directory.mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(b"weights")
    return directory.parent


def _finish(callback: ResultsCallback, trial_id: str, cell: int, objective: float | None, phase: str = "search",
            seed: int | None = None) -> None:
    result = {"study_step": 40, "time_total_s": 1.0}
    if objective is not None:  # completed: the final evaluation ran; pruned otherwise
        result.update({"inter/cross_map": objective, "final/xquad-r/cross_map": objective})
    config = {"phase": phase, "cell": cell, "axes": {"batching.alpha": float(cell)}, "tuned": {}, "seed": seed}
    callback.record(trial_id, config, result, status=None)


def test_each_cell_keeps_only_its_best_trials_checkpoint(tmp_path):
    runs = tmp_path / "ray"
    callback = ResultsCallback(tmp_path / "study", RESOURCES, train_runs_dir=str(runs), experiment="search",
                               keep_best=("inter/cross_map", "max"))
    first, better, worse, pruned, other_cell = (
        _checkpoint(runs, "search", trial) for trial in ("a1", "b2", "c3", "d4", "e5"))
    _finish(callback, "a1", cell=0, objective=0.50)
    assert first.is_dir()  # the best so far
    _finish(callback, "b2", cell=0, objective=0.60)
    assert not first.exists() and better.is_dir()
    _finish(callback, "c3", cell=0, objective=0.55)
    assert not worse.exists() and better.is_dir()
    _finish(callback, "d4", cell=0, objective=None)  # pruned: never exported
    assert not pruned.exists()
    _finish(callback, "e5", cell=1, objective=0.10)
    assert better.is_dir() and other_cell.is_dir()
    # The per-query file and the run folder itself stay: only checkpoints are dropped.
    assert (runs / "train-search-a1").is_dir()

    # A seed re-run of the same cell that beats the search trial takes over (across phases).
    seeds = ResultsCallback(tmp_path / "study", RESOURCES, train_runs_dir=str(runs), experiment="seeds",
                            keep_best=("inter/cross_map", "max"))
    rerun = _checkpoint(runs, "seeds", "f6")
    _finish(seeds, "f6", cell=0, objective=0.70, phase="seeds", seed=1)
    assert rerun.is_dir() and not better.exists()


def test_without_keep_best_every_finished_trial_drops_its_checkpoints(tmp_path):
    runs = tmp_path / "ray"
    # A callback pickled by an older version has no _keep_best: it keeps nothing, as before.
    callback = ResultsCallback(tmp_path / "study", RESOURCES, train_runs_dir=str(runs), experiment="search")
    del callback.__dict__["_keep_best"]
    checkpoint = _checkpoint(runs, "search", "a1")
    _finish(callback, "a1", cell=0, objective=0.5)
    assert not checkpoint.exists()


def test_with_keep_checkpoints_nothing_is_dropped(tmp_path):
    runs = tmp_path / "ray"
    callback = ResultsCallback(tmp_path / "study", RESOURCES, train_runs_dir=None, experiment="search",
                               keep_best=("inter/cross_map", "max"))
    kept = [_checkpoint(runs, "search", trial) for trial in ("a1", "b2")]
    _finish(callback, "a1", cell=0, objective=0.5)
    _finish(callback, "b2", cell=0, objective=0.6)
    assert all(path.is_dir() for path in kept)
