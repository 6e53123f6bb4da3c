"""Study drivers as subprocesses, for the slow end-to-end tests (e2e, interrupt, reliability).

Every driver runs in its own session (``start_new_session``), so the test can signal the
driver alone (as ``kill PID`` or the OOM killer would) or its whole process group (as Ctrl-C in
a terminal does), and can tell afterwards whether any process of that session outlived it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def driver(args: list[str], log: Path) -> subprocess.Popen:
    """``python study/run.py ARGS`` with stdout and stderr together in ``log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, str(REPO / "study" / "run.py"), *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait(process: subprocess.Popen, log: Path, timeout: float) -> int:
    """The driver's exit code; a driver still running after ``timeout`` s is killed (with its
    session) and the test fails with the end of its console."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(process.pid)
        process.wait()
        pytest.fail(f"study did not finish in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def jsonl(path: Path) -> list[dict]:
    """The complete lines of an append-only JSONL file (the line being written is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def finished(output: Path) -> list[dict]:
    """``results/trials.jsonl``: one row per finished trial."""
    return jsonl(output / "results" / "trials.jsonl")


def history(output: Path) -> list[dict]:
    """``results/history.jsonl``: every intermediate report."""
    return jsonl(output / "results" / "history.jsonl")


def trial_order(output: Path) -> list[str]:
    """Trial ids in the order their first report arrived."""
    return list(dict.fromkeys(row["trial_id"] for row in history(output)))


def _processes() -> list[tuple[int, str, list[str]]]:
    """(pid, command line, fields of /proc/PID/stat after the name) of every process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found.append((int(entry.name), cmdline, stat))
    return found


def titled(prefix: str, sid: int | None = None) -> list[int]:
    """Live processes whose title starts with ``prefix`` (Ray titles its workers
    ``ray::<actor or task>``), newest first; with ``sid``, only those of that session (a
    driver's: Ray's processes stay in the session of the driver that started them)."""
    live = [(int(stat[19]), pid) for pid, cmdline, stat in _processes()
            if cmdline.startswith(prefix) and stat[0] != "Z" and (sid is None or int(stat[3]) == sid)]
    return [pid for _, pid in sorted(live, reverse=True)]


def session(sid: int) -> list[str]:
    """The live processes of session ``sid`` (a driver's and everything it started), as
    ``PID command`` strings; zombies are left out."""
    return [f"{pid} {cmdline[:120]}" for pid, cmdline, stat in _processes()
            if int(stat[3]) == sid and stat[0] != "Z"]


def wait_session_gone(sid: int, timeout: float = 30) -> list[str]:
    """Waits until no process of session ``sid`` is alive; returns those still alive at the end."""
    deadline = time.time() + timeout
    while (left := session(sid)) and time.time() < deadline:
        time.sleep(0.5)
    return left


def kill_session(sid: int) -> None:
    """SIGKILL every process of a driver's session (a test's clean-up; never other sessions)."""
    for line in session(sid):
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until(condition, process: subprocess.Popen, log: Path, timeout: float, what: str, poll_s: float = 0.1):
    """Polls ``condition()`` until it returns something truthy (returned) while the driver runs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"the study ended (exit {process.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(poll_s)
    kill_session(process.pid)
    pytest.fail(f"no {what} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
