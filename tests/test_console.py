"""The study's console: one line per trial event, progress bars only on a terminal.

The lines are checked as a person reads them (cell, axis values, seed, headline metric); the
end-to-end study test (tests/test_study_e2e.py) checks a real study's whole console.
"""

from __future__ import annotations

import io
import logging
import pickle
from types import SimpleNamespace

import pytest

from hybridir.progress import PROGRESS_ENV, bars_enabled, progress_bar, quiet_libraries
from study.console import (
    VERBOSE_ENV,
    configure_worker,
    describe_config,
    headline_final,
    progress_line,
    set_verbosity,
)
from study.tune_callback import TrialConsole

CONFIG = {"phase": "search", "cell": 1, "axes": {"batching.alpha": 0.5}, "tuned": {"optim.lr": 3.2e-5},
          "seed": None}
FINAL = {"study_step": 40, "train/loss": 1.5, "inter/cross_map": 0.61,
         "final/xquad-r/mono_map": 0.7915, "final/xquad-r/cross_map": 0.6712, "final/xquad-r/multi_map": 0.4343,
         "final/tatoeba/accuracy": 0.93, "matrices_json": "{\"big\": 1}", "time_total_s": 171.4}


def test_a_trial_is_described_by_its_cell_axis_values_and_effective_seed():
    assert describe_config(CONFIG, base_seed=0) == "cell 1 alpha=0.5 lr=3.20e-05 seed 0"
    assert describe_config({**CONFIG, "seed": 3}, base_seed=0).endswith("seed 3")


def test_headline_of_each_final_set():
    assert headline_final(FINAL) == "tatoeba acc 0.9300; xquad-r Mo 0.7915 Cr 0.6712 Mul 0.4343"
    assert headline_final({"study_step": 4, "train/loss": 1.0}) == ""


def test_a_report_is_one_compact_line():
    line = progress_line({"study_step": 20, "train/loss": 1.23456, "inter/cross_map": 0.61234,
                          "train/s_per_step": 0.71}, 40, "inter/cross_map")
    assert line == "step 20/40 loss 1.2346 cross_map 0.6123 0.71 s/step"


def _events(console: TrialConsole, capsys) -> list[str]:
    """Tune's events for three trials (completed, pruned, failed), each with Tune's trial list."""
    trial = SimpleNamespace(trial_id="ab12cd34", config=CONFIG, last_result=None, status="RUNNING")
    pruned = SimpleNamespace(trial_id="ef56", config={**CONFIG, "cell": 0},
                             last_result={"study_step": 20, "inter/cross_map": 0.41}, status="PENDING")
    failed = SimpleNamespace(trial_id="0bad", config=CONFIG, last_result=None, error_file="/x/error.txt",
                             status="PENDING")
    trials = [trial, pruned, failed]
    console.on_trial_start(0, trials, trial)
    console.on_trial_result(0, trials, trial, {"study_step": 20, "train/loss": 2.0, "inter/cross_map": 0.5})
    console.on_trial_result(0, trials, trial, FINAL)  # the final report: the "completed" line says it
    trial.last_result = FINAL
    console.on_trial_complete(0, trials, trial)
    trial.status = "TERMINATED"
    console.on_trial_start(0, trials, pruned)
    console.on_trial_complete(0, trials, pruned)
    pruned.status = "TERMINATED"
    console.on_trial_error(0, trials, failed)
    return capsys.readouterr().out.splitlines()


def test_trial_events_are_one_line_each(capsys, monkeypatch):
    monkeypatch.setenv(VERBOSE_ENV, "0")
    console = TrialConsole("search", total_trials=3, objective="inter/cross_map", base_seed=0,
                           max_steps={0: 40, 1: 40})
    lines = _events(console, capsys)
    assert lines == [
        "[study] search trial ab12cd34 started: cell 1 alpha=0.5 lr=3.20e-05 seed 0",
        "[study] search trial ab12cd34 step 20/40 loss 2.0000 cross_map 0.5000",
        "[study] search trial ab12cd34 completed (171 s): cell 1 alpha=0.5 lr=3.20e-05 seed 0; "
        "tatoeba acc 0.9300; xquad-r Mo 0.7915 Cr 0.6712 Mul 0.4343 [1/3 search trials done]",
        "[study] search trial ef56 started: cell 0 alpha=0.5 lr=3.20e-05 seed 0",
        "[study] search trial ef56 pruned at step 20 (cross_map 0.4100): cell 0 alpha=0.5 lr=3.20e-05 seed 0 "
        "[2/3 search trials done]",
        "[study] search trial 0bad error: cell 1 alpha=0.5 lr=3.20e-05 seed 0; details in /x/error.txt "
        "[3/3 search trials done]",
    ]


