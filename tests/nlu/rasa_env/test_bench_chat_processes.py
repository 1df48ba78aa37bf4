"""The chat benchmark finds a stack's processes by role from the supervisor's children.json, two of a role on the
production topology, so it can report the cores each role used."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))
spec = importlib.util.spec_from_file_location("bench_chat", ROOT / "bench" / "bench_chat.py")
bench_chat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_chat)

IDLE = "import sys; sys.stdin.read()"  # a child that lives until its stdin closes


def test_children_are_grouped_by_role_and_a_balancers_worker_is_counted(tmp_path):
    # A stand-in supervisor starting children named as run_stack.py names them: two Rasa servers, two action
    # servers, a web replica, a process of no reported role, and a "haproxy" that has a worker of its own.
    supervisor = subprocess.Popen([sys.executable, "-c", f"""
import json, subprocess, sys
idle = [sys.executable, "-c", {IDLE!r}]
names = ["rasa-1", "rasa-2", "actions-1", "actions-2", "web", "simulator"]
kids = [subprocess.Popen(idle, stdin=subprocess.PIPE) for _ in names]
kids.append(subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
    "w = subprocess.Popen([sys.executable, '-c', {IDLE!r}], stdin=subprocess.PIPE); print(w.pid, flush=True); "
    "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
names.append("haproxy")
print(kids[-1].stdout.readline().strip(), flush=True)  # the balancer's worker, started
print(json.dumps(dict(zip(names, (k.pid for k in kids)))), flush=True)  # what run_stack.py writes
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        worker = int(supervisor.stdout.readline())
        children = tmp_path / "children.json"
        children.write_text(supervisor.stdout.readline())
        found = bench_chat.stack_processes(children)
        assert {role: len(pids) for role, pids in found.items()} == {"rasa": 2, "actions": 2, "web": 1, "balancer": 2}
        assert worker in found["balancer"]
        assert all(bench_chat.cpu_seconds(pid) >= 0 for pids in found.values() for pid in pids)
    finally:
        supervisor.stdin.close()  # every process here ends when its stdin closes: the whole tree goes
        supervisor.wait(timeout=30)
