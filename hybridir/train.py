"""Train a bi-encoder with hybrid batches: one run, on the current process group.

``train(config, output_dir)`` reads top to bottom: seed, data (document-level train /
validation split), pool and hybrid batch sampler for this rank, model, optimizer and
schedule, then the loop. If ``torch.distributed`` is initialised (Ray Train, torchrun) the
model is wrapped in DistributedDataParallel and the sampler gives each rank its share of
every global batch; InfoNCE gathers the embeddings so the loss and its gradient are those of
the global batch. Otherwise it runs in one process.

Every ``checkpoint_every`` steps and at the end rank 0 writes ``output_dir/checkpoints/
step_NNNNNN/`` (model weights + tokenizer, optimizer, scheduler, sampler position, step,
counters, the RNG states of every rank, the config); ``resume_from=`` that directory continues
with exactly the numbers of an uninterrupted run (same world size; CPU).

Command line (single process, for debugging)::

    python -m hybridir.train --config run.yaml --set optim.lr=1e-4 --set max_steps=20 --output runs/x
"""

from __future__ import annotations

import argparse
import os
import json
import logging
import random
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from pydantic import ValidationError
from torch.nn.parallel import DistributedDataParallel
from transformers import get_scheduler
from transformers.utils import logging as hf_logging

from hybridir.batching import HybridBatchSampler, PairRef, TrainingPool
from hybridir.collate import collate_pairs
from hybridir.config import TrainConfig
from hybridir.data.types import ParallelPairs
from hybridir.loss import InfoNCELoss
from hybridir.model import BiEncoder, PairEncoder

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
MODEL_SUBDIR = "model"
TRAINER_STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"
METRICS_LOG = "metrics.jsonl"
VALIDATION_BATCHES = 4  # a few fixed held-out batches: a cheap, comparable validation loss
# Settings a resumed run may change: they do not alter what is computed at each step.
# (max_steps may grow; the schedule then follows the new max_steps from the resumed step on.)
# The activation cache only stores what the frozen layers compute: where it lives is not part of the run.
RESUMABLE_CHANGES = {
    "max_steps", "log_every", "checkpoint_every", "eval_every", "num_threads",
    "model.activation_cache", "model.activation_cache_max_gb",
}  # fmt: skip


class TrainCallback:
    """Hooks into the loop; the base class does nothing. Called on every rank."""

    def on_log(self, step: int, metrics: dict) -> None:
        """Every ``log_every`` steps (and at checkpoints and the last step)."""

    def on_checkpoint(self, step: int, directory: Path, metrics: dict) -> None:
        """After rank 0 has written the checkpoint ``directory`` (all ranks are called)."""

    def on_evaluate(self, step: int, model: BiEncoder) -> dict | None:
        """Every ``eval_every`` steps with the unwrapped model; the dict joins the next report."""
        return None


@dataclass
class TrainResult:
    step: int
    metrics: dict
    checkpoint_dir: Path
    model_dir: Path  # the final model, loadable with BiEncoder.load


@dataclass
class _Progress:
    """Counters that survive a resume (so logged shares and times continue seamlessly)."""

    step: int = 0
    epoch: int = 0  # sampler position of the NEXT batch
    index: int = 0
    xx_batches: int = 0
    elapsed_s: float = 0.0


@dataclass
class _Window:
    """What happened since the last log."""

    steps: int = 0
    pairs: int = 0
    tokens: int = 0
    loss_sum: torch.Tensor | None = None
    started: float = field(default_factory=time.perf_counter)

    def add(self, loss: torch.Tensor, pairs: int, tokens: int) -> None:
        # Summing on the device avoids a host sync per step; .item() happens at log time.
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.steps += 1
        self.pairs += pairs
        self.tokens += tokens


