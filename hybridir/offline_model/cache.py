"""The cached build: where it lives, when it counts as complete, and building it exactly once.

Many processes (several Ray workers, a test run beside a study) ask for the model at the same
time, and a build must never be seen half-written or done twice. That concurrency protocol (a
file lock, a staging directory renamed into place, a cheap completeness check on the fast path,
permissions for a shared cache) is independent of what gets built, so it lives apart from
:mod:`hybridir.offline_model.convert`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hybridir.offline_model.convert import build_model_dir
from hybridir.offline_model.recipe import MODEL_DIR_NAME, MODEL_FILES, PROVENANCE_FILE, RECIPE_VERSION
from hybridir.offline_model.wheels import locate_sources

_LOCK_TIMEOUT_S = 30 * 60  # a build takes well under a minute; waiting longer means a stuck holder


def default_cache_dir() -> Path:
    """``$HYBRIDIR_CACHE``, else ``~/.cache/hybridir``."""
    return Path(os.environ.get("HYBRIDIR_CACHE") or Path.home() / ".cache" / "hybridir")


def is_complete(model_dir: Path) -> bool:
    """Cheap validity check: provenance of the current recipe, every file present with its recorded size."""
    try:
        provenance = json.loads((model_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
        sizes = provenance["files"]
        return provenance.get("recipe_version") == RECIPE_VERSION and all(
            (model_dir / name).stat().st_size == sizes[name] for name in MODEL_FILES
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def ensure_offline_model(cache_dir: Path | None = None, *, force: bool = False) -> Path:
    """Return the HF directory of the offline multilingual-e5-small, building it on first use.

    The directory is ``<cache>/models/multilingual-e5-small-q4dq`` with ``cache`` = ``cache_dir`` or
    ``default_cache_dir()``. The build happens in a temporary sibling directory that is renamed into
    place, under a file lock, so concurrent callers (e.g. several Ray workers) wait for one build and
    never see a half-written directory. ``force=True`` rebuilds even a complete directory.
    """
    from filelock import FileLock

    models_dir = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / "models"
    target = models_dir / MODEL_DIR_NAME
    if not force and is_complete(target):
        return target
    sources = locate_sources()  # before the lock: a missing package should fail at once
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / f".{MODEL_DIR_NAME}.lock"), timeout=_LOCK_TIMEOUT_S):
        if not force and is_complete(target):
            return target  # another process built it while we waited
        staging = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR_NAME}.building-", dir=models_dir))
        try:
            build_model_dir(sources, staging)
            _make_readable_by_all(staging)
            if target.exists():
                # Move the stale directory aside first: rename cannot replace a non-empty directory.
                stale = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR_NAME}.stale-", dir=models_dir))
                target.rename(stale / MODEL_DIR_NAME)
                shutil.rmtree(stale, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _make_readable_by_all(directory: Path) -> None:
    # mkdtemp creates 0700 and safetensors writes 0600; a shared cache must be readable by other users
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(0o644)
