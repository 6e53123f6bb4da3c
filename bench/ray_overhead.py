"""Benchmark 2: what Ray Train costs a trial: per step after warm-up, and the fixed start-up.

    python bench/ray_overhead.py                   # 2 layers, batch 16, 14 steps per run
    python bench/ray_overhead.py --layers 12 --steps 20

The same training loop (``hybridir.train.train``, same config, NTREX-128, offline model) runs
three ways, one after the other in this process' session:

1. Ray Train ``TorchTrainer`` with ``num_workers=0``: the loop in the calling process, one
   process doing the whole global batch with all threads;
2. Ray Train with 2 workers, DDP over gloo (what a study trial does), 1 thread per worker;
3. the same 2-process DDP without Ray (torch.multiprocessing + gloo): the expected DDP cost.

Per-step time = the loop's own ``s_per_step`` over the reports after the first (warm-up)
window. Ray's per-step overhead = (2) / (3) - 1 (the DDP cost itself, (3) / (1), is reported
separately). Start-up = wall time from ``fit()`` (or spawn) to the first training step:
worker start + process group (Ray), then data + model set-up (hybridir), split.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import add_common_args, print_machine, print_table

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch.multiprocessing as mp

from hybridir.config import TrainConfig
from hybridir.train import METRICS_LOG, TrainCallback, train


def machine_busy_cpu_s() -> float:
    """CPU seconds all processes on this machine have used since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Timeline(TrainCallback):
    """Rank 0 records when its worker entered, when the first loop report arrived, and at each
    report its own CPU time and the whole machine's: the profile of where step time goes."""

    def __init__(self, out: Path, entered: float):
        self.out, self.entered, self.first, self.marks = out, entered, None, []

    def on_log(self, step: int, metrics: dict) -> None:
        if self.first is None:
            # elapsed_s runs from the start of the loop: subtract it to date the first step.
            self.first = time.time() - metrics["elapsed_s"]
        self.marks.append([step, time.process_time(), machine_busy_cpu_s()])
        (self.out / "timeline.json").write_text(
            json.dumps({"entered": self.entered, "loop_start": self.first, "marks": self.marks})
        )


def run_loop(config_json: str, out_dir: str, rank: int) -> None:
    entered = time.time()
    config = TrainConfig.model_validate_json(config_json)
    out = Path(out_dir)
    callbacks = [Timeline(out, entered)] if rank == 0 else []
    train(config, out / "run", callbacks=callbacks)


def ray_worker(loop_config: dict) -> None:
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    run_loop(loop_config["config"], loop_config["out"], rank)


def _spawned(rank: int, world_size: int, port: int, config_json: str, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    run_loop(config_json, out_dir, rank)
    dist.destroy_process_group()


def steady_s_per_step(out: Path) -> float:
    reports = [json.loads(line) for line in (out / "run" / METRICS_LOG).read_text().splitlines()]
    later = reports[1:]
    steps = [b["step"] - a["step"] for a, b in zip(reports, later)]
    return sum(r["s_per_step"] * n for r, n in zip(later, steps)) / sum(steps)


def cpu_profile(timeline: dict, workers: int) -> dict:
    """Per step after the warm-up window: rank 0's CPU seconds, and the CPU seconds the rest of
    the machine used beside the workers (Ray's daemons and controller, the driver, anything else)."""
    (step0, cpu0, busy0), (step1, cpu1, busy1) = timeline["marks"][0], timeline["marks"][-1]
    steps = max(step1 - step0, 1)
    worker = (cpu1 - cpu0) / steps
    machine = (busy1 - busy0) / steps
    return {"worker_cpu_s_per_step": worker, "other_cpu_s_per_step": max(machine - worker * max(workers, 1), 0.0)}


def result(out: Path, started: float, finished: float, workers: int = 1) -> dict:
    timeline = json.loads((out / "timeline.json").read_text())
    return {
        **cpu_profile(timeline, workers),
        "s_per_step": steady_s_per_step(out),
        "to_worker_s": timeline["entered"] - started,
        "setup_s": timeline["loop_start"] - timeline["entered"],
        "startup_s": timeline["loop_start"] - started,
        "wall_s": finished - started,
    }


def run_ray(config: TrainConfig, workers: int, storage: Path, name: str) -> dict:
    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={"config": config.model_dump_json(), "out": str(out)},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=ray.train.RunConfig(name=f"{name}-{time.time_ns()}", storage_path=str(storage)),
    )
    started = time.time()
    trainer.fit()
    return result(out, started, time.time(), workers)


