"""Benchmark: full-depth trials with partial fine-tuning and the activation cache.

    python bench/partial_finetune.py                 # the issue's configuration (~45 min on 2 cores)
    python bench/partial_finetune.py --steps 10 --languages en,de --max-queries 100   # a smoke run

One trial = ``hybridir.train.train`` (single process, 2 threads: the work one study trial does
on this machine) + the final evaluation of its model on XQuAD-R. Same configuration for every
row: the 12-layer offline multilingual-e5-small (Q4_0-dequantized), batch 16, hybrid batches,
11 NTREX-128 languages, ``--steps`` steps, evaluation of ``--languages`` with their full
candidate pools. Rows:

* ``full``: today's full fine-tuning (all layers, frozen word embeddings), no cache: the baseline.
* ``K=2 / K=4 cold``: ``model.train_layers=K`` with an empty activation cache.
* ``K=2 / K=4 warm``: the same trial again on the cache the cold trial left (same texts).
* ``K=4 warm, other seed``: another seed, so other training pairs; the evaluation texts repeat.

Each trial runs in its own process so that its peak RSS is its own. Then the quality table: at
the same budget, alpha 0 / 0.5 / 1 for K=2, K=4 and full fine-tuning, beside the untrained
model. Ratios are against the ``full`` row of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_machine, print_table  # also sets the offline environment

import torch

LANGUAGES = "en,de,ar,hi,th"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--languages", default=LANGUAGES, help="XQuAD-R languages evaluated (full pools)")
    parser.add_argument("--max-queries", type=int, help="questions per language (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, help="where caches and checkpoints go (default: a temp dir)")
    parser.add_argument("--skip-quality", action="store_true", help="only the cost and memory tables")
    parser.add_argument("--trial", help=argparse.SUPPRESS)  # internal: run one trial, print JSON
    return parser.parse_args(argv)


# ---------------------------------------------------------------------- one trial (child process)
def run_trial(spec: dict) -> dict:
    from hybridir.config import ModelConfig, TrainConfig
    from hybridir.data.registry import load_eval_set
    from hybridir.evaluation import encode_corpus, evaluate_lareqa, subset_corpus
    from hybridir.model import BiEncoder
    from hybridir.train import train

    torch.set_num_threads(spec["threads"])
    os.environ["RAYON_NUM_THREADS"] = str(spec["threads"])
    train_layers, cache = spec["train_layers"], spec["cache"]
    result = {"name": spec["name"]}
    if spec["steps"]:
        config = TrainConfig.model_validate({
            "model": {"name": "me5-small-offline", "train_layers": train_layers, "activation_cache": cache},
            "data": {"source": "ntrex", "num_languages": 11},
            "batching": {"mode": "hybrid", "alpha": spec["alpha"], "batch_size": spec["batch_size"]},
            "max_steps": spec["steps"], "log_every": max(1, spec["steps"] // 5), "seed": spec["seed"],
            "num_threads": spec["threads"],
        })  # fmt: skip
        started, started_cpu = time.perf_counter(), time.process_time()
        trained = train(config, Path(spec["out"]))
        result["train_s"] = time.perf_counter() - started
        result["train_cpu_s"] = time.process_time() - started_cpu
        result["s_per_step"] = result["train_s"] / spec["steps"]
        result["train_cache_hit_rate"] = trained.metrics.get("activation_cache_hit_rate")
        result["final_loss"] = trained.metrics["loss"]
        model_name = str(trained.model_dir)
    else:
        model_name = "me5-small-offline"
    corpus = load_eval_set("xquad-r", languages=spec["languages"])
    if spec["max_queries"]:
        corpus = subset_corpus(corpus, max_queries=spec["max_queries"])
    started, started_cpu = time.perf_counter(), time.process_time()
    model = BiEncoder.from_config(ModelConfig(name=model_name, train_layers=train_layers, activation_cache=cache))
    encoded = encode_corpus(model, corpus)
    scores = evaluate_lareqa(encoded).summary
    result["eval_s"] = time.perf_counter() - started
    result["eval_cpu_s"] = time.process_time() - started_cpu
    if model.bottom is not None and model.bottom.cache_attached:
        stats = model.bottom.cache_stats()
        result["eval_cache_hit_rate"] = stats["hits"] / max(1, stats["hits"] + stats["misses"])
    result.update({k: scores[k] for k in ("mono_map", "cross_map", "multi_map", "rank_distance")})
    result["n_texts"] = encoded.info["n_query_texts"] + encoded.info["n_candidate_texts"]
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def spawn(spec: dict) -> dict:
    """Run one trial in a fresh process; its last stdout line is the JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--trial", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"trial {spec['name']} failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {spec['name']}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items() if k != "name"), flush=True)
    return result


def cache_footprint(root: Path) -> tuple[int, int]:
    """(bytes on disk, cached texts) over every namespace under ``root``."""
    from safetensors import safe_open

    total, entries = 0, 0
    for shard in root.rglob("shard-*.safetensors"):
        total += shard.stat().st_size
        with safe_open(str(shard), framework="pt") as handle:
            entries += len(json.loads(handle.metadata()["keys"]))
    return total, entries


