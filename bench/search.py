"""Benchmark 4: compute the study's search (Optuna TPE + ASHA) needs to get within 0.01 mAP of
the best configuration of the full grid over the same space.

    python bench/search.py                          # grid (12 configs) then 5 search seeds
    python bench/search.py --curves /tmp/curves.json --search-seeds 10   # reuse a recorded grid

What is done, exactly:

1. The grid. Every configuration of the space (optim.lr x batching.alpha) is trained for real
   with ``hybridir.train.train`` (offline mE5-small truncated to ``--layers`` layers, NTREX-128,
   ``--max-steps`` steps) and evaluated on an XQuAD-R subset every ``--every`` steps with the
   study's own evaluation function (``study.trial.evaluate``: encode_corpus + evaluate_lareqa,
   the objective ``inter/cross_map``). Each learning curve is recorded (``--curves``).
2. The search. A Ray Tune experiment driven by the study's real search code,
   ``study.search.CellGridSearch`` (one seeded Optuna TPE study, in memory here, over the same space as
   categorical choices) and ``study.search.PerCellASHA`` (ASHA on the study step), with one
   trial at a time. Its trainable does not retrain: it replays the recorded curve of the
   configuration Optuna suggested (training is deterministic for a config and seed, so the
   replay reports what a rerun would). ASHA stops trials as it would in a study.
3. Compute = trial-steps: a grid trial costs ``max_steps``; a search trial costs the study
   step it reached before ASHA stopped it (or it finished). "Reached" = the first finished
   search trial whose final objective is within ``--tolerance`` of the grid's best; its compute
   is the sum of steps of every trial up to and including it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

from _common import add_common_args, print_machine, print_table, set_threads

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from hybridir.train import TrainCallback, train
from study.search import CellGridSearch, PerCellASHA
from study.spec import StudySpec
from study.vocabulary import STEP, intermediate_metric

LRS = [1e-5, 3e-5, 1e-4, 3e-4]  # the default space: 4 x 3 = 12 configurations
ALPHAS = [0.0, 0.5, 1.0]


def study_spec(args, search_seed: int) -> StudySpec:
    """A one-cell study whose tuned space is exactly the grid (as categorical choices)."""
    return StudySpec.model_validate({
        "name": "bench-search",
        "question": "benchmark: search cost vs grid",
        "base": {
            "model": {"name": "me5-small-offline", "num_layers": args.layers,
                      "max_query_length": 32, "max_passage_length": 64},
            "data": {"source": "ntrex", "num_languages": 5, "max_pairs_per_language": 200},
            "batching": {"mode": "hybrid", "batch_size": args.batch_size},
            "max_steps": args.max_steps, "log_every": args.every, "optim": {"warmup_steps": 2},
            "num_threads": args.threads,
        },
        "tune": {
            "optim.lr": {"distribution": "choice", "values": args.lrs},
            "batching.alpha": {"distribution": "choice", "values": args.alphas},
        },
        "search": {"samples_per_cell": args.trials, "seed": search_seed, "metric": "cross_map", "mode": "max",
                   "asha": {"grace_period": args.grace, "reduction_factor": 2}},
        "evaluation": {
            "intermediate": {"dataset": "xquad-r", "languages": args.eval_languages.split(","),
                             "max_queries": args.eval_queries, "every": args.every},
            "final": [{"dataset": "xquad-r", "languages": args.eval_languages.split(","),
                       "max_queries": args.eval_queries}],
        },
        "resources": {"num_workers": 1, "max_concurrent_trials": 1},
        "report": {"builder": "ratio"},
    })  # fmt: skip


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def key(lr: float, alpha: float) -> str:
    return f"lr={lr:g},alpha={alpha:g}"


class RecordCurve(TrainCallback):
    """Evaluates like a study trial's intermediate evaluation and records (step, objective)."""

    def __init__(self, corpus, metric: str):
        self.corpus, self.metric, self.curve = corpus, metric, []

    def on_evaluate(self, step, model):
        from study.trial import evaluate

        metrics, _ = evaluate(model, self.corpus, "inter")
        self.curve.append([step, metrics[self.metric]])
        return metrics


def run_grid(args) -> dict[str, list[list[float]]]:
    from study.trial import set_evaluator, trial_train_config

    spec = study_spec(args, 0)
    corpus = set_evaluator(spec.evaluation.intermediate, seed=spec.search.seed)  # an Evaluator
    curves = {}
    for lr, alpha in itertools.product(args.lrs, args.alphas):
        config = trial_train_config(spec, {"tuned": {"optim.lr": lr, "batching.alpha": alpha}})
        config = config.model_copy(update={"checkpoint_every": 0})  # nothing to resume here
        recorder = RecordCurve(corpus, intermediate_metric(spec))
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            train(config, out, callbacks=[recorder])
        curves[key(lr, alpha)] = recorder.curve
        print(f"grid {key(lr, alpha)}: {recorder.curve}  ({time.perf_counter() - started:.0f} s)", flush=True)
    return curves


