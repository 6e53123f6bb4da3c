"""Where a study keeps things: the ONE place that tells local paths from storage URIs.

Two kinds of location, and the rule for each:

* **Study directories** (``study/run.py --output`` / ``--resume``, ``study/report.py DIR``,
  ``study/export.py RUN_DIR`` and ``--to``, ``resources.activation_cache``) are local (or
  shared-filesystem) paths: ``results/``, the reports, the exports, Tune's driver state and the
  activation cache are written with local file I/O. A ``file://`` URI names a local path and is
  taken as one; any other URI (``s3://``, ``gs://``, ...) fails here, before Ray, with the value
  and the option named (:func:`local_directory`), instead of becoming a local folder named
  ``s3:`` (``pathlib.Path("s3://b/x")`` is ``s3:/b/x``).
* **The Ray storage** (``resources.storage_path``, default ``<study dir>/ray``): a local
  directory or any URI ``pyarrow.fs`` opens (``s3://``, ``gs://``, ``file://``). Trials' Train
  checkpoints and per-query files live there; everything the driver does with them (per-query
  copy into ``results/``, checkpoint lookup and copy-out for the export, pruning finished trials'
  checkpoints) goes through the functions below, which use ``pyarrow.fs`` for local paths and URIs
  alike, so one code path serves both. :func:`check_storage_location` opens it and writes a probe
  file before Ray starts.

Optuna's storage (``search.optuna_storage``) is a third kind: a database URL (SQLAlchemy) or a
journal file path; :func:`optuna_storage_location` / :func:`open_optuna_storage` (Ray-free, so
the pre-Ray checks can open it).

No Ray; pyarrow and optuna are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from study.spec import StudyConfigError

_SEPARATOR = "://"


def is_uri(location: str | os.PathLike) -> bool:
    """A ``scheme://...`` URI (or a database URL) rather than a filesystem path."""
    return _SEPARATOR in str(location)


def uri_scheme(location: str) -> str | None:
    """``s3`` of ``s3://bucket/x``; None for a path."""
    return str(location).split(_SEPARATOR, 1)[0] if is_uri(location) else None


def local_directory(value: str | os.PathLike, field: str) -> Path:
    """A study-directory option's value as a local path: a path as given (``~`` expanded), a
    ``file://`` URI as its path; StudyConfigError naming ``field`` and the value for any other
    URI (those directories are written with local file I/O: see the module doc)."""
    text = os.fspath(value)
    if not is_uri(text):
        return Path(text).expanduser()
    if uri_scheme(text) == "file":
        import pyarrow.fs

        _, path = pyarrow.fs.FileSystem.from_uri(text)
        return Path(path)
    raise StudyConfigError(
        f"{field} {text!r}: a {uri_scheme(text)}:// URI, but this must be a local (or shared-filesystem) directory: "
        "results/, the reports, the exports and Tune's driver state are written with local file I/O, and "
        "writing them to cloud storage is not supported. Give a local path; only the Ray storage "
        "(--set resources.storage_path=...) takes a cloud URI."
    )


# --- the Ray storage ----------------------------------------------------------------------------

