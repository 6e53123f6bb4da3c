"""Benchmark 5: peak resident memory per DDP worker, batch 16 / 32, frozen or trainable embeddings.

    python bench/memory.py                         # 2 workers, 12 layers, 4 steps per configuration
    python bench/memory.py --workers 1 --layers 2 --batch-sizes 16

Each configuration starts fresh worker processes (torch.multiprocessing, gloo: the process
group Ray Train gives a trial, without Ray's own processes) that run ``hybridir.train.train``
for a few steps on NTREX-128 with the offline model. Every worker reports its resident memory
before ``train()`` (Python + torch + data loaded) and its peak (``ru_maxrss``) after it.
The global batch is split over the workers (local batch = batch / workers), as in a trial.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from pathlib import Path

from _common import add_common_args, peak_rss_mib, print_machine, print_table

import torch.distributed as dist
import torch.multiprocessing as mp

from hybridir.config import TrainConfig


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _worker(rank: int, world_size: int, port: int, config_json: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    from hybridir.data.registry import load_train_source
    from hybridir.train import train

    config = TrainConfig.model_validate_json(config_json)
    if world_size > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    pairs = load_train_source(config.data.source)
    before = current_rss_mib()
    train(config, Path(out_dir) / "run", pairs=pairs)
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps({"before_mib": before, "peak_mib": peak_rss_mib()}))
    if world_size > 1:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(config: TrainConfig, workers: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(workers, free_port(), config.model_dump_json(), out), nprocs=workers, join=True)
        return [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(workers)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.set_defaults(threads=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-sizes", default="16,32")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-query-length", type=int, default=64)
    parser.add_argument("--max-passage-length", type=int, default=192)
    args = parser.parse_args(argv)
    print_machine(args.threads)

    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        for freeze in (True, False):
            config = TrainConfig.model_validate({
                "model": {"name": "me5-small-offline", "num_layers": args.layers, "freeze_embeddings": freeze,
                          "max_query_length": args.max_query_length, "max_passage_length": args.max_passage_length},
                "data": {"source": "ntrex", "num_languages": 5},
                "batching": {"batch_size": batch_size},
                "max_steps": args.steps, "log_every": args.steps, "num_threads": args.threads,
            })  # fmt: skip
            reports = measure(config, args.workers)
            rows.append([
                batch_size, batch_size // args.workers, "frozen" if freeze else "trainable",
                max(r["before_mib"] for r in reports), max(r["peak_mib"] for r in reports),
                max(r["peak_mib"] - r["before_mib"] for r in reports),
            ])  # fmt: skip
    print_table(
        f"peak RSS per worker: {args.workers} DDP workers (gloo), {args.layers or 12} layers, max lengths "
        f"{args.max_query_length}/{args.max_passage_length}, {args.steps} steps, {args.threads} thread(s)/worker",
        ["global batch", "local batch", "word embeddings", "RSS before train() MiB", "peak RSS MiB", "train() adds MiB"],
        rows,
    )


if __name__ == "__main__":
    main()
