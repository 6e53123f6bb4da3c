"""Read a GPU-check pack (bench/gpu_check.sh pack): the NTREX pairs and the reduced model."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def pack_model_and_pairs(pack: Path) -> tuple[str, object]:
    """(directory of the materialised reduced model, ParallelPairs of the pack's texts)."""
    from hybridir.data.types import ParallelPairs
    from hybridir.offline_model.transport import materialize

    texts = json.loads((Path(pack) / "texts.json").read_text())
    model_dir = materialize(Path(pack) / "model", Path(tempfile.mkdtemp(prefix="gpu-pack-")) / "model")
    pairs = ParallelPairs(name=texts["name"], item_ids=texts["item_ids"], groups=texts["groups"],
                          queries=texts["queries"], passages=texts["passages"])  # fmt: skip
    return str(model_dir), pairs
