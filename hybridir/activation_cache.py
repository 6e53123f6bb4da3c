"""An on-disk cache of the hidden states that a frozen encoder bottom produces for a text.

With partial fine-tuning (``model.train_layers``) the embeddings and the lower layers never
change, so their output for a text is a pure function of the token ids. Computing it once and
reading it back afterwards makes a full-depth trial cost little more than its top layers, for
training texts and evaluation texts alike, across steps, epochs, trials, seeds, resumed studies
and the DDP workers of one machine (or of a cluster with shared storage).

Layout: ``<root>/<namespace>/`` where the namespace is a hash of everything besides the text
that changes the result: a fingerprint of the frozen weights, the number of frozen layers,
the architecture settings and the compute dtype (``namespace.json`` records them in clear).
An entry is keyed by a hash of the token ids, which already holds the prefix, the text, the
tokenizer and the truncation length. Entries are stored in append-only shards
(``shard-*.safetensors``), each written to a temporary name and renamed: concurrent writers
never see or leave half a file, and duplicate entries from two writers are harmless.

Every entry carries a CRC32 of its bytes; a shard that cannot be opened (truncated, garbled
header) or an entry whose bytes do not match is reported, dropped and recomputed, never used.
The cache root is bounded (``max_bytes``); once full, new states are recomputed rather than
stored, with one warning that says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
SHARD_SUFFIX = ".safetensors"
NAMESPACE_FILE = "namespace.json"
# Entries buffered in memory before a shard is written: big enough that shards stay few,
# small enough that a killed process loses little work.
FLUSH_ENTRIES = 2048


def entry_key(token_ids: torch.Tensor) -> str:
    """The key of one text: a hash of its (unpadded) token ids."""
    data = token_ids.to(torch.int64).contiguous().numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def directory_size(path: Path) -> int:
    total = 0
    for entry in path.rglob("*"):
        try:
            if entry.is_file():
                total += entry.stat().st_size
        except OSError:  # removed by another process meanwhile
            continue
    return total


class ActivationCache:
    """One namespace of the cache: entries ``key -> [tokens, hidden]`` tensors.

    ``get_many`` returns the cached tensors (None for a miss); ``put_many`` buffers new ones,
    written as a shard by ``flush`` (also automatically every ``FLUSH_ENTRIES`` entries).
    """

    def __init__(self, root: str | Path, namespace: str, description: dict, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"activation cache size limit must be positive, got {max_bytes} bytes")
        self.root = Path(root).expanduser()
        self.namespace = namespace
        self.dir = self.root / namespace
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"cannot create the activation cache directory {self.dir}: {exc}") from exc
        self.max_bytes = int(max_bytes)
        self._write_description(description)
        self._index: dict[str, tuple[str, int]] = {}
        self._shards: dict[str, _Shard] = {}
        self._broken: set[str] = set()
        self._pending: dict[str, torch.Tensor] = {}
        self._full_warned = False
        self.stats = {"hits": 0, "misses": 0, "written": 0, "corrupt": 0}
        self.refresh()

    # ------------------------------------------------------------------ reading
    def refresh(self) -> None:
        """Index the shards other processes have written since the last look."""
        for path in sorted(self.dir.glob(f"shard-*{SHARD_SUFFIX}")):
            if path.name in self._shards or path.name in self._broken:
                continue
            try:
                shard = _Shard(path)
            except Exception as exc:  # noqa: BLE001 - any unreadable shard is recomputed
                self._discard(path, f"cannot be read ({type(exc).__name__}: {exc})")
                continue
            self._shards[path.name] = shard
            for row, key in enumerate(shard.keys):
                self._index.setdefault(key, (path.name, row))

    def __len__(self) -> int:
        return len(self._index) + len(self._pending)

    def __contains__(self, key: str) -> bool:
        return key in self._index or key in self._pending

    def get_many(self, keys: Sequence[str]) -> list[torch.Tensor | None]:
        if any(key not in self for key in keys):
            self.refresh()
        found: list[torch.Tensor | None] = []
        for key in keys:
            value = self._pending.get(key)
            if value is None and key in self._index:
                value = self._read(key)
            found.append(value)
            self.stats["hits" if value is not None else "misses"] += 1
        return found

    def _read(self, key: str) -> torch.Tensor | None:
        shard_name, row = self._index[key]
        shard = self._shards[shard_name]
        try:
            value = shard.read(row)
        except Exception as exc:  # noqa: BLE001
            self._discard(shard.path, f"entry {row} cannot be read ({type(exc).__name__}: {exc})")
            return None
        if value is None:
            self._discard(shard.path, f"entry {row} does not match its checksum")
            return None
        return value

    def _discard(self, path: Path, why: str) -> None:
        """Stop using a damaged shard; its entries become misses and are recomputed."""
        self.stats["corrupt"] += 1
        log.warning("activation cache: %s %s; it is ignored and its entries are recomputed", path, why)
        self._broken.add(path.name)
        self._shards.pop(path.name, None)
        self._index = {k: v for k, v in self._index.items() if v[0] != path.name}
        try:  # moved aside, not deleted: the bytes stay for inspection
            path.rename(path.with_name(path.name + ".corrupt"))
        except OSError:
            pass

    # ------------------------------------------------------------------ writing
    def put_many(self, keys: Sequence[str], values: Sequence[torch.Tensor]) -> None:
        for key, value in zip(keys, values, strict=True):
            if key not in self:
                self._pending[key] = value.detach().to("cpu").contiguous()
        if len(self._pending) >= FLUSH_ENTRIES:
            self.flush()

    def flush(self) -> Path | None:
        """Write the buffered entries as one shard (atomically); returns its path."""
        if not self._pending:
            return None
        keys = list(self._pending)
        values = [self._pending[k] for k in keys]
        data = torch.cat(values) if len(values) > 1 else values[0]
        lengths = torch.tensor([v.shape[0] for v in values], dtype=torch.int64)
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        shard_bytes = data.numel() * data.element_size() + offsets.numel() * 8
        used = directory_size(self.root)
        if used + shard_bytes > self.max_bytes:
            if not self._full_warned:
                log.warning(
                    "activation cache %s is full: %.2f GiB used, a %.1f MiB shard would exceed the "
                    "limit of %.2f GiB (model.activation_cache_max_gb); hidden states not cached yet "
                    "are recomputed each time (results are unchanged, only slower). Raise the limit "
                    "or delete old namespaces under %s.",
                    self.dir, used / 2**30, shard_bytes / 2**20, self.max_bytes / 2**30, self.root,
                )  # fmt: skip
                self._full_warned = True
            self._pending.clear()
            return None
        checksums = [_crc(v) for v in values]
        name = f"shard-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SHARD_SUFFIX}"
        final = self.dir / name
        partial = final.with_name(name + ".tmp")
        metadata = {"version": FORMAT_VERSION, "keys": json.dumps(keys), "crc32": json.dumps(checksums)}
        try:
            save_file({"data": data, "offsets": offsets}, str(partial), metadata=metadata)
            os.replace(partial, final)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            log.warning("activation cache: could not write %s (%s); entries stay uncached", final, exc)
            self._pending.clear()
            return None
        self.stats["written"] += len(keys)
        self._pending.clear()
        self.refresh()
        return final

    def _write_description(self, description: dict) -> None:
        path = self.dir / NAMESPACE_FILE
        if path.is_file():
            return
        partial = path.with_name(f"{NAMESPACE_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        partial.write_text(json.dumps({"format": FORMAT_VERSION, **description}, indent=2) + "\n")
        os.replace(partial, path)


class _Shard:
    """A read-only view of one shard file (memory-mapped by safetensors)."""

    def __init__(self, path: Path):
        self.path = path
        self._file = safe_open(str(path), framework="pt")
        metadata = self._file.metadata() or {}
        if metadata.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {metadata.get('version')!r}, expected {FORMAT_VERSION}")
        self.keys: list[str] = json.loads(metadata["keys"])
        self.checksums: list[int] = json.loads(metadata["crc32"])
        self.offsets = self._file.get_tensor("offsets")
        self._data = self._file.get_slice("data")
        rows = int(self._data.get_shape()[0])
        if len(self.keys) != len(self.checksums) or len(self.offsets) != len(self.keys) + 1 or int(self.offsets[-1]) != rows:
            raise ValueError("keys, checksums and offsets disagree")

    def read(self, row: int) -> torch.Tensor | None:
        start, stop = int(self.offsets[row]), int(self.offsets[row + 1])
        value = self._data[start:stop]
        return value if _crc(value) == self.checksums[row] else None


def _crc(value: torch.Tensor) -> int:
    # Through uint8, so that dtypes numpy lacks (bfloat16) are checksummed the same way.
    return zlib.crc32(value.contiguous().view(torch.uint8).numpy())