def test_verbose_adds_the_full_metric_dictionaries_and_survives_pickling(capsys, monkeypatch):
    console = pickle.loads(pickle.dumps(TrialConsole("search", 3, "inter/cross_map", 0, {1: 40}, already_done=1)))
    monkeypatch.setenv(VERBOSE_ENV, "1")  # read at each event: a restored callback follows this run
    lines = _events(console, capsys)
    dicts = [line for line in lines if "{" in line]
    assert len(dicts) == 3  # the intermediate report, the completed and the pruned trial
    assert "'final/xquad-r/cross_map': 0.6712" in dicts[1] and "matrices_json" not in dicts[1]
    done = [line for line in lines if line.endswith("trials done]")]
    assert "[2/3 search trials done]" in done[0]  # one had finished before the driver restarted


@pytest.fixture
def restore_library_logging():
    """configure_worker() changes process-wide library settings; later tests get them back."""
    import datasets
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_level, ds_level = hf_logging.get_verbosity(), datasets.logging.get_verbosity()
    hub_bars, hf_bars = not are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    ds_bars = datasets.is_progress_bar_enabled()
    yield
    hf_logging.set_verbosity(hf_level)
    datasets.logging.set_verbosity(ds_level)
    if hub_bars:
        enable_progress_bars()
    if hf_bars:
        hf_logging.enable_progress_bar()
    if ds_bars:
        datasets.enable_progress_bars()


def test_quiet_driver_and_worker_keep_info_chatter_out(monkeypatch, restore_library_logging):
    for name in ("ray", "ray.tune", "ray.train"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    root, hybridir_logger = logging.getLogger(), logging.getLogger("hybridir")
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(hybridir_logger, "level", hybridir_logger.level)
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    set_verbosity(False)
    import os

    assert os.environ[VERBOSE_ENV] == "0" and os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    assert logging.getLogger("ray.tune").level == logging.WARNING
    configure_worker()
    assert not hybridir_logger.isEnabledFor(logging.INFO) and not root.isEnabledFor(logging.INFO)
    assert hybridir_logger.isEnabledFor(logging.WARNING)
    from transformers.utils import logging as hf_logging

    assert not hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    from huggingface_hub.utils import enable_progress_bars

    enable_progress_bars()
    monkeypatch.setenv(VERBOSE_ENV, "1")
    hybridir_logger.setLevel(logging.NOTSET)
    configure_worker()  # --verbose: left as it is
    assert hybridir_logger.level == logging.NOTSET and hf_logging.is_progress_bar_enabled()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_draw_on_a_terminal_only(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not bars_enabled()
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert bars_enabled()
    with progress_bar(total=3, desc="encode queries", unit="text") as bar:
        bar.update(3)
    assert "encode queries" in terminal.getvalue() and "/3" in terminal.getvalue()
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert not bars_enabled()


@pytest.mark.model
def test_encoding_shows_a_bar_on_a_terminal_and_nothing_in_a_log(monkeypatch, tiny_encoder_dir,
                                                                  restore_library_logging):
    from hybridir.config import ModelConfig
    from hybridir.evaluation.encode import encode_texts
    from hybridir.model import BiEncoder

    model = BiEncoder.from_config(ModelConfig(name=str(tiny_encoder_dir)))
    texts = ["Wie spät ist es?", "What time is it?", "Quelle heure est-il ?"] * 3
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    log_file = io.StringIO()
    monkeypatch.setattr("sys.stderr", log_file)
    plain = encode_texts(model, texts, "query", batch_size=4)
    assert log_file.getvalue() == ""
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    drawn = encode_texts(model, texts, "query", batch_size=4)
    assert "encode queries" in terminal.getvalue() and "/9" in terminal.getvalue()
    assert (plain == drawn).all()
    quiet_libraries()  # leaves the library usable


def test_worker_drops_only_the_exit_raised_inside_a_finalizer():
    """Ray's SIGTERM handler raising SystemExit inside a finalizer must not reach the console;
    any other exception in a finalizer still does. Run in a subprocess: the hook is global."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import gc
        from study.console import configure_worker

        class Dies:
            def __init__(self, exc):
                self.exc = exc
            def __del__(self):
                raise self.exc

        configure_worker()
        configure_worker()  # twice: one hook, not a chain of two
        Dies(SystemExit(1)); gc.collect()
        Dies(ValueError("a real finalizer bug")); gc.collect()
        print("alive")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "alive"
    assert "SystemExit" not in done.stderr
    assert done.stderr.count("Exception ignored") == 1 and "ValueError: a real finalizer bug" in done.stderr