def storage_location(storage_path: str | None, study_dir: str | Path) -> str:
    """Where a study's Ray experiments and Train runs live: ``resources.storage_path`` (a URI
    as given) or ``<study dir>/ray``; local paths absolute (trials' workers write there from
    their own working directories)."""
    location = storage_path or str(Path(study_dir) / "ray")
    return location if is_uri(location) else os.path.abspath(os.path.expanduser(location))


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a path or a URI (``/`` separators; no trailing slash doubled)."""
    return "/".join([str(location).rstrip("/"), *(part.strip("/") for part in parts)])


def filesystem(location: str):
    """``(pyarrow filesystem, path within it)`` of a local path or URI."""
    import pyarrow.fs

    if not is_uri(location):
        location = os.path.abspath(os.path.expanduser(location))
    return pyarrow.fs.FileSystem.from_uri(location)


def write_file(location: str, data: bytes) -> None:
    """Write ``data`` to a local path or storage URI, whole: a temporary name, then a move, so
    a reader never sees half a file."""
    fs, path = filesystem(location)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(temporary) as stream:
        stream.write(data)
    fs.move(temporary, path)


def read_file(location: str) -> bytes | None:
    """The bytes at a local path or storage URI, None if there is no such file."""
    import pyarrow.fs

    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read()


def is_file(location: str) -> bool:
    import pyarrow.fs

    fs, path = filesystem(location)
    return fs.get_file_info(path).type == pyarrow.fs.FileType.File


def subdirectories(location: str, prefix: str = "") -> list[str]:
    """Names of the directories directly under ``location`` that start with ``prefix``, sorted
    (none when ``location`` does not exist)."""
    import pyarrow.fs

    fs, path = filesystem(location)
    entries = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    return sorted(entry.base_name for entry in entries
                  if entry.type == pyarrow.fs.FileType.Directory and entry.base_name.startswith(prefix))


def delete_subdirectories(location: str, prefix: str) -> list[str]:
    """Delete every directory directly under ``location`` whose name starts with ``prefix``
    (pruning finished trials' checkpoints); returns their names. Missing ones are no error."""
    fs, path = filesystem(location)
    deleted = []
    for name in subdirectories(location, prefix):
        with contextlib.suppress(FileNotFoundError):
            fs.delete_dir(f"{path.rstrip('/')}/{name}")
            deleted.append(name)
    return deleted


@contextlib.contextmanager
def local_copy(location: str, name: str) -> Iterator[Path]:
    """A local directory holding the directory at ``location``: the path itself, or a temporary
    copy named ``name`` (removed afterwards) of a URI's directory."""
    if not is_uri(location):
        yield Path(location)
        return
    import pyarrow.fs

    fs, path = filesystem(location)
    with tempfile.TemporaryDirectory(prefix="hybridir-storage-") as temporary:
        target = Path(temporary) / name
        target.mkdir()  # copy_files writes files into it, it does not create it
        pyarrow.fs.copy_files(path, str(target), source_filesystem=fs,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        yield target


def check_writable_directory(path: str | os.PathLike, field: str) -> Path:
    """Create local directory ``path`` if needed and prove it writable, naming ``field`` otherwise."""
    path = local_directory(path, field).resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise StudyConfigError(f"{field} {path}: not a writable directory ({exc.strerror or exc})") from None
    return path


def check_storage_location(location: str, field: str = "resources.storage_path") -> None:
    """The Ray storage opens and takes a file (written and deleted), before Ray starts: a local
    directory, or a URI whose filesystem ``pyarrow.fs`` knows and reaches."""
    if not is_uri(location):
        check_writable_directory(location, field)
        return
    probe = join(location, f".write-test-{uuid.uuid4().hex}")
    try:
        write_file(probe, b"ok")
        fs, path = filesystem(probe)
        fs.delete_file(path)
    except Exception as exc:  # noqa: BLE001 - an unknown scheme, no credentials, unreachable: named below
        raise StudyConfigError(f"{field} {location!r}: cannot write there ({type(exc).__name__}: {exc})") from None


# --- Optuna's storage ---------------------------------------------------------------------------

OPTUNA_JOURNAL_FILE = "optuna.journal"  # the default Optuna storage, in the study directory


def is_database_url(location: str) -> bool:
    """An RDB URL (``sqlite:///...``, ``postgresql://...``) rather than a journal file path."""
    return is_uri(location)


def optuna_storage_location(spec, study_dir: str | os.PathLike) -> str:
    """Where a study's Optuna studies live: ``search.optuna_storage`` (an RDB URL as given, a
    journal path relative to the study directory) or ``<study dir>/optuna.journal``.

    Journal paths are made absolute here because the searcher is pickled into Tune's state
    and reopens its storage from a later process that may run in another directory."""
    configured = spec.search.optuna_storage
    if configured and is_database_url(configured):
        return configured
    return os.path.abspath(os.path.join(study_dir, os.path.expanduser(configured or OPTUNA_JOURNAL_FILE)))


def open_optuna_storage(location: str | None):
    """An Optuna storage: in memory (None), a relational database (URL) or a journal file."""
    import optuna

    if location is None:
        return optuna.storages.InMemoryStorage()
    if is_database_url(location):
        return optuna.storages.RDBStorage(location)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(location))