def replay(config: dict, curves: dict) -> None:
    """Tune trainable: report the recorded curve of the suggested configuration."""
    from ray import tune

    tuned = config["tuned"]
    for step, value in curves[key(tuned["optim.lr"], tuned["batching.alpha"])]:
        tune.report({STEP: step, "inter/cross_map": value})


def run_search(args, curves: dict, search_seed: int) -> list[dict]:
    """One Tune experiment with the study's searcher and scheduler; trials in start order."""
    from ray import tune

    spec = study_spec(args, search_seed)
    searcher, scheduler = CellGridSearch(spec), PerCellASHA(spec)
    storage = tempfile.mkdtemp(prefix="bench-search-")
    tuner = tune.Tuner(
        tune.with_parameters(replay, curves=curves),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=searcher.total_trials,
                                    max_concurrent_trials=1),
        run_config=tune.RunConfig(storage_path=storage, name=f"seed{search_seed}", verbose=0),
    )  # fmt: skip
    grid = tuner.fit()
    trials = []
    for result in grid:
        history = result.metrics_dataframe
        trials.append({
            "config": key(result.config["tuned"]["optim.lr"], result.config["tuned"]["batching.alpha"]),
            "steps": int(history[STEP].max()),
            "final": float(history.sort_values(STEP)["inter/cross_map"].iloc[-1]),
            "trial_id": result.metrics["trial_id"],
        })
    # Trials ran one at a time; Tune numbers trial ids in creation order.
    return sorted(trials, key=lambda t: t["trial_id"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.set_defaults(layers=1)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--every", type=int, default=4, help="evaluation (and ASHA rung) interval, steps")
    parser.add_argument("--grace", type=int, default=4, help="ASHA grace period, steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--trials", type=int, default=6, help="search trials (Optuna samples; 6 x 12 steps = 50%% of the grid at most)")
    parser.add_argument("--search-seeds", type=int, default=10)
    parser.add_argument("--eval-languages", default="en,zh")
    parser.add_argument("--eval-queries", type=int, default=30)
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--lrs", type=_floats, default=LRS, help="comma-separated learning rates of the space")
    parser.add_argument("--alphas", type=_floats, default=ALPHAS, help="comma-separated alphas of the space")
    parser.add_argument("--curves", type=Path, help="JSON of recorded grid curves: read if it exists, else written")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    print_machine(args.threads)

    if args.curves and args.curves.is_file():
        curves = json.loads(args.curves.read_text())
    else:
        curves = run_grid(args)
        if args.curves:
            args.curves.write_text(json.dumps(curves, indent=1))
    finals = {k: c[-1][1] for k, c in curves.items()}
    best_key = max(finals, key=finals.get)
    best = finals[best_key]
    grid_compute = len(curves) * args.max_steps
    print_table(
        f"grid: {len(curves)} configs x {args.max_steps} steps, objective inter/cross_map "
        f"(XQuAD-R {args.eval_languages}, {args.eval_queries} questions), {args.layers} layer(s)",
        ["config", *[f"step {s}" for s, _ in next(iter(curves.values()))]],
        [[k, *[v for _, v in c]] for k, c in sorted(curves.items(), key=lambda kv: -kv[1][-1][1])],
    )

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=128 * 2**20)  # fmt: skip
    rows = []
    try:
        for seed in range(args.search_seeds):
            trials = run_search(args, curves, seed)
            spent, reached_at, found = 0, None, None
            for trial in trials:
                spent += trial["steps"]
                if reached_at is None and trial["steps"] == args.max_steps and trial["final"] >= best - args.tolerance:
                    reached_at, found = spent, trial
            rows.append([
                seed, " ".join(f"{t['config']}@{t['steps']}" for t in trials), spent,
                reached_at if reached_at is not None else "not reached",
                f"{100 * reached_at / grid_compute:.0f}%" if reached_at is not None else "-",
                found["final"] if found else max(t["final"] for t in trials if t["steps"] == args.max_steps),
            ])  # fmt: skip
    finally:
        ray.shutdown()
    print_table(
        f"search: study.search CellGridSearch (Optuna TPE) + PerCellASHA (grace {args.grace}, rf 2), "
        f"{args.trials} trials; grid best {best_key} = {best:.4f}, grid compute {grid_compute} trial-steps",
        ["search seed", "trials (config@steps run)", "trial-steps total", "trial-steps to reach best-0.01",
         "share of grid", "objective found"],
        rows,
    )  # fmt: skip
    reached = [r[3] for r in rows if isinstance(r[3], int)]
    print(f"reached within {args.tolerance} in {len(reached)}/{len(rows)} seeds; "
          f"median share of grid compute among those: "
          f"{100 * sorted(reached)[len(reached) // 2] / grid_compute if reached else float('nan'):.0f}%")


if __name__ == "__main__":
    main()
