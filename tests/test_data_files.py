"""The checksummed resolver on real mirror files, and the failures of a bad mirror."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from hybridir.data import files
from hybridir.data.catalog import write_catalog
from hybridir.data.files import DataFileError, catalog, data_file, resolve

SMALL = ("facebookresearch/LASER", "data/tatoeba/v1/tatoeba.amh-eng.amh")  # 6 KB


def _mirror() -> Path:
    return Path(os.environ["HYBRIDIR_MIRROR"])


def _copy_to_fake_mirror(tmp_path: Path) -> tuple[files.DataFile, Path]:
    entry = data_file(*SMALL)
    target = entry.mirror_path(tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copyfile(entry.mirror_path(_mirror()), target)
    return entry, target


def test_catalogue_matches_the_mirror_manifest(tmp_path: Path) -> None:
    regenerated = tmp_path / "catalog.tsv"
    count = write_catalog(_mirror() / "MANIFEST.tsv", regenerated)
    assert regenerated.read_text() == files.CATALOG_PATH.read_text()
    assert count == len(catalog()) > 1000
    assert sum(1 for e in catalog().values() if e.repo == "MicrosoftTranslator/NTREX") == 131


def test_resolve_reads_a_good_file_in_place() -> None:
    entry = data_file(*SMALL)
    path = resolve(entry)
    assert path == _mirror() / "github" / SMALL[0] / SMALL[1]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert entry.url == f"https://raw.githubusercontent.com/{SMALL[0]}/{entry.commit}/{SMALL[1]}"


def test_an_altered_byte_is_caught(tmp_path: Path) -> None:
    entry, copy = _copy_to_fake_mirror(tmp_path)
    assert resolve(entry, mirror=tmp_path) == copy
    data = bytearray(copy.read_bytes())
    data[100] ^= 0x01
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(0, 12345))  # a new mtime invalidates the in-process "already verified" cache
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(DataFileError) as error:
        resolve(entry, mirror=tmp_path)
    message = str(error.value)
    for expected in (SMALL[1], entry.sha256, actual, f"({entry.size} bytes)", "HYBRIDIR_MIRROR"):
        assert expected in message


def test_a_truncated_file_is_caught(tmp_path: Path) -> None:
    entry, copy = _copy_to_fake_mirror(tmp_path)
    copy.write_bytes(copy.read_bytes()[:1000])
    with pytest.raises(DataFileError, match=rf"expected sha256 {entry.sha256} \({entry.size} bytes\).*\(1000 bytes\)"):
        resolve(entry, mirror=tmp_path)


def test_a_missing_file_is_caught(tmp_path: Path) -> None:
    entry = data_file(*SMALL)
    with pytest.raises(DataFileError, match=f"not found in the mirror at {tmp_path}.*HYBRIDIR_MIRROR"):
        resolve(entry, mirror=tmp_path)


def test_uncatalogued_file_is_refused() -> None:
    with pytest.raises(DataFileError, match="no/such:file.txt is not in the data catalogue"):
        data_file("no/such", "file.txt")


def test_malformed_manifest_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "MANIFEST.tsv"
    bad.write_text("repo\tcommit\tpath\tsha256\tbytes\nr\tc\tp\tabc\tnot-a-number\n")
    with pytest.raises(DataFileError, match=f"{bad}:2: malformed row"):
        files.read_manifest(bad)