def train(
    config: TrainConfig,
    output_dir: str | Path,
    *,
    resume_from: str | Path | None = None,
    callbacks: Sequence[TrainCallback] = (),
    pairs: ParallelPairs | None = None,
    keep_checkpoints: int | None = None,
) -> TrainResult:
    """Train for ``config.max_steps`` steps; return the last metrics and the final checkpoint.

    ``pairs`` replaces ``load_train_source(config.data.source)`` (tests, custom data).
    ``keep_checkpoints``: keep only the newest N checkpoint directories (None: all).
    """
    output_dir = Path(output_dir)
    rank, world_size = _process_group()
    resume = _read_checkpoint(Path(resume_from), config, world_size) if resume_from is not None else None
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = _device()
    # Ranks differ in seed only for dropout; data order comes from the sampler's own seed.
    seed_everything(config.seed + rank)

    # ---- data: document-level split, then which items train in which language
    if pairs is None:
        from hybridir.data.registry import load_train_source

        pairs = load_train_source(config.data.source)
    from hybridir.data.splits import split_by_group

    train_pairs, validation_pairs = split_by_group(pairs, config.data.validation_fraction, config.data.split_seed)
    pool = TrainingPool.from_config(train_pairs, config.data)
    sampler = HybridBatchSampler.from_config(pool, config.batching, config.seed, rank, world_size)
    validation = _validation_batches(validation_pairs, pool.languages, config, rank, world_size)
    if rank == 0:
        log.info("sampler: %s", sampler.describe())

    # ---- model, optimizer, schedule
    model = BiEncoder.load(resume / MODEL_SUBDIR) if resume else BiEncoder.from_config(config.model)
    if config.model.train_layers is not None:
        # Partial fine-tuning: embeddings and lower layers frozen, their states cached on disk.
        model.set_train_layers(config.model.train_layers)
        if config.model.activation_cache:
            model.attach_activation_cache(config.model.activation_cache, config.model.activation_cache_max_gb)
    elif config.model.freeze_embeddings:
        model.freeze_embeddings()
    model.to(device)
    pair_encoder: torch.nn.Module = PairEncoder(model)
    if world_size > 1:
        pair_encoder = DistributedDataParallel(pair_encoder, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = InfoNCELoss(model.temperature)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    autocast = _autocast(config.precision, device)

    progress = _Progress()
    if resume:
        progress = _restore(resume, optimizer, scheduler, rank, world_size)
    if progress.step >= config.max_steps:
        raise ValueError(f"checkpoint {resume_from} is at step {progress.step}; max_steps={config.max_steps}")

    # ---- the loop
    metrics_log = output_dir / METRICS_LOG if rank == 0 else None
    output_dir.mkdir(parents=True, exist_ok=True)
    batches = sampler.iterate(progress.epoch, progress.index)
    window, pending, metrics, checkpoint_dir = _Window(), {}, {}, None
    model.train()
    run_started = time.perf_counter() - progress.elapsed_s
    for step in range(progress.step + 1, config.max_steps + 1):
        epoch, index, refs = next(batches)
        batch = collate_pairs(
            refs, train_pairs, model, config.model.max_query_length, config.model.max_passage_length
        ).to(device)
        with autocast:
            query_embeddings, passage_embeddings = pair_encoder(batch.queries, batch.passages)
        loss = loss_fn(query_embeddings, passage_embeddings)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.optim.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(trainable, config.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()

        progress.step = step
        progress.epoch, progress.index = (epoch, index + 1) if index + 1 < len(sampler) else (epoch + 1, 0)
        progress.xx_batches += int(sampler.is_monolingual(refs))
        # Equal shares per rank; a small language's X-X batch can be smaller than batch_size.
        window.add(loss.detach() / world_size, len(refs) * world_size, batch.num_tokens)

        if config.eval_every and step % config.eval_every == 0:
            for callback in callbacks:
                pending.update(callback.on_evaluate(step, model) or {})
            model.train()
        checkpoint_due = step == config.max_steps or (config.checkpoint_every and step % config.checkpoint_every == 0)
        if step % config.log_every == 0 or checkpoint_due:
            progress.elapsed_s = time.perf_counter() - run_started
            metrics = _report(step, window, progress, optimizer, len(sampler), world_size)
            if validation:
                metrics["val_loss"] = _validation_loss(model, validation, validation_pairs, loss_fn, config, autocast)
            metrics.update(pending)
            metrics.update(_cache_metrics(model))
            if step == config.max_steps:  # what each language was trained on, batch by batch
                metrics.update(sampler.exposure(config.max_steps).as_flat_dict())
            pending, window = {}, _Window()
            _append_jsonl(metrics_log, metrics)
            for callback in callbacks:
                callback.on_log(step, metrics)
        if checkpoint_due:
            model.flush_activation_cache()  # a resumed or retried run finds these states
            checkpoint_dir = save_checkpoint(
                output_dir / CHECKPOINTS_DIR / f"step_{step:06d}",
                model, optimizer, scheduler, config, progress, metrics, rank,
            )  # fmt: skip
            if rank == 0 and keep_checkpoints:
                _prune_checkpoints(output_dir / CHECKPOINTS_DIR, keep_checkpoints)
            for callback in callbacks:
                callback.on_checkpoint(step, checkpoint_dir, metrics)

    assert checkpoint_dir is not None  # the last step always checkpoints
    return TrainResult(progress.step, metrics, checkpoint_dir, checkpoint_dir / MODEL_SUBDIR)


# ---------------------------------------------------------------------- setup helpers
def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _process_group() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device() -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    # Ray Train and torchrun set the local rank; default to the current device.
    local_rank = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 autocast for ``bf16``, or ``auto`` on a GPU with bf16 support; otherwise fp32."""
    bf16_gpu = device.type == "cuda" and torch.cuda.is_bf16_supported()
    enabled = precision == "bf16" or (precision == "auto" and bf16_gpu)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def build_optimizer(model: BiEncoder, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no weight decay on biases and LayerNorm (1-D tensors)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.optim.lr)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """Linear warmup, then linear / cosine decay to 0 or a constant rate."""
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[config.optim.schedule]
    return get_scheduler(
        name, optimizer, num_warmup_steps=config.optim.warmup_steps, num_training_steps=config.max_steps
    )


def _validation_batches(
    validation_pairs: ParallelPairs, languages: list[str], config: TrainConfig, rank: int, world_size: int
) -> list[list[PairRef]]:
    """This rank's share of the first few batches drawn from the held-out documents.

    Same languages and batch mix as training, no data-size caps: every held-out item counts.
    """
    if len(validation_pairs) == 0:
        return []
    try:
        pool = TrainingPool(validation_pairs, languages, None, config.data.split_seed)
        sampler = HybridBatchSampler.from_config(pool, config.batching, config.seed, rank, world_size)
    except ValueError as exc:
        log.warning("no validation loss: held-out documents cannot fill a batch (%s)", exc)
        return []
    return [sampler.local_batch(0, i % len(sampler)) for i in range(VALIDATION_BATCHES)]


@torch.no_grad()
def _validation_loss(model, batches, validation_pairs, loss_fn, config, autocast) -> float:
    model.eval()
    total = 0.0
    for refs in batches:
        batch = collate_pairs(
            refs, validation_pairs, model, config.model.max_query_length, config.model.max_passage_length
        ).to(model.device)
        with autocast:
            query_embeddings, passage_embeddings = model(**batch.queries), model(**batch.passages)
        total += loss_fn(query_embeddings, passage_embeddings).item() / _process_group()[1]
    model.train()
    return total / len(batches)


def _report(step: int, window: _Window, progress: _Progress, optimizer, batches_per_epoch: int, world_size: int) -> dict:
    seconds = max(time.perf_counter() - window.started, 1e-9)
    tokens = torch.tensor(float(window.tokens))
    if world_size > 1:  # tokens differ per rank; the loss is already the global-batch loss
        dist.all_reduce(tokens)
    return {
        "step": step,
        "loss": window.loss_sum.item() / window.steps,
        "lr": optimizer.param_groups[0]["lr"],
        "pairs_per_s": window.pairs / seconds,
        "tokens_per_s": tokens.item() / seconds,
        "s_per_step": seconds / window.steps,
        "elapsed_s": progress.elapsed_s,
        "xx_share_so_far": progress.xx_batches / step,
        "epoch": progress.epoch + progress.index / batches_per_epoch,
    }


def _cache_metrics(model: BiEncoder) -> dict:
    """How often the frozen bottom was read from the activation cache (this process, so far)."""
    if model.bottom is None or not model.bottom.cache_attached:
        return {}
    stats = model.bottom.cache_stats()
    looked_up = stats["hits"] + stats["misses"]
    return {"activation_cache_hit_rate": stats["hits"] / looked_up if looked_up else 0.0}


def _append_jsonl(path: Path | None, metrics: dict) -> None:
    if path is not None:
        with path.open("a") as handle:
            handle.write(json.dumps(metrics) + "\n")


# ---------------------------------------------------------------------- checkpoints
def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: Path, model: BiEncoder, optimizer, scheduler, config: TrainConfig,
    progress: _Progress, metrics: dict, rank: int,
) -> Path:  # fmt: skip
    """Rank 0 writes everything a resume needs; all ranks must call (RNG states are gathered)."""
    rng_states = [_rng_state()]
    if dist.is_available() and dist.is_initialized():
        rng_states = [None] * dist.get_world_size()
        dist.all_gather_object(rng_states, _rng_state())
    failure = None
    if rank == 0:
        try:
            _write_checkpoint(directory, model, optimizer, scheduler, config, progress, metrics, rng_states)
        except Exception as exc:  # noqa: BLE001 - torch reports a full disk as RuntimeError
            failure = (
                f"could not write checkpoint {directory}: {type(exc).__name__}: {exc} "
                f"[{_free_space(directory.parent)}]. Earlier checkpoints and {METRICS_LOG} in "
                f"{directory.parent.parent} are intact; free space or choose another output "
                "directory, then resume from the last complete checkpoint."
            )
    if dist.is_available() and dist.is_initialized():
        # Every rank learns whether rank 0's write worked (and waits until the directory
        # exists): a failure stops all ranks together instead of leaving them in a collective.
        outcome = [failure]
        dist.broadcast_object_list(outcome, src=0)
        failure = outcome[0]
    if failure:
        raise CheckpointWriteError(failure)
    return directory


def _free_space(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**20:.1f} MiB free there"
    except OSError as exc:
        return f"free space unknown: {exc.strerror or exc}"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, quota, unwritable storage)."""


def _write_checkpoint(directory, model, optimizer, scheduler, config, progress, metrics, rng_states) -> None:
    # Write to a temporary sibling and rename: a killed or failed write never leaves a half
    # checkpoint, and the previous one is pruned only after this one is complete.
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save(partial / MODEL_SUBDIR)
        state = {
            "step": progress.step,
            "sampler": {"epoch": progress.epoch, "index": progress.index},
            "progress": vars(progress).copy(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_states,
            "world_size": len(rng_states),
        }
        torch.save(state, partial / TRAINER_STATE_FILE)
        (partial / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n")
        (partial / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # give the space back
        raise
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)


def _read_checkpoint(directory: Path, config: TrainConfig, world_size: int) -> Path:
    """Check that ``directory`` is a complete checkpoint of a compatible run (before any work)."""
    missing = [
        name for name in (TRAINER_STATE_FILE, CONFIG_FILE, f"{MODEL_SUBDIR}/model.safetensors")
        if not (directory / name).is_file()
    ]  # fmt: skip
    if missing:
        raise FileNotFoundError(f"resume_from={directory} is not a complete checkpoint: missing {missing}")
    saved = TrainConfig.model_validate_json((directory / CONFIG_FILE).read_text())
    differences = _config_differences(saved.model_dump(), config.model_dump()) - RESUMABLE_CHANGES
    if differences:
        raise ValueError(
            f"cannot resume from {directory}: the config differs in {sorted(differences)} "
            f"(only {sorted(RESUMABLE_CHANGES)} may change)"
        )
    return directory


def _config_differences(saved: dict, current: dict, prefix: str = "") -> set[str]:
    keys = set(saved) | set(current)
    differences: set[str] = set()
    for key in keys:
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key != "pairs_per_language":
            differences |= _config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.add(f"{prefix}{key}")
    return differences


def _restore(directory: Path, optimizer, scheduler, rank: int, world_size: int) -> _Progress:
    # Our own file: it holds Python/numpy RNG states, which weights_only loading rejects.
    state = torch.load(directory / TRAINER_STATE_FILE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    progress = _Progress(**state["progress"])
    if state["world_size"] == world_size:
        _set_rng_state(state["rng"][rank])
    else:  # dropout masks cannot continue bit-exactly on another number of ranks
        log.warning("resuming on %d ranks a run checkpointed on %d: dropout RNG reseeded", world_size, state["world_size"])
        seed_everything(progress.step * 1000 + rank)
    return progress


def _prune_checkpoints(directory: Path, keep: int) -> None:
    checkpoints = sorted(path for path in directory.glob("step_*") if path.is_dir() and not path.name.endswith(".partial"))
    for old in checkpoints[:-keep]:
        shutil.rmtree(old)


# ---------------------------------------------------------------------- command line
class PrintMetrics(TrainCallback):
    """Print each report as one JSON line (the command line's progress output)."""

    def on_log(self, step: int, metrics: dict) -> None:
        print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}), flush=True)


def config_from_args(config_file: str | None, overrides: Sequence[str]) -> TrainConfig:
    """Load a YAML config and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    raw: dict = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read training config {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"training config {path} must be a mapping, got {type(raw).__name__}")
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {override!r}: expected key=value, e.g. optim.lr=1e-4")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {override!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(value)
    return TrainConfig.model_validate(raw)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridir.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML training config (default: all defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--output", required=True, help="output directory (checkpoints, metrics.jsonl)")
    parser.add_argument("--resume", help="checkpoint directory to continue from")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    hf_logging.disable_progress_bar()  # checkpoint writes would interleave bars with the metrics
    try:
        config = config_from_args(args.config, args.set)
    except (ValueError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = train(config, Path(args.output), resume_from=args.resume, callbacks=[PrintMetrics()])
    except CheckpointWriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"step": result.step, "checkpoint_dir": str(result.checkpoint_dir),
                      "model_dir": str(result.model_dir), "metrics": result.metrics}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
