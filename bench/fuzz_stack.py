"""A real embedded stack for the fuzz harness (bench/fuzz.py), with the production defaults of every limit.

Started by scripts/run_stack.py exactly as ``make run`` starts it (on free loopback ports, a fresh SQLite CRM with
the demo data, secrets generated into the run's own .env); only the settings that the end-to-end tests raise are
removed from the environment, so the fuzz meets the limits an operator ships with.
"""

from __future__ import annotations

import json
import os
import pathlib
import queue
import subprocess
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

from scripts.topology import GENERATED_SECRETS, STACK_OWN_VARIABLES, free_port, throwaway_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Beside the stack's own (secrets, data stores), the limits the end-to-end tests raise or an operator's shell may set:
# the fuzz runs on the defaults.
NOT_INHERITED = (*STACK_OWN_VARIABLES, "FACEBOOK_APP_SECRET", "CHAT_MAX_CHARS", "CHAT_RATE_PER_CONVERSATION",
                 "CHAT_RATE_PER_CLIENT", "CHAT_TRUSTED_PROXIES", "VERIFY_MAX_ATTEMPTS", "VERIFY_MAX_FAILURES_PER_IDENTITY",
                 "VERIFY_MAX_FAILURES_PER_CLIENT", "SIGN_IN_MAX_FAILURES", "SIGN_IN_RATE_PER_CLIENT")



@dataclass
class Stack:
    proc: subprocess.Popen[str]
    work: pathlib.Path
    rasa_url: str
    web_url: str
    mqtt_port: int
    database_url: str
    rest_token: str  # the REST channel's bearer token (throwaway_env's), which the channel requires
    output: list[str] = field(default_factory=list)  # the launcher's (supervisor's) output, growing

    @property
    def tokens_file(self) -> pathlib.Path:
        return next(self.work.rglob("device_tokens.json"))

    def secrets(self) -> dict[str, str]:
        """The stack's secrets (name → value): those generated into its .env, and its REST channel token."""
        values = dict(line.split("=", 1) for line in (self.work / ".env").read_text().splitlines()
                      if "=" in line and not line.startswith("#"))
        values["REST_CHANNEL_TOKEN"] = self.rest_token
        return {k: v.strip() for k, v in values.items() if k in GENERATED_SECRETS and v.strip()}

    def staff_token(self) -> str:
        """An admin's bearer token, signed in with ADMIN_PASSWORD like any staff client."""
        body = json.dumps({"username": "admin", "password": self.secrets()["ADMIN_PASSWORD"]}).encode()
        req = urllib.request.Request(f"{self.web_url}/api/auth/token", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return str(json.loads(resp.read())["access_token"])


def start_stack(work: pathlib.Path, model: str, timeout: float = 1200) -> Stack:
    """Starts the embedded stack; returns once it printed READY and Rasa answered a first message."""
    ports = {"rasa": free_port(), "actions": free_port(), "web": free_port(), "mqtt": free_port(), "mqtt-tls": free_port()}
    env, _ = throwaway_env({k: v for k, v in os.environ.items() if k not in NOT_INHERITED}, work, escalation=None)
    cmd = [str(ROOT / ".venv-app/bin/python"), str(ROOT / "scripts/run_stack.py"), "--model", model,
           "--env-file", str(work / ".env"), "--log-dir", str(work / "log"),
           "--ready-timeout", str(timeout),
           *[a for name, port in ports.items() for a in (f"--{name}-port", str(port))]]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stack = Stack(proc, work, f"http://127.0.0.1:{ports['rasa']}", f"http://127.0.0.1:{ports['web']}", ports["mqtt"],
                  env["DATABASE_URL"], env["REST_CHANNEL_TOKEN"])
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            stack.output.append(line)
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.time() + timeout + 60
    while time.time() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                raise SystemExit("the stack did not start:\n" + "".join(stack.output)[-3000:])
            continue
        if line.strip() == "READY":
            _warm_up(stack.rasa_url, stack.rest_token)
            return stack
    stop_stack(stack)
    logs = "".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in (work / "log").glob("*.log"))
    raise SystemExit("timed out starting the stack:\n" + "".join(stack.output)[-3000:] + logs)


def _warm_up(rasa_url: str, token: str) -> None:
    """The first turn builds TensorFlow graphs (tens of seconds): taken before anything is timed. ``token``: the
    stack's REST_CHANNEL_TOKEN, which its REST channel requires."""
    req = urllib.request.Request(f"{rasa_url}/webhooks/rest/webhook",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                                 data=json.dumps({"sender": f"warm-up-{uuid.uuid4().hex[:8]}", "message": "hello"}).encode())
    with urllib.request.urlopen(req, timeout=300) as resp:
        resp.read()


def stop_stack(stack: Stack) -> None:
    stack.proc.terminate()  # SIGTERM: the launcher stops its children in order
    try:
        stack.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stack.proc.kill()
        stack.proc.wait()
