"""Train a bi-encoder with hybrid batches: one run, on the current process group.

``train(config, output_dir)`` reads top to bottom: seed, data (document-level train /
validation split), pool and hybrid batch sampler for this rank, model, optimizer and
schedule, then the loop. If ``torch.distributed`` is initialised (Ray Train, torchrun) the
model is wrapped in DistributedDataParallel and the sampler gives each rank its share of
every global batch; InfoNCE gathers the embeddings so the loss and its gradient are those of
the global batch. Otherwise it runs in one process.

Every ``checkpoint_every`` steps and at the end rank 0 writes ``output_dir/checkpoints/
step_NNNNNN/`` (model weights + tokenizer, optimizer, scheduler, sampler position, step,
counters, the RNG states of every rank, the config; the format is :mod:`hybridir.checkpoint`);
``resume_from=`` that directory continues with exactly the numbers of an uninterrupted run
(same world size; CPU).

Command line (single process, for debugging)::

    python -m hybridir.train --config run.yaml --set optim.lr=1e-4 --set max_steps=20 --output runs/x
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from pydantic import ValidationError
from torch.nn.parallel import DistributedDataParallel
from transformers import get_scheduler
from transformers.utils import logging as hf_logging

from hybridir.batching import HybridBatchSampler, PairRef, TrainingPool
from hybridir.checkpoint import (
    CHECKPOINTS_DIR,
    METRICS_LOG,
    MODEL_SUBDIR,
    CheckpointWriteError,
    Progress,
    prune_checkpoints,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    seed_everything,
    step_directory,
)
from hybridir.collate import collate_pairs
from hybridir.config import DataConfig, TrainConfig
from hybridir.data.types import ParallelPairs
from hybridir.flops import CPU_SECONDS, FLOPS, FLOPS_TRAINED, LayerShape, TrainingFlops, padded_work
from hybridir.loss import InfoNCELoss
from hybridir.model import BiEncoder, PairEncoder
from hybridir.overrides import apply_assignments, read_yaml_mapping
from hybridir.progress import progress_bar, write_line
from hybridir.timing import PhaseTimes

log = logging.getLogger(__name__)

VALIDATION_BATCHES = 4  # a few fixed held-out batches: a cheap, comparable validation loss


class TrainCallback:
    """Hooks into the loop; the base class does nothing. Called on every rank."""

    def on_log(self, step: int, metrics: dict) -> None:
        """Every ``log_every`` steps (and at checkpoints and the last step)."""

    def on_checkpoint(self, step: int, directory: Path, metrics: dict) -> None:
        """After rank 0 has written the checkpoint ``directory`` (all ranks are called)."""

    def on_evaluate(self, step: int, model: BiEncoder) -> dict | None:
        """Every ``eval_every`` steps and at the last step (when ``eval_every`` is set) with the
        unwrapped model; the dict joins the next report. The last step always checkpoints, so its
        report carries an evaluation even where ``eval_every`` does not divide ``max_steps`` (a
        study whose batch sizes share a pair budget has different step counts per cell)."""
        return None


@dataclass
class TrainResult:
    step: int
    metrics: dict
    checkpoint_dir: Path
    model_dir: Path  # the final model, loadable with BiEncoder.load
    phase_seconds: dict[str, float] = field(default_factory=dict)  # hybridir.timing.TRAIN_PHASES


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


def training_articles(pairs: ParallelPairs, data: DataConfig) -> ParallelPairs:
    """``pairs`` without the XQuAD articles ``data.holdout_articles`` holds out for evaluation and
    without ``data.exclude_articles`` (unchanged when neither is set; a source without those
    articles loses nothing). The pre-Ray leakage guard (study/checks.py) applies the same function."""
    if data.holdout_articles is None and not data.exclude_articles:
        return pairs
    from hybridir.data.splits import drop_groups
    from hybridir.data.xquad import held_out_articles

    dropped = set(data.exclude_articles)
    if data.holdout_articles is not None:
        dropped |= held_out_articles(data.holdout_articles.fraction, data.holdout_articles.seed)
    return drop_groups(pairs, dropped, f"{pairs.name}/training-articles")


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
    resume = read_checkpoint(Path(resume_from), config, world_size) if resume_from is not None else None
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = _device()
    # Ranks differ in seed only for dropout; data order comes from the sampler's own seed.
    seed_everything(config.seed + rank)

    phases = PhaseTimes()
    # ---- data: document-level split, then which items train in which language
    data_started = time.perf_counter()
    if pairs is None:
        from hybridir.data.registry import load_train_source

        pairs = load_train_source(config.data.source)
    from hybridir.data.splits import split_by_group

    pairs = training_articles(pairs, config.data)
    train_pairs, validation_pairs = split_by_group(pairs, config.data.validation_fraction, config.data.split_seed)
    pool = TrainingPool.from_config(train_pairs, config.data)
    sampler = HybridBatchSampler.from_config(pool, config.batching, config.seed, rank, world_size)
    validation = _validation_batches(validation_pairs, pool.languages, config, rank, world_size)
    if rank == 0:
        log.info("sampler: %s", sampler.describe())
    phases.add("data_load", time.perf_counter() - data_started)

    # ---- model, optimizer, schedule
    model_started = time.perf_counter()
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
    flop_model = TrainingFlops(LayerShape.of(model.encoder.config), model.num_layers,
                               model.train_layers or model.num_layers)
    autocast = _autocast(config.precision, device)

    progress = Progress()
    if resume:
        progress = restore_checkpoint(resume, optimizer, scheduler, rank, world_size)
    if progress.step >= config.max_steps:
        raise ValueError(f"checkpoint {resume_from} is at step {progress.step}; max_steps={config.max_steps}")
    phases.add("model_load", time.perf_counter() - model_started)

    # ---- the loop
    metrics_log = output_dir / METRICS_LOG if rank == 0 else None
    output_dir.mkdir(parents=True, exist_ok=True)
    # Tokenisation (and pinning) of the next batches runs in a background thread while the
    # device computes the current one: off the step's critical path on a GPU.
    batches = Prefetcher(
        ((epoch, index, refs, collate_pairs(refs, train_pairs, model, config.model.max_query_length,
                                            config.model.max_passage_length).pinned(device))
         for epoch, index, refs in sampler.iterate(progress.epoch, progress.index)),
        depth=prefetch_depth(device),
    )  # fmt: skip
    window, pending, metrics, checkpoint_dir = _Window(), {}, {}, None
    model.train()
    loop_started = time.perf_counter()
    run_started = loop_started - progress.elapsed_s
    # Process CPU time of the steps: the loop's, less the phases that are not training steps.
    loop_cpu_started, cpu_before = time.process_time(), progress.cpu_s
    bar = progress_bar(total=config.max_steps, initial=progress.step, desc="train", unit="step",
                       enabled=None if rank == 0 else False)
    for step in range(progress.step + 1, config.max_steps + 1):
        epoch, index, refs, host_batch = next(batches)
        batch = host_batch.to(device)
        frozen_before = _frozen_work(model)
        with autocast:
            query_embeddings, passage_embeddings = pair_encoder(batch.queries, batch.passages)
        _count_flops(progress, flop_model, host_batch, frozen_before, _frozen_work(model))
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
        window.add(loss.detach() / world_size, len(refs) * world_size, host_batch.num_tokens)  # no device sync
        bar.update(1)

        if config.eval_every and (step % config.eval_every == 0 or step == config.max_steps):
            with phases("intermediate_eval"):
                for callback in callbacks:
                    pending.update(callback.on_evaluate(step, model) or {})
                model.train()
        checkpoint_due = step == config.max_steps or (config.checkpoint_every and step % config.checkpoint_every == 0)
        if step % config.log_every == 0 or checkpoint_due:
            progress.elapsed_s = time.perf_counter() - run_started
            progress.cpu_s = cpu_before + time.process_time() - loop_cpu_started - phases.cpu_total(*_NOT_STEPS)
            metrics = _report(step, window, progress, optimizer, len(sampler), world_size, device)
            if validation and validation_due(step, config.max_steps, config.validate_every):
                with phases("validation"):
                    metrics["val_loss"] = _validation_loss(model, validation, validation_pairs, loss_fn, config, autocast)
            metrics.update(pending)
            metrics.update(_cache_metrics(model))
            if step == config.max_steps:  # what each language was trained on, batch by batch
                metrics.update(sampler.exposure(config.max_steps).as_flat_dict())
            pending, window = {}, _Window()
            _append_jsonl(metrics_log, metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
            with phases("reporting"):
                for callback in callbacks:
                    callback.on_log(step, metrics)
        if checkpoint_due:
            with phases("checkpoint_write"):
                model.flush_activation_cache()  # a resumed or retried run finds these states
                checkpoint_dir = save_checkpoint(
                    step_directory(output_dir, step), model, optimizer, scheduler, config, progress, metrics, rank
                )
                if rank == 0 and keep_checkpoints:
                    prune_checkpoints(output_dir / CHECKPOINTS_DIR, keep_checkpoints)
            with phases("reporting"):
                for callback in callbacks:
                    callback.on_checkpoint(step, checkpoint_dir, metrics)

    bar.close()
    batches.close()
    assert checkpoint_dir is not None  # the last step always checkpoints
    # The rest of the loop is the steps: batching, collation, forward, backward, update.
    loop_seconds = time.perf_counter() - loop_started
    phases.add("steps", loop_seconds - phases.total(*_NOT_STEPS))
    return TrainResult(progress.step, metrics, checkpoint_dir, checkpoint_dir / MODEL_SUBDIR, dict(phases.seconds))


def validation_due(step: int, max_steps: int, validate_every: int | None) -> bool:
    """Whether a logged step computes the validation loss: every one when ``validate_every`` is
    None, else its multiples and the last step (the loop and study/plan.py's count)."""
    return validate_every is None or step % validate_every == 0 or step == max_steps


# The phases of the loop that are not training steps (timed apart, left out of the steps' cost).
_NOT_STEPS = ("validation", "intermediate_eval", "checkpoint_write", "reporting")


def _frozen_work(model: BiEncoder) -> tuple[int, int]:
    """What the frozen bottom has computed so far (hybridir.frozen's counters); (0, 0) without one."""
    if model.bottom is None:
        return 0, 0
    return model.bottom.computed_tokens, model.bottom.computed_squared


def _count_flops(progress: Progress, flop_model: TrainingFlops, batch, frozen_before: tuple[int, int],
                 frozen_after: tuple[int, int]) -> None:
    """Add one step's FLOPs (this rank's local batch; hybridir.flops) to ``progress``: the trained
    layers over the padded query and passage tensors, forward and backward; the frozen layers
    over what they computed during this step's forward (activation-cache misses)."""
    trained = 0.0
    for inputs in (batch.queries, batch.passages):
        trained += flop_model.trained(*padded_work(inputs["input_ids"].shape))
    frozen = flop_model.frozen(frozen_after[0] - frozen_before[0], frozen_after[1] - frozen_before[1])
    progress.flops_trained += trained
    progress.flops += trained + frozen


# ---------------------------------------------------------------------- input pipeline
# Batches prepared ahead, per device type: a GPU step waits for nothing on the host. On CPU the
# tokenizer would compete with the step for the same cores, so batches are made in line there.
PREFETCH_BATCHES = {"cuda": 2}


def prefetch_depth(device: torch.device) -> int:
    return PREFETCH_BATCHES.get(device.type, 0)


class Prefetcher:
    """Iterate ``source`` in a background thread, ``depth`` items ahead (0: in line, no thread).

    Items come out in the source's order; an exception in the source is raised by ``next`` at
    the position where it happened. ``close`` stops the thread (it may have made up to
    ``depth`` items nobody asked for: the sampler's position is tracked by the caller).
    """

    _END = object()

    def __init__(self, source, depth: int):
        import queue
        import threading

        self._source = iter(source)
        self._depth = depth
        if depth <= 0:
            return
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="hybridir-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        import queue

        try:
            for item in self._source:
                while not self._stop.is_set():
                    try:
                        self._queue.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put((True, self._END))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self._queue.put((False, exc))

    def __iter__(self):
        return self

    def __next__(self):
        if self._depth <= 0:
            return next(self._source)
        ok, item = self._queue.get()
        if not ok:
            raise item
        if item is self._END:
            raise StopIteration
        return item

    def close(self) -> None:
        if self._depth > 0:
            self._stop.set()
            self._thread.join(timeout=5)


# ---------------------------------------------------------------------- setup helpers
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
    # On CUDA one fused kernel updates every parameter (instead of a few kernels per tensor);
    # on CPU the reference implementation keeps the numbers the tests pin down.
    fused = bool(decay or no_decay) and all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=config.optim.lr, fused=fused or None)


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


