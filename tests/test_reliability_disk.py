"""Disk faults: a full disk during checkpointing (a real 2-4 MiB tmpfs) and an unwritable
storage path give a clear error naming the path, and what was written before stays intact."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from hybridir.train import CHECKPOINTS_DIR, METRICS_LOG, CheckpointWriteError, train
from test_train import make_config


@pytest.fixture
def tiny_disk(tmp_path):
    """A real size-limited filesystem (tmpfs); the test is skipped where mounting is not allowed."""

    def mount(size_bytes: int) -> Path:
        target = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        target.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(target)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(target)
        return target

    mounted: list[Path] = []
    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_full_disk_during_checkpointing_names_the_checkpoint_and_keeps_earlier_results(
        tiny_encoder_dir, tmp_path, tiny_disk):
    from test_train import LANGUAGES  # noqa: F401  (same data and model as the loop tests)
    from hybridir.data.ntrex import load_ntrex

    pairs = load_ntrex(languages=["en", "de", "es"])
    config = make_config(tiny_encoder_dir, max_steps=6, checkpoint_every=2)
    # One checkpoint's size, measured on a roomy disk.
    probe = tmp_path / "probe"
    train(config.model_copy(update={"max_steps": 2}), probe, pairs=pairs)
    checkpoint_bytes = _tree_size(probe / CHECKPOINTS_DIR / "step_000002")

    # Room for one checkpoint and a half: step 2 fits, step 4 (written before step 2 is
    # pruned, so that a crash never leaves zero checkpoints) does not.
    disk = tiny_disk(int(checkpoint_bytes * 1.5) + 256 * 1024)
    with pytest.raises(CheckpointWriteError) as info:
        train(config, disk, pairs=pairs, keep_checkpoints=1)
    message = str(info.value)
    assert "step_000004" in message and str(disk) in message
    assert "No space left on device" in message or "I/O error" in message, message
    assert "intact" in message and "MiB free" in message

    kept = sorted(p.name for p in (disk / CHECKPOINTS_DIR).iterdir())
    assert kept == ["step_000002"], kept  # the half-written step 4 was removed, step 2 untouched
    resumed = train(config.model_copy(update={"max_steps": 6}), tmp_path / "resumed",
                    resume_from=disk / CHECKPOINTS_DIR / "step_000002", pairs=pairs)
    assert resumed.step == 6  # the surviving checkpoint is complete
    logged = [json.loads(line)["step"] for line in (disk / METRICS_LOG).read_text().splitlines()]
    assert logged == [2, 4], logged  # every step logged before the failure is there


def test_train_cli_reports_a_full_disk_without_a_traceback(tiny_encoder_dir, tmp_path, tiny_disk):
    import sys

    disk = tiny_disk(64 * 1024)  # not even one checkpoint fits
    done = subprocess.run(
        [sys.executable, "-m", "hybridir.train", "--output", str(disk),
         "--set", f"model.name={tiny_encoder_dir}", "--set", "data.languages=[en, de]",
         "--set", "data.max_pairs_per_language=50", "--set", "batching.batch_size=4",
         "--set", "max_steps=2", "--set", "checkpoint_every=1", "--set", "num_threads=1"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "error: could not write checkpoint" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(p.name.endswith(".partial") for p in (disk / CHECKPOINTS_DIR).iterdir())


def test_unwritable_storage_path_is_rejected_before_ray_starts(tmp_path, capsys):
    import ray

    from study.run import main

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the storage directory should be")
    code = main(["--set", f"resources.storage_path={blocker / 'ray'}", "--output", str(tmp_path / "study")])
    assert code == 2
    err = capsys.readouterr().err
    assert "resources.storage_path" in err and str(blocker) in err
    assert not ray.is_initialized()


def test_full_output_disk_is_rejected_before_ray_starts(tmp_path, tiny_disk, capsys):
    from study.run import main

    disk = tiny_disk(4096 * 4)
    try:
        with (disk / "filler").open("wb") as handle:  # fill it completely
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:
        pass
    code = main(["--output", str(disk / "study")])
    assert code == 2
    assert "--output" in capsys.readouterr().err
    shutil.rmtree(disk / "study", ignore_errors=True)
