"""The result store and the reports need no Ray: they import, and build a study's reports,
in a process where every ``import ray`` fails (``sys.modules["ray"] = None``)."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys

import pandas as pd

from study.report import build_reports
from study.results import ResultStore
from study.spec import dump_study, load_study
from study.vocabulary import SPEC_FILE, axis_column, final_key

RAY_FREE = ["study.vocabulary", "study.question", "study.selection", "study.storage", "study.spec", "study.results",
            "study.questions", *(f"study.questions.{name}" for name in ("common", "batch", "data", "languages",
                                                                        "paper", "ratio", "scale")),
            "study.verdicts", "study.report", "study.checks", "study.run", "study.console", "study.export", "study.plan"]
NO_RAY = "import sys; sys.modules['ray'] = None\n"


def _run_without_ray(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_RAY + code, *args], capture_output=True, text=True, timeout=300)


def test_the_blocker_really_blocks_ray():
    result = _run_without_ray("import ray.tune")
    assert result.returncode != 0 and "ray" in result.stderr


def test_store_reports_and_checks_import_without_ray():
    result = _run_without_ray("import importlib, sys\nfor name in sys.argv[1:]: importlib.import_module(name)\n"
                              "assert sys.modules['ray'] is None\n", *RAY_FREE)
    assert result.returncode == 0, result.stderr


def _small_study(directory):
    spec = load_study("languages", ["axes.data.num_languages=[10, 40, 60]"])
    dump_study(spec, directory / SPEC_FILE)
    store = ResultStore(directory)
    for cell, axes in enumerate(spec.cells()):
        n = axes["data.num_languages"]
        for seed in range(2):
            metrics = {final_key(dataset, metric): 0.4 - 0.001 * n + 0.01 * seed + (0.1 if dataset == "mlqa-r" else 0)
                       for dataset in ("xquad-r", "mlqa-r") for metric in ("cross_map", "cross_f1@10", "multi_map")}
            store.append_trial({"trial_id": f"t{cell}-{seed}", "status": "completed", "phase": "seeds", "cell": cell,
                                "seed": seed + 1, axis_column("data.num_languages"): n, "inter/cross_map": 0.3,
                                **metrics})
    return spec


def test_build_reports_without_ray_matches_the_same_build_with_ray(tmp_path):
    with_ray, without_ray = tmp_path / "with-ray", tmp_path / "without-ray"
    with_ray.mkdir()
    spec = _small_study(with_ray)
    shutil.copytree(with_ray, without_ray)

    expected = build_reports(with_ray)
    result = _run_without_ray("from pathlib import Path\nfrom study.report import build_reports\n"
                              "print(build_reports(Path(sys.argv[1])))\nassert sys.modules['ray'] is None\n",
                              str(without_ray))
    assert result.returncode == 0, result.stderr
    out_dir = without_ray / "reports" / spec.name
    assert result.stdout.strip().splitlines()[-1] == str(out_dir)
    names = sorted(path.name for path in expected.iterdir())
    assert names == sorted(path.name for path in out_dir.iterdir())
    for name in names:
        if name.endswith(".csv"):
            pd.testing.assert_frame_equal(pd.read_csv(out_dir / name), pd.read_csv(expected / name))
    assert (out_dir / "report.md").read_text() == (expected / "report.md").read_text()
    assert len(pd.read_csv(out_dir / "languages.csv")) == 2 * len(spec.cells())


def test_callbacks_pickled_under_the_old_module_path_still_load(tmp_path):
    """Studies started before study.tune_callback existed saved study.results.ResultsCallback."""
    from study.tune_callback import ResultsCallback

    callback = ResultsCallback(tmp_path, {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1.0})
    legacy = pickle.dumps(callback, protocol=0).replace(b"study.tune_callback", b"study.results")
    assert b"study.results\nResultsCallback" in legacy
    restored = pickle.loads(legacy)
    assert type(restored) is ResultsCallback and restored.store.dir == tmp_path / "results"


def test_pre_ray_validation_runs_without_ray(tmp_path):
    """The driver's checks (schema, the question's own, trackers, batch division, storage,
    Optuna's storage) run where Ray cannot be imported."""
    code = (
        "from pathlib import Path\n"
        "from study.spec import load_study\n"
        "from study import checks\n"
        "spec = load_study('ratio', ['tracking.trackers=[tensorboard]', 'report.low_resource_languages=[th]',\n"
        "                            'tune={optim.lr: {distribution: loguniform, low: 1.0e-5, high: 1.0e-4}}'])\n"
        "checks.check_question(spec)\n"
        "checks.check_trackers(spec)\n"
        "checks.check_batch_division(spec)\n"
        "checks.check_storage_path(spec)\n"
        "checks.check_optuna_storage(spec, checks.check_output_dir(Path(sys.argv[1])))\n"
        "assert sys.modules['ray'] is None and 'optuna' in sys.modules\n"
    )
    result = _run_without_ray(code, str(tmp_path / "study"))
    assert result.returncode == 0, result.stderr


def test_plan_runs_without_ray():
    """``--plan`` prints the default study's plan where Ray cannot be imported."""
    code = ("from study.run import main\n"
            "assert main(['--study', 'default', '--plan']) == 0\n"
            "assert sys.modules['ray'] is None\n")
    result = _run_without_ray(code)
    assert result.returncode == 0, result.stderr
    assert "trials: 12" in result.stdout
