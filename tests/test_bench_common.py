"""The benchmarks' shared helpers (bench/_common.py): tables, medians, timers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _common import fmt, machine_info, median, print_table, timer  # noqa: E402


def test_print_table_is_markdown_with_one_row_per_entry(capsys):
    text = print_table("t", ["a", "b"], [[1, 0.5], ["x", 12345.0]])
    lines = text.strip().splitlines()
    assert lines[0] == "### t"
    assert lines[2] == "| a | b |"
    assert lines[3] == "|---|---|"
    assert lines[4:] == ["| 1 | 0.500 |", "| x | 1.23e+04 |"]
    assert capsys.readouterr().out.startswith("### t")


@pytest.mark.parametrize("values, expected", [([3.0, 1.0, 2.0], 2.0), ([4.0, 1.0, 2.0, 3.0], 2.5)])
def test_median(values, expected):
    assert median(values) == expected


def test_fmt_keeps_small_numbers_readable():
    assert fmt(0.0012) == "0.0012"
    assert fmt(1.23456) == "1.235"
    assert fmt("text") == "text"


def test_timer_measures_wall_and_cpu_separately():
    wall, cpu = [], []
    with timer(torch.device("cpu"), wall, cpu):
        time.sleep(0.05)  # waiting costs wall time, almost no CPU time
    assert wall[0] >= 0.05
    assert cpu[0] < 0.04


def test_machine_info_names_the_machine():
    info = machine_info(threads=2)
    assert info["torch threads"] == "2"
    assert info["torch"] == torch.__version__
    assert int(info["cores"]) >= 1