def _sum_over_ranks(value: float | list[float], device: torch.device) -> torch.Tensor:
    """``value`` (one number or several) summed over the ranks of the process group, reduced on the
    training ``device``: a GPU run's group is NCCL-only and has no backend for CPU tensors."""
    total = torch.tensor(value, dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    dist.all_reduce(total)
    return total


def _report(
    step: int, window: _Window, progress: Progress, optimizer, batches_per_epoch: int, world_size: int,
    device: torch.device,
) -> dict:
    seconds = max(time.perf_counter() - window.started, 1e-9)
    local = [float(window.tokens), progress.flops, progress.flops_trained, progress.cpu_s]
    if world_size > 1:  # tokens and costs differ per rank; the loss is already the global-batch loss
        local = _sum_over_ranks(local, device).tolist()
    tokens, flops, flops_trained, cpu_s = local
    return {
        "step": step,
        "loss": window.loss_sum.item() / window.steps,
        "lr": optimizer.param_groups[0]["lr"],
        "pairs_per_s": window.pairs / seconds,
        "tokens_per_s": tokens / seconds,
        "s_per_step": seconds / window.steps,
        "elapsed_s": progress.elapsed_s,
        "xx_share_so_far": progress.xx_batches / step,
        "epoch": progress.epoch + progress.index / batches_per_epoch,
        FLOPS: flops,
        FLOPS_TRAINED: flops_trained,
        CPU_SECONDS: cpu_s,
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


# ---------------------------------------------------------------------- command line
class PrintMetrics(TrainCallback):
    """Print each report as one JSON line (the command line's progress output)."""

    def on_log(self, step: int, metrics: dict) -> None:
        write_line(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()}))


def config_from_args(config_file: str | None, overrides: Sequence[str]) -> TrainConfig:
    """Load a YAML config and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    raw = read_yaml_mapping(config_file, "training config") if config_file is not None else {}
    return TrainConfig.model_validate(apply_assignments(raw, list(overrides)))


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
