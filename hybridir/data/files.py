"""Checksummed data files: a local mirror or a verified download.

Every file a loader reads is a :class:`DataFile` pinned to a repository commit, with the
sha256 and size it must have. :func:`resolve` returns a local path holding exactly those bytes:

* with a mirror (``mirror=`` argument or the ``HYBRIDIR_MIRROR`` environment variable) it reads
  ``<mirror>/github/<owner>/<repo>/<path>`` in place -- the layout of an offline copy of
  raw.githubusercontent.com -- and verifies it;
* without one it downloads ``https://raw.githubusercontent.com/<repo>/<commit>/<path>`` with
  pooch into ``$HYBRIDIR_CACHE/data`` (default ``~/.cache/hybridir/data``); pooch checks the hash.

A missing, truncated or altered file raises :class:`DataFileError` naming the file, the
expected and actual sha256 and size, and the fix. The pinned files are listed in
``catalog.tsv`` next to this module (generated from a mirror's MANIFEST.tsv by
``python -m hybridir.data.catalog``), so the package works without any mirror.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pooch

CATALOG_PATH = Path(__file__).with_name("catalog.tsv")
CATALOG_COLUMNS = ("repo", "commit", "path", "sha256", "bytes")


class DataFileError(ValueError):
    """A data file is missing, or its bytes are not the pinned ones."""


@dataclass(frozen=True)
class DataFile:
    """One file of a public repository at a pinned commit, with its expected content hash."""

    repo: str
    commit: str
    path: str
    sha256: str
    size: int

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.path}"

    def mirror_path(self, mirror: str | os.PathLike) -> Path:
        return Path(mirror) / "github" / self.repo / self.path

    def __str__(self) -> str:
        return f"{self.repo}@{self.commit[:7]}:{self.path}"


@functools.cache
def catalog() -> dict[tuple[str, str], DataFile]:
    """All pinned files, keyed by (repo, path)."""
    return read_manifest(CATALOG_PATH)


def read_manifest(path: str | os.PathLike) -> dict[tuple[str, str], DataFile]:
    """Parse a MANIFEST.tsv-style file (repo, commit, path, sha256, bytes)."""
    path = Path(path)
    files: dict[tuple[str, str], DataFile] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if tuple(reader.fieldnames or ()) != CATALOG_COLUMNS:
            raise DataFileError(f"{path}: header {reader.fieldnames} is not {list(CATALOG_COLUMNS)}")
        for line_number, row in enumerate(reader, start=2):
            try:
                entry = DataFile(row["repo"], row["commit"], row["path"], row["sha256"].lower(), int(row["bytes"]))
            except (TypeError, ValueError) as exc:
                raise DataFileError(f"{path}:{line_number}: malformed row {row}: {exc}") from exc
            if (entry.repo, entry.path) in files:
                raise DataFileError(f"{path}:{line_number}: {entry.repo}:{entry.path} is listed twice")
            files[(entry.repo, entry.path)] = entry
    return files


def data_file(repo: str, path: str) -> DataFile:
    """The pinned :class:`DataFile` of ``path`` in ``repo``; DataFileError if it is not catalogued."""
    try:
        return catalog()[(repo, path)]
    except KeyError:
        raise DataFileError(f"{repo}:{path} is not in the data catalogue {CATALOG_PATH}") from None


def catalogued_paths(repo: str, prefix: str = "") -> list[str]:
    """Sorted catalogued paths of ``repo`` that start with ``prefix``."""
    return sorted(path for (r, path) in catalog() if r == repo and path.startswith(prefix))


def mirror_root(mirror: str | os.PathLike | None = None) -> Path | None:
    """The mirror in effect: the argument, else $HYBRIDIR_MIRROR, else None (download)."""
    if mirror is None:
        mirror = os.environ.get("HYBRIDIR_MIRROR") or None
    return None if mirror is None else Path(mirror)


def cache_root() -> Path:
    """Where downloaded data files are kept: $HYBRIDIR_CACHE/data (default ~/.cache/hybridir/data)."""
    base = os.environ.get("HYBRIDIR_CACHE") or Path.home() / ".cache" / "hybridir"
    return Path(base) / "data"


def resolve(file: DataFile, mirror: str | os.PathLike | None = None) -> Path:
    """Return a local path whose bytes are exactly ``file``'s (see the module docstring)."""
    root = mirror_root(mirror)
    if root is not None:
        local = file.mirror_path(root)
        if not local.is_file():
            raise DataFileError(
                f"{file}: not found in the mirror at {local}. Set HYBRIDIR_MIRROR to a mirror that "
                f"holds github/{file.repo}/{file.path}, or unset it to download {file.url}"
            )
        _verify(file, local, fix="set HYBRIDIR_MIRROR to a correct mirror (or unset it to download)")
        return local
    return _download(file)


def _download(file: DataFile) -> Path:
    target_dir = cache_root() / file.repo / file.commit / Path(file.path).parent
    try:
        local = Path(
            pooch.retrieve(
                file.url,
                known_hash=f"sha256:{file.sha256}",
                fname=Path(file.path).name,
                path=target_dir,
                progressbar=False,
            )
        )
    except ValueError as exc:  # pooch's hash mismatch
        raise DataFileError(
            f"{file}: the download from {file.url} does not match the pinned sha256 {file.sha256} "
            f"({exc}). Delete {target_dir / Path(file.path).name} and retry, or set HYBRIDIR_MIRROR."
        ) from exc
    except OSError as exc:  # network errors are OSError subclasses in requests/urllib3
        raise DataFileError(
            f"{file}: cannot download {file.url} ({exc}). Without internet access set "
            f"HYBRIDIR_MIRROR to a local mirror."
        ) from exc
    _verify(file, local, fix=f"delete {local} to re-download it")
    return local


# (absolute path, mtime_ns, size) of files whose hash already matched in this process:
# loaders touch ~150 files, hashing each once is enough until the file changes.
_VERIFIED: set[tuple[str, int, int]] = set()


def _verify(file: DataFile, local: Path, *, fix: str) -> None:
    stat = local.stat()
    key = (str(local.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _VERIFIED:
        return
    actual = _sha256(local)
    if stat.st_size != file.size or actual != file.sha256:
        raise DataFileError(
            f"{file}: {local} does not hold the pinned bytes: expected sha256 {file.sha256} "
            f"({file.size} bytes), found sha256 {actual} ({stat.st_size} bytes). To fix: {fix}."
        )
    _VERIFIED.add(key)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_text(file: DataFile, mirror: str | os.PathLike | None = None) -> str:
    """Resolve and read a file as UTF-8 text."""
    return resolve(file, mirror).read_text(encoding="utf-8")


def read_squad_articles(path: str | os.PathLike) -> list[dict]:
    """The ``data`` list of a SQuAD-format JSON file; ValueError naming the file if it is
    not JSON (e.g. cut short) or has no ``data`` list."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (cut short or corrupted?): {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise ValueError(f"{path}: not a SQuAD-format file (no top-level 'data' list)")
    return document["data"]
