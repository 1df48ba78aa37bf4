"""Keeps the stack's processes running: starts each child in its own process group, restarts one that
dies (with exponential back-off), and gives up only when a child keeps crashing right after its start.

Used by scripts/run_stack.py (``make run``, ``make run-production`` and the end-to-end tests). Every
start and restart is written to ``<state dir>/children.json`` (name -> pid), so that operators and the
chaos tests can find a child's current process.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# A child that dies sooner than this after its start "crashed fast"; one that ran longer had a life of
# its own (a kill -9, an OOM kill, a lost database) and starts again with the shortest back-off.
FAST_CRASH_SECONDS = 60.0
MAX_FAST_CRASHES = 5  # in a row: then the fault is in the configuration or the code, not transient
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0


class GaveUp(RuntimeError):
    """A child crashed ``MAX_FAST_CRASHES`` times in a row, each time within ``FAST_CRASH_SECONDS``."""


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``signal 9 (SIGKILL)`` for a Popen returncode."""
    if returncode < 0:
        try:
            return f"signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: pathlib.Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    fast_crashes: int = 0
    restarts: int = 0
    restart_at: float | None = None  # set while the child is dead and waiting for its back-off
    history: list[str] = field(default_factory=list)


class Supervisor:
    """Starts, watches and restarts children. Not thread-safe: one loop calls ``check()``."""

    def __init__(self, cwd: pathlib.Path, state_file: pathlib.Path | None = None,
                 say: Callable[[str], None] = lambda line: print(line, flush=True),
                 fast_crash_seconds: float = FAST_CRASH_SECONDS, max_fast_crashes: int = MAX_FAST_CRASHES,
                 backoff_first: float = BACKOFF_FIRST_SECONDS, backoff_max: float = BACKOFF_MAX_SECONDS) -> None:
        self.cwd = cwd
        self.state_file = state_file
        self.say = say
        self.fast_crash_seconds = fast_crash_seconds
        self.max_fast_crashes = max_fast_crashes
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.children: dict[str, Child] = {}

    def add(self, name: str, cmd: list[str], env: dict[str, str], log_path: pathlib.Path) -> Child:
        child = Child(name, cmd, env, log_path)
        self.children[name] = child
        return child

    def start_all(self) -> None:
        for child in self.children.values():
            self._start(child)
        self._write_state()

    def _start(self, child: Child) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(child.log_path, "ab") as log:
            # Own process group: Ctrl-C reaches only the supervisor, which stops the children itself; and a
            # dead child's own subprocesses can be cleaned up with its group.
            child.proc = subprocess.Popen(child.cmd, cwd=self.cwd, env=child.env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        state = {name: c.proc.pid for name, c in self.children.items() if c.proc is not None and c.restart_at is None}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)  # readers never see a half-written file

    def pids(self) -> dict[str, int]:
        return {name: c.proc.pid for name, c in self.children.items() if c.proc is not None and c.restart_at is None}

    def check(self) -> None:
        """Notices dead children, schedules their restart, restarts those whose back-off is over.

        Raises GaveUp when a child has crashed fast ``max_fast_crashes`` times in a row.
        """
        now = time.monotonic()
        changed = False
        for child in self.children.values():
            if child.restart_at is None and child.proc is not None and child.proc.poll() is not None:
                self._on_death(child, now)
                changed = True
            if child.restart_at is not None and now >= child.restart_at:
                self._start(child)
                child.restarts += 1
                self.say(f"supervisor: {child.name} restarted (pid {child.proc.pid}, restart {child.restarts})")  # type: ignore[union-attr]
                changed = True
        if changed:
            self._write_state()

    def _on_death(self, child: Child, now: float) -> None:
        assert child.proc is not None
        how = describe_exit(child.proc.returncode)
        _kill_group(child.proc.pid, signal.SIGKILL)  # what the dead child left behind in its group
        lived = now - child.started_at
        child.fast_crashes = child.fast_crashes + 1 if lived < self.fast_crash_seconds else 1
        child.history.append(how)
        if child.fast_crashes > self.max_fast_crashes:
            self.say(f"supervisor: {child.name} (pid {child.proc.pid}) died with {how} after {lived:.1f} s, "
                     f"its {child.fast_crashes}th crash in a row within {self.fast_crash_seconds:.0f} s of its start; "
                     f"giving up (see {child.log_path})")
            raise GaveUp(f"{child.name} keeps crashing: {', '.join(child.history[-self.max_fast_crashes:])}")
        delay = min(self.backoff_first * 2 ** (child.fast_crashes - 1), self.backoff_max)
        child.restart_at = now + delay
        self.say(f"supervisor: {child.name} (pid {child.proc.pid}) died with {how} after {lived:.1f} s; "
                 f"restarting in {delay:.1f} s (see {child.log_path})")

    def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM to every child's group, SIGKILL to those still running after ``timeout`` seconds."""
        running = [c.proc for c in self.children.values() if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            _kill_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid, signal.SIGKILL)
                proc.wait()
        for child in self.children.values():
            child.restart_at = None


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
