"""The launcher's supervisor (scripts/supervisor.py) on real child processes: a killed child comes back
with a log line naming the signal, a crash loop is given up, a child that lived long enough is not counted
as a crash loop, and stopping ends every child."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import time

import pytest

from scripts.supervisor import GaveUp, Supervisor, describe_exit


def run_until(sup: Supervisor, condition, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sup.check()
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def make(tmp_path: pathlib.Path, code: str, **kwargs) -> tuple[Supervisor, list[str]]:  # type: ignore[no-untyped-def]
    said: list[str] = []
    sup = Supervisor(tmp_path, state_file=tmp_path / "children.json", say=said.append, **kwargs)
    sup.add("sleeper", [sys.executable, "-c", code], dict(os.environ), tmp_path / "log" / "sleeper.log")
    return sup, said


def test_a_child_killed_with_sigkill_is_restarted_and_the_restart_is_logged(tmp_path: pathlib.Path):
    sup, said = make(tmp_path, "import time; time.sleep(60)", backoff_first=0.05)
    sup.start_all()
    try:
        first = json.loads((tmp_path / "children.json").read_text())["sleeper"]
        os.kill(first, signal.SIGKILL)
        run_until(sup, lambda: sup.pids().get("sleeper") not in (None, first))
        second = json.loads((tmp_path / "children.json").read_text())["sleeper"]
        assert second != first and sup.children["sleeper"].proc.poll() is None  # type: ignore[union-attr]
        assert any(f"sleeper (pid {first}) died with signal 9 (SIGKILL)" in line and "restarting in" in line for line in said)
        assert any(f"sleeper restarted (pid {second}, restart 1)" in line for line in said)
    finally:
        sup.stop_all(timeout=5)
    assert sup.children["sleeper"].proc.poll() is not None  # type: ignore[union-attr]


def test_a_child_that_keeps_crashing_at_start_is_given_up_after_growing_back_off(tmp_path: pathlib.Path):
    sup, said = make(tmp_path, "import sys; sys.exit(3)", backoff_first=0.1, max_fast_crashes=3)
    sup.start_all()
    with pytest.raises(GaveUp, match="exit code 3"):
        run_until(sup, lambda: False, timeout=20)
    delays = [float(line.split("restarting in ")[1].split(" s")[0]) for line in said if "restarting in" in line]
    assert delays == [0.1, 0.2, 0.4]  # doubled after each fast crash
    assert "giving up" in said[-1] and "exit code 3" in said[-1]
    sup.stop_all(timeout=5)


def test_a_child_that_ran_past_the_fast_crash_window_starts_again_with_the_shortest_back_off(tmp_path: pathlib.Path):
    sup, said = make(tmp_path, "import time, sys; time.sleep(0.4); sys.exit(1)", backoff_first=0.1,
                     max_fast_crashes=2, fast_crash_seconds=0.2)
    sup.start_all()
    try:
        run_until(sup, lambda: sup.children["sleeper"].restarts >= 4, timeout=20)  # never GaveUp
        delays = {line.split("restarting in ")[1].split(" s")[0] for line in said if "restarting in" in line}
        assert delays == {"0.1"}
    finally:
        sup.stop_all(timeout=5)


def test_describe_exit():
    assert describe_exit(-9) == "signal 9 (SIGKILL)"
    assert describe_exit(-15) == "signal 15 (SIGTERM)"
    assert describe_exit(2) == "exit code 2"