# ---------------------------------------------------------------------- the comparison (parent)
def main(argv=None) -> None:
    args = parse_args(argv)
    if args.trial:
        print(json.dumps(run_trial(json.loads(args.trial))))
        return
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="hybridir-bench-partial-"))
    work.mkdir(parents=True, exist_ok=True)
    print_machine(args.threads)
    languages = args.languages.split(",")
    print(f"config: me5-small-offline (12 layers), batch {args.batch_size}, {args.steps} steps, 11 NTREX "
          f"languages, eval XQuAD-R {languages} ({args.max_queries or 'all'} questions, full pools); work dir {work}\n")  # fmt: skip

    def trial(name, train_layers, alpha=0.5, seed=0, cache=None, steps=None):
        out = work / "runs" / name.replace(" ", "_").replace(",", "").replace("=", "")
        shutil.rmtree(out, ignore_errors=True)
        return spawn({
            "name": name, "train_layers": train_layers, "alpha": alpha, "seed": seed,
            "cache": str(cache) if cache else None, "steps": args.steps if steps is None else steps,
            "batch_size": args.batch_size, "languages": languages, "max_queries": args.max_queries,
            "threads": args.threads, "out": str(out),
        })  # fmt: skip

    for k in (2, 4):
        shutil.rmtree(work / f"cache-k{k}", ignore_errors=True)
    started = time.perf_counter()
    runs = {"full": trial("full", None)}
    for k in (2, 4):
        runs[f"K={k} cold"] = trial(f"K={k} cold", k, cache=work / f"cache-k{k}")
        runs[f"K={k} warm"] = trial(f"K={k} warm", k, cache=work / f"cache-k{k}")
    runs["K=4 warm, other seed"] = trial("K=4 warm, other seed", 4, seed=1, cache=work / "cache-k4")

    base = runs["full"]
    rows = []
    for name, run in runs.items():
        trial_s, trial_cpu = run["train_s"] + run["eval_s"], run["train_cpu_s"] + run["eval_cpu_s"]
        rows.append([
            name, run["s_per_step"], run["train_s"], run["eval_s"], trial_s,
            trial_s / (base["train_s"] + base["eval_s"]), run["eval_s"] / base["eval_s"],
            trial_cpu, trial_cpu / (base["train_cpu_s"] + base["eval_cpu_s"]), run["eval_cpu_s"] / base["eval_cpu_s"],
            run["train_cache_hit_rate"] if run.get("train_cache_hit_rate") is not None else "-",
            run.get("eval_cache_hit_rate", "-"), run["peak_rss_gib"],
        ])  # fmt: skip
    print_table(
        f"Trial cost ({args.steps} steps + final evaluation; ratios vs full fine-tuning; wall and CPU seconds)",
        ["trial", "s/step", "train s", "eval s", "trial s", "trial / full", "eval / full",
         "trial CPU s", "trial CPU / full", "eval CPU / full", "train cache hits", "eval cache hits", "peak RSS GiB"],
        rows,
    )  # fmt: skip
    print("CPU seconds count only the trial's own work: on a shared machine they are the robust ratio.\n")

    memory = []
    for k in (2, 4):
        size, entries = cache_footprint(work / f"cache-k{k}")
        memory.append([f"K={k} (bottom of {12 - k} layers)", entries, size / 2**20, size / max(entries, 1) * 1000 / 2**20])
    print_table("Activation cache on disk (fp32)", ["cache", "texts", "MiB", "MiB per 1,000 texts"], memory)

    if not args.skip_quality:
        quality = {(label, 0.5): runs[name] for label, name in (("full", "full"), ("K=2", "K=2 cold"), ("K=4", "K=4 cold"))}
        for alpha in (0.0, 1.0):
            quality[("full", alpha)] = trial(f"full alpha {alpha}", None, alpha=alpha)
            for k in (2, 4):
                quality[(f"K={k}", alpha)] = trial(f"K={k} alpha {alpha}", k, alpha=alpha, cache=work / f"cache-k{k}")
        zero = trial("untrained", 4, cache=work / "cache-k4", steps=0)
        header = ["fine-tuning", "alpha", "Mo mAP", "Cr mAP", "Mul mAP", "rank distance"]
        table = [["untrained", "-", zero["mono_map"], zero["cross_map"], zero["multi_map"], zero["rank_distance"]]]
        for label in ("full", "K=2", "K=4"):
            for alpha in (0.0, 0.5, 1.0):
                run = quality[(label, alpha)]
                table.append([label, alpha, run["mono_map"], run["cross_map"], run["multi_map"], run["rank_distance"]])
        print_table(f"Quality at the same budget ({args.steps} steps, batch {args.batch_size}), XQuAD-R {args.languages}", header, table)
        print(ordering_verdict(quality))
    print(f"\nbenchmark wall time: {(time.perf_counter() - started) / 60:.1f} min")


def ordering_verdict(quality: dict) -> str:
    """Does partial fine-tuning rank alpha 0 / 0.5 / 1 as full fine-tuning does, metric by metric?"""
    lines = ["Ordering of alpha 0 (X-Y) / 0.5 (hybrid) / 1 (X-X), best first, per metric:"]
    metrics = {"Mo mAP": ("mono_map", True), "Cr mAP": ("cross_map", True), "Mul mAP": ("multi_map", True),
               "rank distance": ("rank_distance", False)}  # fmt: skip
    for label, (key, higher_better) in metrics.items():
        orders = {}
        for fine_tuning in ("full", "K=2", "K=4"):
            values = {alpha: quality[(fine_tuning, alpha)][key] for alpha in (0.0, 0.5, 1.0)}
            orders[fine_tuning] = sorted(values, key=values.get, reverse=higher_better)
        same = {ft: orders[ft] == orders["full"] for ft in ("K=2", "K=4")}
        described = "; ".join(f"{ft}: {' > '.join(str(a) for a in order)}" for ft, order in orders.items())
        verdict = ", ".join(f"{ft} {'keeps' if ok else 'does NOT keep'} it" for ft, ok in same.items())
        lines.append(f"- {label}: {described} -> {verdict} (one seed per cell: orderings within noise are not findings)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
