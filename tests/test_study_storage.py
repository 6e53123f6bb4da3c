"""study/storage.py, the one place that tells local paths from storage URIs: study directories
are local (a cloud URI fails before Ray, naming the value, instead of becoming a local folder
named ``s3:``), the Ray storage is read, listed, copied out and pruned through pyarrow.fs for
paths and URIs alike (``file://`` URIs exercise the URI code path here), and no other module
of study/ or hybridir/ branches on "://"."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hybridir.model import SETTINGS_FILE
from study import export as export_cli
from study import report as report_cli
from study import run as run_cli
from study.checks import check_storage_path
from study.export import locate_checkpoint
from study.spec import StudyConfigError, load_study
from study.storage import (
    check_storage_location,
    delete_subdirectories,
    is_uri,
    join,
    local_copy,
    local_directory,
    read_file,
    storage_location,
    subdirectories,
    write_file,
)
from study.tune_callback import ResultsCallback

REPO = Path(__file__).resolve().parent.parent
CLOUD = "s3://hybridir/probe"


@pytest.mark.parametrize("cli, argv, field", [
    (run_cli.main, ["--output", CLOUD], "--output"),
    (run_cli.main, ["--resume", CLOUD], "--resume"),
    (report_cli.main, [CLOUD], "study directory"),
    (export_cli.main, [CLOUD], "RUN_DIR"),
    (export_cli.main, ["somewhere", "--to", "gs://bucket/models"], "--to"),
])
def test_a_cloud_uri_as_a_study_directory_fails_naming_it_and_writes_nothing(cli, argv, field, tmp_path,
                                                                            monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(argv) == 2
    err = capsys.readouterr().err
    value = next(arg for arg in argv if "://" in arg)
    assert f"{field} {value!r}" in err and "local" in err
    assert list(tmp_path.iterdir()) == []  # no ./s3:/hybridir/probe, nothing at all


def test_file_uris_are_local_paths_and_other_uris_are_not(tmp_path):
    assert local_directory(tmp_path.as_uri(), "--output") == tmp_path
    assert local_directory("~/runs/x", "--output") == Path.home() / "runs" / "x"
    with pytest.raises(StudyConfigError, match=r"--output 's3://b/x': a s3:// URI"):
        local_directory("s3://b/x", "--output")
    assert storage_location(None, tmp_path) == str(tmp_path / "ray")
    assert storage_location(CLOUD, tmp_path) == CLOUD
    assert is_uri("sqlite:///x.db") and not is_uri("/tmp/x") and not is_uri(tmp_path)


def test_report_cli_takes_a_file_uri_study_directory(tmp_path, capsys):
    spec = load_study("default")
    from study.spec import dump_study

    dump_study(spec, tmp_path / "study.yaml")
    assert report_cli.main([tmp_path.as_uri()]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "reports" / spec.name)


@pytest.mark.parametrize("as_uri", [False, True])
def test_ray_storage_files_checkpoints_and_pruning_through_one_code_path(tmp_path, as_uri):
    root = tmp_path / "ray"
    storage = root.as_uri() if as_uri else str(root)
    run = join(storage, "train-search-t1")
    assert subdirectories(run, "checkpoint_") == []  # a missing run folder: nothing, no error
    for index in (0, 1):
        write_file(join(run, f"checkpoint_00000{index}", "model", SETTINGS_FILE), b"{}")
        write_file(join(run, f"checkpoint_00000{index}", "model", "weights.bin"), bytes([index]) * 8)
    write_file(join(run, "per_query.parquet"), b"rows")
    assert read_file(join(run, "per_query.parquet")) == b"rows" and read_file(join(run, "absent")) is None
    assert subdirectories(run, "checkpoint_") == ["checkpoint_000000", "checkpoint_000001"]

    newest = locate_checkpoint(storage, "search", "t1")
    assert newest == join(run, "checkpoint_000001", "model") and is_uri(newest) == as_uri
    with local_copy(newest, "model") as local:
        assert (local / "weights.bin").read_bytes() == bytes([1]) * 8
    assert not is_uri(newest) or not local.exists()  # a URI's temporary copy is removed

    assert delete_subdirectories(run, "checkpoint_") == ["checkpoint_000000", "checkpoint_000001"]
    assert subdirectories(run, "") == [] and (root / "train-search-t1" / "per_query.parquet").is_file()


def test_the_driver_prunes_checkpoints_in_a_uri_storage_too(tmp_path):
    storage = (tmp_path / "ray").as_uri()
    callback = ResultsCallback(tmp_path / "study", {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1},
                               train_runs_dir=storage, experiment="search", keep_best=("inter/cross_map", "max"))
    for trial, objective in (("a", 0.2), ("b", 0.3)):
        write_file(join(storage, f"train-search-{trial}", "checkpoint_000000", "model", SETTINGS_FILE), b"{}")
        config = {"phase": "search", "cell": 0, "axes": {}, "tuned": {}, "seed": None}
        callback.record(trial, config, {"study_step": 4, "inter/cross_map": objective,
                                        "final/xquad-r/cross_map": objective}, None)
    assert not (tmp_path / "ray" / "train-search-a" / "checkpoint_000000").exists()
    assert (tmp_path / "ray" / "train-search-b" / "checkpoint_000000").is_dir()


def test_storage_settings_are_checked_before_ray(tmp_path):
    check_storage_location(str(tmp_path / "new" / "ray"))  # created, probed
    check_storage_location((tmp_path / "uri").as_uri())
    assert list((tmp_path / "uri").iterdir()) == []  # the probe file is gone
    spec = load_study("default", ["resources.storage_path=nosuchscheme://bucket/x"])
    with pytest.raises(StudyConfigError, match=r"resources.storage_path 'nosuchscheme://bucket/x': cannot write"):
        check_storage_path(spec)
    spec = load_study("default", [f"resources.activation_cache={CLOUD}"])
    with pytest.raises(StudyConfigError, match=r"resources.activation_cache 's3://hybridir/probe'"):
        check_storage_path(spec)


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module's code (docstrings left out)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_only_study_storage_tells_paths_from_uris():
    """No ``"://" in x`` (or split/partition on it) outside study/storage.py: a string constant
    that IS "://" is such a test; URLs built or printed (``https://...``, ``sqlite:///{path}``)
    are not."""
    offenders = []
    for path in sorted([*(REPO / "study").rglob("*.py"), *(REPO / "hybridir").rglob("*.py")]):
        if path == REPO / "study" / "storage.py":
            continue
        offenders += [f"{path.relative_to(REPO)}:{line}" for line, value in _code_strings(path) if value == "://"]
    assert offenders == []
