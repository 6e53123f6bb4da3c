"""Bad data never reaches training: a mirror file with one byte changed, a JSON file cut in half,
a question without answers, an empty language file. Each is reported with the file and the
problem, by the study before Ray starts, by the training loop before its first step, and by
the parsers themselves for bytes no checksum pins.

The faulty files are real copies of mirror files, changed in a private mirror whose other
entries are symlinks to the real, read-only mirror.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hybridir.data.files import DataFileError, data_file, mirror_root
from hybridir.data.lareqa import LAREQA_REPO, parse_lareqa_file
from hybridir.data.ntrex import ntrex_files


def _lareqa_file(language: str):
    return data_file(LAREQA_REPO, f"xquad-r/{language}.json")


def tampered_mirror(root: Path, entry, change) -> tuple[Path, Path]:
    """A mirror at ``root`` identical to the real one except ``entry``'s bytes, = change(bytes)."""
    real_root = mirror_root()
    relative = entry.mirror_path(real_root).relative_to(real_root)
    source, target = real_root, root
    target.mkdir(parents=True)
    for depth, part in enumerate(relative.parts):
        for sibling in source.iterdir():
            if sibling.name != part:
                (target / sibling.name).symlink_to(sibling)
        source, target = source / part, target / part
        if depth < len(relative.parts) - 1:
            target.mkdir()
    target.write_bytes(change(source.read_bytes()))
    return root, target


def _flip_one_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]


def _cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _no_answers(data: bytes) -> bytes:
    document = json.loads(data)
    document["data"][0]["paragraphs"][0]["qas"][0]["answers"] = []
    return json.dumps(document).encode()


MIRROR_CASES = [
    # (case, file, change, words the message must contain besides the file)
    ("one byte changed", lambda: _lareqa_file("th"), _flip_one_byte, ["sha256"]),
    ("JSON cut in half", lambda: _lareqa_file("el"), _cut_in_half, ["sha256", "bytes"]),
    ("question without answers", lambda: _lareqa_file("en"), _no_answers, ["sha256"]),
    ("empty language file", lambda: ntrex_files()["en"], lambda data: b"", ["sha256", "(0 bytes)"]),
]


@pytest.mark.parametrize("case,entry,change,words", MIRROR_CASES, ids=[c[0] for c in MIRROR_CASES])
def test_study_names_the_bad_file_before_ray_starts(case, entry, change, words, tmp_path, monkeypatch, capsys):
    import ray

    from study.run import main

    mirror, bad = tampered_mirror(tmp_path / "mirror", entry(), change)
    monkeypatch.setenv("HYBRIDIR_MIRROR", str(mirror))
    code = main(["--output", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(bad) in err and all(word in err for word in words), err
    assert "Traceback" not in err
    assert not ray.is_initialized()
    assert not (tmp_path / "study" / "ray").exists()  # no trial storage was ever created


def test_training_refuses_a_bad_file_before_its_first_step(tiny_encoder_dir, tmp_path, monkeypatch):
    from hybridir.config import TrainConfig
    from hybridir.train import TrainCallback, train

    mirror, bad = tampered_mirror(tmp_path / "mirror", ntrex_files()["de"], _flip_one_byte)
    monkeypatch.setenv("HYBRIDIR_MIRROR", str(mirror))
    steps = []

    class Steps(TrainCallback):
        def on_log(self, step, metrics):
            steps.append(step)

    config = TrainConfig.model_validate({
        "model": {"name": str(tiny_encoder_dir)}, "data": {"languages": ["en", "de"]},
        "batching": {"batch_size": 4}, "max_steps": 2, "log_every": 1, "num_threads": 1,
    })  # fmt: skip
    with pytest.raises(DataFileError) as info:
        train(config, tmp_path / "run", callbacks=[Steps()])
    assert str(bad) in str(info.value) and "sha256" in str(info.value)
    assert steps == [] and not (tmp_path / "run" / "checkpoints").exists()


# Bytes no checksum pins (a new dataset's files, a catalogue regenerated from a bad mirror):
# the parser itself must say what is wrong and where.
def _copy_changed(tmp_path: Path, language: str, change) -> Path:
    source = _lareqa_file(language).mirror_path(mirror_root())
    target = tmp_path / f"{language}.json"
    target.write_bytes(change(source.read_bytes()))
    return target


def test_parser_names_a_json_file_cut_in_half(tmp_path):
    path = _copy_changed(tmp_path, "el", _cut_in_half)
    with pytest.raises(ValueError, match="not valid JSON") as info:
        parse_lareqa_file(path, "el")
    assert str(path) in str(info.value)


def test_parser_names_a_question_without_answers(tmp_path):
    path = _copy_changed(tmp_path, "en", _no_answers)
    question = json.loads(path.read_text())["data"][0]["paragraphs"][0]["qas"][0]["id"]
    with pytest.raises(ValueError, match="has no answer") as info:
        parse_lareqa_file(path, "en")
    assert str(path) in str(info.value) and question in str(info.value)


def test_parser_names_an_empty_file(tmp_path):
    path = _copy_changed(tmp_path, "de", lambda data: b"")
    with pytest.raises(ValueError, match="not valid JSON") as info:
        parse_lareqa_file(path, "de")
    assert str(path) in str(info.value)


def test_parser_names_a_missing_field(tmp_path):
    def drop_sentences(data: bytes) -> bytes:
        document = json.loads(data)
        del document["data"][1]["paragraphs"][0]["sentences"]
        return json.dumps(document).encode()

    path = _copy_changed(tmp_path, "zh", drop_sentences)
    with pytest.raises(ValueError, match="lacks the field 'sentences'") as info:
        parse_lareqa_file(path, "zh")
    assert str(path) in str(info.value)


def test_tampered_mirror_helper_changes_only_the_one_file(tmp_path):
    mirror, bad = tampered_mirror(tmp_path / "m", _lareqa_file("th"), _flip_one_byte)
    real = _lareqa_file("de").mirror_path(mirror_root())
    assert os.path.realpath(_lareqa_file("de").mirror_path(mirror)) == str(real.resolve())
    assert not bad.is_symlink() and bad.stat().st_size == _lareqa_file("th").size
