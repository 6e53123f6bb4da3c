"""Benchmark: the cost table ``study/run.py --plan`` estimates wall time from.

    flock /tmp/hybridir-ray.lock python bench/plan_costs.py            # writes study/costs/this-machine.json
    python bench/plan_costs.py --steps 6 --no-ray --output /tmp/costs.json
    python bench/plan_costs.py --merge run1.json run2.json              # fastest of several runs, refitted

Measures, through the library path (``hybridir.train.train`` and the study's evaluators, the
code every trial runs), at the default study's settings (``study/studies/default.yaml``):

* **training steps**: a few steps of ``hybridir.train`` at several (batch size, trained layers,
  model depth) points, each with a fresh activation cache (cold), and the default point once more
  on the cache the first run filled, at another seed (warm: a later trial of a study). Fitted by
  least squares to ``s/step = c + B * (a * K + b * (L - K) * (1 - h))`` (B batch size, K trained
  layers, L model depth, h the run's activation-cache hit rate; full fine-tuning: K = L);
* **per-trial phases** of the same runs: data load, model load, checkpoint write, validation;
* **evaluation**: the default study's intermediate set (XQuAD-R en/th, 100 queries, full pools)
  encoded and scored by the untrained full-depth model with a fresh cache (the zero-shot path:
  every layer runs) and again on the filled cache at K = 2 and K = 4 trained layers (the trials'
  path: only the top K layers run); seconds per encoded text;
* **export**: writing one full model (``BiEncoder.save``), as the study's export does per cell;
* **Ray start** (unless ``--no-ray``): ``ray.init`` as ``study/run.py`` calls it, and shutdown.

The per-trial start of Ray Train's worker group is not measured here (it needs a Tune trial):
the table carries bench/README.md (2)'s measured start-up with its source, and a study's own
``phase_s/ray_start`` replaces it once the study has run (``--plan --resume DIR``). Wall-clock
seconds on a shared machine: the file records the date and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import REPO_ROOT, machine_info

import numpy as np  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "study" / "costs" / "this-machine.json"
# (batch size, trained layers, model preset): cold runs, fitted together with the warm rerun.
POINTS = [(16, 2, "me5-small-offline"), (32, 2, "me5-small-offline"), (16, 4, "me5-small-offline"),
          (16, 2, "me5-small-offline-l6")]
# Ray Train's worker-group start per trial, measured by bench/ray_overhead.py (bench/README.md (2)).
RAY_TRAIN_START = {"seconds": 16.1, "source": "bench/README.md (2): fit() to first step, 2 trained layers, "
                                              "2 CPU cores (16.1 s; 19.5 s at 12 layers)"}
# One process with 2 threads vs 2 gloo DDP workers of 1 thread, same global batch (default.yaml).
DDP_CPU_FACTOR = {"factor": 1.1 / 0.7, "source": "study/studies/default.yaml: 2 gloo DDP workers x 1 thread "
                                                 "1.1 s/step vs one process with 2 threads 0.7 s/step (2026-12-02)"}


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def train_point(spec, batch: int, layers: int, model: str, steps: int, cache: Path, seed: int, work: Path) -> dict:
    from hybridir.model import model_depth
    from hybridir.train import train

    config = spec.train_config({"batching.batch_size": batch, "model.train_layers": layers, "model.name": model},
                               seed=seed)
    model_section = config.model.model_copy(update={"activation_cache": str(cache)})
    config = config.model_copy(update={"max_steps": steps, "eval_every": steps, "checkpoint_every": steps,
                                       "log_every": steps, "model": model_section,
                                       "num_threads": max(1, int(spec.resources.cpus_per_worker))})
    depth = model_depth(config.model)
    out = work / f"train-{batch}-{layers}-{model}-{seed}"
    result = train(config, out, keep_checkpoints=1)
    shutil.rmtree(out, ignore_errors=True)
    phases = dict(result.phase_seconds)
    return {"batch_size": batch, "train_layers": layers, "num_layers": depth, "model": model, "steps": steps,
            "seed": seed, "hit_rate": float(result.metrics.get("activation_cache_hit_rate", 0.0)),
            "step_s": phases.get("steps", float("nan")) / steps, "phases": phases}


def fit_steps(points: list[dict]) -> dict:
    """Non-negative least squares of s/step on [1, B*K, B*(L-K)*(1-h)] (no coefficient may be
    negative: more pairs or layers never cost less)."""
    from scipy.optimize import nnls

    rows = [[1.0, p["batch_size"] * p["train_layers"],
             p["batch_size"] * (p["num_layers"] - p["train_layers"]) * (1 - p["hit_rate"])] for p in points]
    y = [p["step_s"] for p in points]
    coef, _ = nnls(np.asarray(rows), np.asarray(y))
    predicted = np.asarray(rows) @ coef
    return {"fixed_s": float(coef[0]), "per_pair_trained_layer_s": float(coef[1]),
            "per_pair_frozen_layer_s": float(coef[2]),
            "max_relative_error": float(np.max(np.abs(predicted - y) / np.asarray(y)))}


def validation_per_pair(points: list[dict]) -> float:
    """Median seconds per validation pair: each run validated once (log_every = its steps), on
    VALIDATION_BATCHES batches of its batch size."""
    from hybridir.train import VALIDATION_BATCHES

    return float(np.median([p["phases"].get("validation", 0.0) / (VALIDATION_BATCHES * p["batch_size"])
                            for p in points]))


def eval_costs(spec, cache: Path) -> dict:
    from hybridir.model import BiEncoder
    from study.trial import evaluate, set_evaluator

    evaluator = set_evaluator(spec.evaluation.intermediate, seed=spec.search.seed)
    out = {}
    for label, layers in (("full", 2), ("cached_k2", 2), ("cached_k4", 4), ("cached_k4", 4)):
        # The first K=4 call fills the 8-layer bottom's cache; the second is the cached rate.
        config = spec.base_config.model.model_copy(update={"train_layers": layers, "activation_cache": str(cache)})
        model = BiEncoder.from_config(config)
        started = time.perf_counter()
        _, result = evaluate(model, evaluator, "x")
        seconds = time.perf_counter() - started
        texts = int(result.info.get("n_query_texts", 0)) + int(result.info.get("n_candidate_texts", 0))
        out[label] = {"seconds": seconds, "texts": texts, "per_text_s": seconds / texts, "train_layers": layers,
                      "num_layers": model.num_layers}
    out["full"]["note"] = "cold cache: every layer runs (the zero-shot evaluation's path)"
    return out


def export_cost(spec, work: Path) -> dict:
    from hybridir.model import BiEncoder

    model = BiEncoder.from_config(spec.base_config.model.model_copy(update={"activation_cache": None}))
    started = time.perf_counter()
    model.save(work / "export")
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in (work / "export").rglob("*") if p.is_file())
    shutil.rmtree(work / "export", ignore_errors=True)
    return {"seconds": seconds, "mib": size / 2**20}


def ray_start_cost(spec) -> dict:
    import logging

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count() or 1, resources={"tune_driver": 1}, include_dashboard=True,
             object_store_memory=512 * 1024**2, logging_level=logging.WARNING)
    ready = time.perf_counter() - started
    started = time.perf_counter()
    ray.shutdown()
    return {"init_s": ready, "shutdown_s": time.perf_counter() - started}


def merge_tables(tables: list[dict], sources: list[str]) -> dict:
    """One table from several runs of this script on the same machine: per training point the
    fastest cold run of all, refitted; every other entry the smallest of the runs' (on a shared
    machine the least disturbed measurement is the closest to the machine's own cost)."""
    merged = json.loads(json.dumps(tables[-1]))
    by_key: dict[tuple, dict] = {}
    for table in tables:
        for point in table["train_step"]["points"]:
            if point["seed"] != tables[0]["train_step"]["points"][0]["seed"]:
                continue  # the warm rerun (another seed) is not a cold point
            key = (point["batch_size"], point["train_layers"], point["model"])
            runs = list(point.get("runs", [point["step_s"]]))
            if key in by_key:
                runs += by_key[key]["runs"]
                if point["step_s"] >= by_key[key]["step_s"]:
                    by_key[key]["runs"] = runs
                    continue
            by_key[key] = {**point, "runs": runs}
    points = list(by_key.values())
    merged["train_step"].update(fit_steps(points))
    merged["train_step"]["points"] = points
    merged["train_step"]["warm_hit_rate"] = min(t["train_step"]["warm_hit_rate"] for t in tables)
    trial = merged["trial"]
    for key in ("data_load_s", "model_load_s", "checkpoint_write_s", "validation_s"):
        trial[key] = min(t["trial"][key] for t in tables)
    trial["validation_per_pair_s"] = validation_per_pair(points)
    trial["validation_batches"] = 4
    evaluation = merged["evaluation"]
    evaluation["per_text_full_s"] = min(t["evaluation"]["per_text_full_s"] for t in tables)
    evaluation["per_text_cached_s"] = {k: min(t["evaluation"]["per_text_cached_s"][k] for t in tables)
                                       for k in evaluation["per_text_cached_s"]}
    evaluation["runs"] = [t["evaluation"]["runs"] for t in tables]
    merged["export"]["per_model_s"] = min(t["export"]["per_model_s"] for t in tables)
    inits = [t["study"]["ray_init_s"] for t in tables if t["study"].get("ray_init_s") is not None]
    merged["study"]["ray_init_s"] = min(inits) if inits else None
    merged["meta"]["merged_from"] = [{"source": src, "date": t["meta"]["date"], "command": t["meta"]["command"],
                                      "load_average_before": t["meta"]["load_average_before"],
                                      "load_average_after": t["meta"]["load_average_after"]}
                                     for src, t in zip(sources, tables)]
    merged["meta"]["command"] = "python bench/plan_costs.py --merge " + " ".join(sources)
    merged["meta"]["note"] = ("wall-clock seconds on a machine shared with other jobs (load average 2-4.5 on 2 cores "
                              "during both runs): per training point the fastest of all cold runs, every other entry "
                              "the smallest of the runs; still slower than a quiet machine (default.yaml: 0.7 s/step "
                              "quiet, 2026-12-02)")
    return merged


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--merge", nargs="+", type=Path, metavar="TABLE",
                        help="measure nothing: merge tables written by earlier runs (see merge_tables)")
    parser.add_argument("--steps", type=int, default=8, help="training steps per point")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--no-ray", action="store_true", help="skip the ray.init measurement")
    parser.add_argument("--repeats", type=int, default=1, help="cold runs per training point (the fastest counts)")
    args = parser.parse_args(argv)
    if args.merge:
        table = merge_tables([json.loads(path.read_text()) for path in args.merge], [str(p) for p in args.merge])
        args.output.write_text(json.dumps(table, indent=2) + "\n")
        print(json.dumps({k: v for k, v in table["train_step"].items() if k != "points"}), f"wrote {args.output}")
        return
    from study.spec import load_study

    spec = load_study("default")
    started_at = datetime.now(timezone.utc)
    load_before = load_average()
    table: dict = {}
    with tempfile.TemporaryDirectory(prefix="plan-costs-") as temporary:
        work = Path(temporary)
        evaluation = eval_costs(spec, work / "eval-cache")
        print(json.dumps(evaluation, indent=1), flush=True)
        points = []
        for batch, layers, model in POINTS:
            # --repeats: the fastest of N cold runs (each on a fresh cache): on a shared machine the
            # minimum is the least disturbed; every run is kept under "runs".
            runs = []
            for repeat in range(args.repeats):
                cache = work / f"cache-{batch}-{layers}-{model}" / (str(repeat) if repeat else "")
                runs.append(train_point(spec, batch, layers, model, args.steps, cache, seed=spec.base_seed, work=work))
                print(json.dumps(runs[-1]), flush=True)
            best = min(runs, key=lambda run: run["step_s"])
            points.append({**best, "runs": [run["step_s"] for run in runs]})
        # Warm: the default point again on the cache its cold run filled, another seed.
        batch, layers, model = POINTS[0]
        points.append(train_point(spec, batch, layers, model, args.steps, work / f"cache-{batch}-{layers}-{model}",
                                  seed=spec.base_seed + 1, work=work))
        print(json.dumps(points[-1]), flush=True)
        export = export_cost(spec, work)
        ray = None if args.no_ray else ray_start_cost(spec)
    default_cold, default_warm = points[0], points[-1]
    table = {
        "meta": {
            "what": "cost table of study/run.py --plan (study/plan.py); measured by bench/plan_costs.py",
            "command": f"flock /tmp/hybridir-ray.lock python bench/plan_costs.py --steps {args.steps} "
                       f"--repeats {args.repeats}"
                       + (" --no-ray" if args.no_ray else ""),
            "date": started_at.isoformat(timespec="seconds"),
            "load_average_before": load_before, "load_average_after": load_average(),
            "machine": machine_info(max(1, int(spec.resources.cpus_per_worker))),
            "cpus": os.cpu_count(), "threads": max(1, int(spec.resources.cpus_per_worker)),
            "settings": "study/studies/default.yaml (mE5-small offline, lengths 64/128, batch 16, 2 trained "
                        "layers, one process with both cores)",
            "note": "wall-clock seconds on a machine shared with other jobs; read them with the load average",
        },
        "train_step": {**fit_steps(points), "points": points,
                       "warm_hit_rate": default_warm["hit_rate"],
                       "note": "s/step = fixed_s + B * (per_pair_trained_layer_s * K + per_pair_frozen_layer_s "
                               "* (L - K) * (1 - hit_rate)); the first trial of a study runs cold (hit 0), later "
                               "ones at warm_hit_rate (the default point rerun on the filled cache, another seed)"},
        "trial": {
            "data_load_s": float(np.median([p["phases"].get("data_load", 0.0) for p in points])),
            "model_load_s": float(np.median([p["phases"].get("model_load", 0.0) for p in points])),
            "checkpoint_write_s": float(np.median([p["phases"].get("checkpoint_write", 0.0) for p in points])),
            "validation_s": float(np.median([p["phases"].get("validation", 0.0) for p in points])),
            "validation_per_pair_s": validation_per_pair(points),
            "validation_batches": 4,
            "ray_start_s": RAY_TRAIN_START["seconds"], "ray_start_source": RAY_TRAIN_START["source"],
            "note": "per trial: ray_start + data_load + model_load, plus checkpoint_write per checkpoint "
                    "(every evaluation.intermediate.every steps) and validation_batches x batch size x "
                    "validation_per_pair_s per validation (every log_every steps and at each checkpoint)",
        },
        "evaluation": {
            "per_text_full_s": evaluation["full"]["per_text_s"],
            "per_text_cached_s": {"2": evaluation["cached_k2"]["per_text_s"], "4": evaluation["cached_k4"]["per_text_s"]},
            "num_layers": evaluation["full"]["num_layers"], "runs": evaluation,
            "note": "seconds per encoded text (queries and candidates of XQuAD-R en/th, encoded and scored); "
                    "cached: only the top K layers run on the frozen bottom's cached states",
        },
        "export": {"per_model_s": export["seconds"], "mib": export["mib"]},
        "study": {"ray_init_s": None if ray is None else ray["init_s"],
                  "ray_shutdown_s": None if ray is None else ray["shutdown_s"]},
        "workers": {"ddp_cpu_factor": DDP_CPU_FACTOR["factor"], "source": DDP_CPU_FACTOR["source"]},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(table, indent=2) + "\n")
    print(f"cold default point {default_cold['step_s']:.3f} s/step (hit {default_cold['hit_rate']:.2f}), "
          f"warm {default_warm['step_s']:.3f} s/step (hit {default_warm['hit_rate']:.2f}); wrote {args.output}")


if __name__ == "__main__":
    main()
