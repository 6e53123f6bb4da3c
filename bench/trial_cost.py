"""Benchmark: where one default-study trial's wall time goes, study path vs library path.

    python bench/trial_cost.py                      # the default study's hybrid cell (alpha 0.5)
    python bench/trial_cost.py --alpha 1.0 --keep runs/trial-cost

The same trial runs twice, one after the other, each with a fresh activation cache that the
zero-shot evaluation fills first (as in a study, where the zero-shot run precedes every trial):

1. **study path**: ``study/run.py --study default`` restricted to one cell and one seed, in a
   subprocess (Ray Tune -> Ray Train, one worker). The trial's own row in
   ``results/trials.csv`` gives its wall time (Tune's ``time_total_s``) and where it went
   (``phase_s/*``, written by :mod:`hybridir.timing` in the loop and by the study's worker);
2. **library path**: the same ``TrainConfig`` through ``hybridir.train.train`` in this process,
   then the same final evaluation (``study.trial.evaluate_sets``), no Ray.

Phases: ``ray_start`` (Tune function start -> Train worker running: worker group, placement,
process group), ``data_load`` (training source, split, pool, sampler), ``model_load`` (model,
optimizer, cache attach), ``steps`` (batching, tokenisation, forward, backward, update: the
compute), ``validation``, ``intermediate_eval``, ``checkpoint_write``, ``reporting`` (the
callbacks: in a study, Ray's report and checkpoint persistence), ``final_eval`` (loading the
final model and scoring the final sets), ``other`` (the wall time not in any phase). Overhead
= wall time - steps - intermediate and final evaluation. Wall-clock times: on a shared machine
read the shares; the ratio study/library is measured in one run of this script.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, print_machine, print_table

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pandas as pd  # noqa: E402

from hybridir.timing import PREFIX, TRAIN_PHASES  # noqa: E402

PHASES = ("ray_start", *TRAIN_PHASES, "final_eval")
COMPUTE = ("steps", "intermediate_eval", "final_eval")


def overrides(alpha: float) -> list[str]:
    return [f"axes.batching.alpha=[{alpha}]", "claims=[]", "search.seeds=1"]


def study_path(alpha: float, directory: Path) -> tuple[dict[str, float], float]:
    """Run the one-trial study; return the trial's phases + wall time, and the driver's wall."""
    command = [sys.executable, str(REPO_ROOT / "study/run.py"), "--study", "default", "--output", str(directory),
               *[arg for item in overrides(alpha) for arg in ("--set", item)]]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO_ROOT)
    driver_wall = time.perf_counter() - started
    trials = pd.read_csv(directory / "results" / "trials.csv")
    row = trials[trials["status"] == "completed"].iloc[0]
    phases = {name: float(row.get(f"{PREFIX}{name}", 0.0) or 0.0) for name in PHASES}
    phases["wall"] = float(row["wall_time_s"])
    return phases, driver_wall


def library_path(alpha: float, directory: Path) -> dict[str, float]:
    """The same trial without Ray: zero-shot first (fills the cache like a study), then timed."""
    from hybridir.model import BiEncoder
    from hybridir.train import TrainCallback, train
    from study.spec import load_study
    from study.trial import INTER, evaluate, evaluate_sets, set_evaluator

    spec = load_study(REPO_ROOT / "study/studies/default.yaml", overrides(alpha))
    spec.resources.activation_cache = str(directory / "activation-cache")
    config = spec.trial_train_config({"axes": {"batching.alpha": alpha}})  # a search trial: the base seed
    if config.num_threads is None:
        config = config.model_copy(update={"num_threads": max(1, int(spec.resources.cpus_per_worker))})
    evaluate_sets(spec.evaluation.final, BiEncoder.from_config(config.model))  # the study's zero-shot run

    class Intermediate(TrainCallback):  # the study's intermediate evaluation, as its callback does
        evaluator = None

        def on_evaluate(self, step, model):
            if self.evaluator is None:
                self.evaluator = set_evaluator(spec.evaluation.intermediate, seed=spec.search.seed)
            return evaluate(model, self.evaluator, INTER)[0]

    started = time.perf_counter()
    result = train(config, directory / "train", callbacks=[Intermediate()], keep_checkpoints=1)
    final_started = time.perf_counter()
    model = BiEncoder.load(result.model_dir)
    if model.bottom is not None and config.model.activation_cache:
        model.attach_activation_cache(config.model.activation_cache, config.model.activation_cache_max_gb)
    evaluate_sets(spec.evaluation.final, model)
    finished = time.perf_counter()
    phases = {name: 0.0 for name in PHASES}
    phases.update(result.phase_seconds)
    phases["final_eval"] = finished - final_started
    phases["wall"] = finished - started
    return phases


def directory_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alpha", type=float, default=0.5, help="the default study's cell (batching.alpha)")
    parser.add_argument("--keep", type=Path, help="keep both runs in this directory (default: a temporary one)")
    args = parser.parse_args(argv)
    print_machine()
    with tempfile.TemporaryDirectory(prefix="trial-cost-") as temporary:
        root = args.keep or Path(temporary)
        root.mkdir(parents=True, exist_ok=True)
        study, driver_wall = study_path(args.alpha, root / "study")
        library = library_path(args.alpha, root / "library")
        checkpoints = sorted((root / "study").rglob("checkpoint_*"))
        checkpoint_mib = directory_size(checkpoints[-1]) / 2**20 if checkpoints else float("nan")

    rows = []
    for name in (*PHASES, "other"):
        values = []
        for path in (study, library):
            if name == "other":
                seconds = path["wall"] - sum(path[p] for p in PHASES)
            else:
                seconds = path[name]
            values += [f"{seconds:.1f}", f"{100 * seconds / path['wall']:.1f}%"]
        rows.append([name, *values])
    rows.append(["wall", f"{study['wall']:.1f}", "100%", f"{library['wall']:.1f}", "100%"])
    print_table(f"one default-study trial (alpha {args.alpha}): seconds and share of the trial's wall time",
                ["phase", "study s", "study %", "library s", "library %"], rows)
    overhead = {name: (path["wall"] - sum(path[p] for p in COMPUTE)) / path["wall"] for name, path in
                (("study", study), ("library", library))}
    print(f"overhead (wall - steps - intermediate and final evaluation): study {100 * overhead['study']:.1f}%, "
          f"library {100 * overhead['library']:.1f}% (target: study <= 10%)")
    print(f"study path / library path (trial wall time): {study['wall'] / library['wall']:.3f}x (target <= 1.15x)")
    print(f"study driver wall (Ray start, zero-shot, trial, report, export): {driver_wall:.1f} s")
    print(f"persisted Ray checkpoint of the trial: {checkpoint_mib:.1f} MiB")


if __name__ == "__main__":
    main()