def run_plain_ddp(config: TrainConfig, workers: int) -> dict:
    from memory import free_port

    out = Path(tempfile.mkdtemp(prefix="bench-ddp-"))
    started = time.time()
    mp.spawn(_spawned, args=(workers, free_port(), config.model_dump_json(), str(out)), nprocs=workers, join=True)
    return result(out, started, time.time(), workers)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.set_defaults(layers=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--log-every", type=int, default=2, help="report window; the first window is warm-up")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    print_machine(args.threads)

    def config(threads: int) -> TrainConfig:
        return TrainConfig.model_validate({
            "model": {"name": "me5-small-offline", "num_layers": args.layers, "max_passage_length": 128},
            "data": {"source": "ntrex", "num_languages": 5, "max_pairs_per_language": 400},
            "batching": {"batch_size": args.batch_size},
            "max_steps": args.steps, "log_every": args.log_every, "num_threads": threads,
        })  # fmt: skip

    import ray

    ray.init(address="local", num_cpus=args.threads, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 2**20)  # fmt: skip
    storage = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        single = run_ray(config(args.threads), 0, storage, "w0")
        ray_ddp = run_ray(config(max(1, args.threads // args.workers)), args.workers, storage, "ddp")
    finally:
        ray.shutdown()
    plain = run_plain_ddp(config(max(1, args.threads // args.workers)), args.workers)

    rows = [
        ["Ray Train, num_workers=0 (in process)", single["s_per_step"], "", single["startup_s"],
         single["to_worker_s"], single["setup_s"], single["wall_s"]],
        [f"Ray Train, {args.workers} workers DDP", ray_ddp["s_per_step"], ray_ddp["s_per_step"] / single["s_per_step"],
         ray_ddp["startup_s"], ray_ddp["to_worker_s"], ray_ddp["setup_s"], ray_ddp["wall_s"]],
        [f"torch DDP without Ray, {args.workers} processes", plain["s_per_step"], plain["s_per_step"] / single["s_per_step"],
         plain["startup_s"], plain["to_worker_s"], plain["setup_s"], plain["wall_s"]],
    ]  # fmt: skip
    print_table(
        f"Ray overhead: batch {args.batch_size}, {args.layers or 12} layers, {args.steps} steps, "
        f"s/step over steps {args.log_every + 1}..{args.steps}",
        ["run", "s/step", "vs num_workers=0", "start-up s", "to worker s", "data+model set-up s", "wall s"],
        rows,
    )
    print_table(
        "CPU profile per step after warm-up (rank 0 worker; everything else on the machine)",
        ["run", "worker CPU s/step", "other CPU s/step", "wall s/step"],
        [[name, r["worker_cpu_s_per_step"], r["other_cpu_s_per_step"], r["s_per_step"]]
         for name, r in (("Ray Train, num_workers=0", single), (f"Ray Train, {args.workers} workers DDP", ray_ddp),
                         (f"torch DDP without Ray, {args.workers} processes", plain))],
    )  # fmt: skip
    overhead = ray_ddp["s_per_step"] / plain["s_per_step"] - 1
    print(f"Ray per-step overhead beyond plain DDP: {100 * overhead:+.1f}% (target <= +10%)")
    print(f"Ray fixed start-up cost beyond plain DDP: {ray_ddp['startup_s'] - plain['startup_s']:.1f} s")


if __name__ == "__main__":
    main()
