"""The fuzz harness (``make fuzz``, bench/fuzz.py) with tiny counts, so that it keeps working: it starts its own
embedded stack with the production limits, sends a few of each kind of hostile input and a short brute force, and
writes a results file whose every failure count is zero."""

from __future__ import annotations

import json
import os
import pathlib
import random
import subprocess

from bench.fuzz import guesses
from bench.fuzz_audit import FAILURE_KINDS

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_guesses_hold_the_right_reference_once_in_their_second_half():
    victim = {"order": "ORD-2021-000101", "serial": "FR23-00000042"}
    listed, position = guesses(victim, 1000, random.Random(3))
    assert len(listed) == 1000 and listed.count("ORD-2021-000101") == 1
    assert listed[position] == "ORD-2021-000101" and 500 <= position < 1000
    assert any(g.startswith("FR23-") for g in listed) and len(set(listed)) == 1000


def test_fuzz_with_tiny_counts_finds_nothing(tmp_path: pathlib.Path):
    out = tmp_path / "fuzz.json"
    cmd = [str(ROOT / ".venv-app/bin/python"), str(ROOT / "bench/fuzz.py"), "--model", os.environ["BOT_MODEL"],
           "--rest", "30", "--sio", "12", "--mqtt", "40", "--http-devices", "20", "--openapi-examples", "1",
           "--guesses", "40", "--xff-pool", "4", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["inputs"]["chat_rest"] >= 30 and result["inputs"]["chat_socketio"] >= 12
    assert result["inputs"]["mqtt_payloads"] + result["inputs"]["mqtt_connections_bad_credentials"] >= 40
    assert result["inputs"]["http_device_payloads"] == 20 and result["inputs"]["bruteforce_guesses"] == 40
    assert result["inputs"]["openapi_anonymous"] > 0 and result["inputs"]["openapi_staff"] > 0
    assert result["logs"]["files"] > 3 and result["logs"]["bytes"] > 10_000  # the logs were really read
    assert result["bruteforce"]["reply_kinds"].get("locked_out", 0) > 0  # the probe met the lock-out
    assert not result["chat"]["setup_failures"], result["chat"]["setup_failures"]
    found = {kind: result[kind] for kind in FAILURE_KINDS if result[kind]}
    assert not found, (found, result["examples"])
