"""Checkpoints of a training run: the directory layout, writing, checking, restoring, pruning.

A checkpoint is ``<output_dir>/checkpoints/step_NNNNNN/`` holding the model (weights +
tokenizer; under partial fine-tuning only the weights that train, with the frozen rest
referred to by its base model and fingerprint: see ``BiEncoder.save(slim=True)``), ``trainer_state.pt`` (optimizer, scheduler, sampler position, counters, the RNG
states of every rank), the config and the metrics of that step. Resuming from one continues
with exactly the numbers of an uninterrupted run (same world size; CPU). This lives apart from
:mod:`hybridir.train` because it is a file format with its own invariants (atomic writes, a
resume compatibility check, every rank's RNG state), while the loop only decides *when* to
checkpoint; keeping the two apart lets ``train()`` read top to bottom as the loop it is.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from hybridir.config import TrainConfig
from hybridir.model import TRAINABLE_FILE, BiEncoder

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
MODEL_SUBDIR = "model"
TRAINER_STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"
# The run's metrics log sits beside the checkpoints; a failed write names it as intact.
METRICS_LOG = "metrics.jsonl"
# Settings a resumed run may change: they do not alter what is computed at each step.
# (max_steps may grow; the schedule then follows the new max_steps from the resumed step on.)
# The activation cache only stores what the frozen layers compute: where it lives is not part of the run.
RESUMABLE_CHANGES = {
    "max_steps", "log_every", "checkpoint_every", "eval_every", "num_threads",
    "model.activation_cache", "model.activation_cache_max_gb",
}  # fmt: skip


@dataclass
class Progress:
    """Counters that survive a resume (so logged shares and times continue seamlessly)."""

    step: int = 0
    epoch: int = 0  # sampler position of the NEXT batch
    index: int = 0
    xx_batches: int = 0
    elapsed_s: float = 0.0
    # This rank's training cost so far (hybridir.flops; summed over ranks when reported).
    flops: float = 0.0
    flops_trained: float = 0.0
    cpu_s: float = 0.0


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, quota, unwritable storage)."""


def step_directory(output_dir: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` goes (the ``step_*`` names :func:`prune_checkpoints` sorts)."""
    return output_dir / CHECKPOINTS_DIR / f"step_{step:06d}"


# ---------------------------------------------------------------------- RNG state
def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """This process's Python, numpy, torch (and CUDA) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------- write
def save_checkpoint(
    directory: Path, model: BiEncoder, optimizer, scheduler, config: TrainConfig,
    progress: Progress, metrics: dict, rank: int,
) -> Path:  # fmt: skip
    """Rank 0 writes everything a resume needs; all ranks must call (RNG states are gathered)."""
    rng_states = [rng_state()]
    if dist.is_available() and dist.is_initialized():
        rng_states = [None] * dist.get_world_size()
        dist.all_gather_object(rng_states, rng_state())
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


def _write_checkpoint(directory, model, optimizer, scheduler, config, progress, metrics, rng_states) -> None:
    # Write to a temporary sibling and rename: a killed or failed write never leaves a half
    # checkpoint, and the previous one is pruned only after this one is complete.
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save(partial / MODEL_SUBDIR, slim=True)
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


# ---------------------------------------------------------------------- read, restore
def read_checkpoint(directory: Path, config: TrainConfig, world_size: int) -> Path:
    """Check that ``directory`` is a complete checkpoint of a compatible run (before any work)."""
    missing = [name for name in (TRAINER_STATE_FILE, CONFIG_FILE) if not (directory / name).is_file()]
    weights = [f"{MODEL_SUBDIR}/model.safetensors", f"{MODEL_SUBDIR}/{TRAINABLE_FILE}"]
    if not any((directory / name).is_file() for name in weights):
        missing.append(" or ".join(weights))
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


def restore_checkpoint(directory: Path, optimizer, scheduler, rank: int, world_size: int) -> Progress:
    """Load optimizer, scheduler and this rank's RNG state; return the saved counters."""
    # Our own file: it holds Python/numpy RNG states, which weights_only loading rejects.
    state = torch.load(directory / TRAINER_STATE_FILE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    progress = Progress(**state["progress"])
    if state["world_size"] == world_size:
        set_rng_state(state["rng"][rank])
    else:  # dropout masks cannot continue bit-exactly on another number of ranks
        log.warning("resuming on %d ranks a run checkpointed on %d: dropout RNG reseeded", world_size, state["world_size"])
        seed_everything(progress.step * 1000 + rank)
    return progress


# ---------------------------------------------------------------------- prune
def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints under ``directory``."""
    checkpoints = sorted(path for path in directory.glob("step_*") if path.is_dir() and not path.name.endswith(".partial"))
    for old in checkpoints[:-keep]:
        shutil.rmtree(old)
