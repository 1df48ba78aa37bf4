"""Real processes for tests on loopback: the web service under uvicorn, the action server, a mosquitto of
its own, and a SQLite write lock held from another connection. Each starts on a free port, is waited for
by polling with a deadline, and is stopped (terminate, then kill) when its block ends."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from scripts.topology import free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent



def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: pathlib.Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # polling interval of a wait with a deadline
    raise RuntimeError(f"{url} did not come up in {timeout:g} s:\n{log.read_text()[-3000:]}")


def _env(overrides: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "MQTT_", "RASA_", "REDIS_"))}
    return {**env, "PYTHONPATH": str(ROOT), "RASA_TELEMETRY_ENABLED": "false", **overrides}


@contextmanager
def web_service(env: dict[str, str], log_dir: pathlib.Path) -> Iterator[str]:
    """``uvicorn --factory web_service.main:create_app``, one process, one event loop like production; yields its base URL."""
    port = free_port()
    log = log_dir / f"web-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "web_service.main:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--ws", "none", "--log-level", "warning"],  # as run_stack starts it
            cwd=log_dir, env=_env({"HANDOFF_SWEEP_SECONDS": "0", **env}), stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@contextmanager
def action_server(env: dict[str, str], log_dir: pathlib.Path) -> Iterator[str]:
    """``python -m actions`` (rasa-sdk's Sanic server); yields its base URL."""
    port = free_port()
    log = log_dir / f"actions-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "actions"], cwd=ROOT,
            env=_env({"ACTION_SERVER_HOST": "127.0.0.1", "ACTION_SERVER_PORT": str(port), **env}),
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@contextmanager
def mosquitto(work: pathlib.Path) -> Iterator[int]:
    """A broker of its own (anonymous, loopback only); yields its port."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = work / f"mosquitto-{port}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.1)  # polling interval of a wait with a deadline
        yield port
    finally:
        _stop(proc)


@contextmanager
def sqlite_write_lock(path: pathlib.Path | str) -> Iterator[sqlite3.Connection]:
    """Holds the database's write lock (``BEGIN IMMEDIATE``) from a connection of its own until the block ends."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung dependency)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])
