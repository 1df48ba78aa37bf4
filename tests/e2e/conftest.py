"""The whole system started as real processes by the same launcher as `make run`, on free ports."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    rasa_url: str
    web_url: str
    actions_url: str
    env: dict[str, str]
    database_url: str
    mqtt_port: int
    work: pathlib.Path

    def say(self, sender: str, message: str) -> list[dict[str, Any]]:
        """Sends a message through Rasa's REST channel, as a customer's client would."""
        req = urllib.request.Request(
            f"{self.rasa_url}/webhooks/rest/webhook",
            data=json.dumps({"sender": sender, "message": message}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def api(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        req = urllib.request.Request(f"{self.web_url}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")


class FakeGraphApi:
    """Stands in for Facebook's Graph API, the only thing these tests cannot reach: records what Rasa sends."""

    def __init__(self) -> None:
        import http.server

        self.calls: list[dict[str, Any]] = []
        calls = self.calls

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                calls.append({"path": self.path, "body": json.loads(body or b"{}")})
                payload = json.dumps({"recipient_id": "x", "message_id": "mid.1"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts_to(self, recipient: str) -> list[str]:
        """The texts sent to a Messenger user (plain messages and button templates)."""
        out = []
        for call in self.calls:
            body = call["body"]
            if (body.get("recipient") or {}).get("id") != recipient or "message" not in body:
                continue
            message = body["message"]
            text = message.get("text") or ((message.get("attachment") or {}).get("payload") or {}).get("text")
            if text:
                out.append(text)
        return out


FB_APP_SECRET = "e2e-app-secret-0123456789abcdef"


@pytest.fixture(scope="session")
def fake_graph() -> Iterator[FakeGraphApi]:
    graph = FakeGraphApi()
    yield graph
    graph.server.shutdown()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, fake_graph: FakeGraphApi) -> Iterator[Stack]:
    model = os.environ.get("BOT_MODEL")
    if not model:
        pytest.fail("BOT_MODEL is not set: run the suite through `make test`")
    work = tmp_path_factory.mktemp("stack")
    ports = {"rasa": free_port(), "actions": free_port(), "web": free_port(), "mqtt": free_port()}
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": f"sqlite:///{work}/crm.db",
        "TRACKER_DIALECT": "sqlite",
        "TRACKER_DB": str(work / "tracker.db"),
        # Messenger on, its Graph API calls to the local stand-in for Facebook's servers.
        "FACEBOOK_APP_SECRET": FB_APP_SECRET,
        "FACEBOOK_VERIFY_TOKEN": "e2e-verify-token",
        "FACEBOOK_PAGE_ACCESS_TOKEN": "e2e-page-token",
        "FACEBOOK_GRAPH_URL": fake_graph.url,
        # The team is staffed around the clock here, whatever time the tests run.
        "ESCALATION_CONFIG": str(work / "escalation.yml"),
        # Every test customer shares 127.0.0.1: the per-address chat limit would count the whole suite.
        "CHAT_RATE_PER_CLIENT": "100000/minute",
        "VERIFY_MAX_FAILURES_PER_CLIENT": "100000",
    })
    (work / "escalation.yml").write_text("staffed_hours:\n  always: true\n")
    for key in ("SECRET_KEY", "RASA_TOKEN", "ACTION_SERVER_TOKEN", "ADMIN_PASSWORD", "MQTT_WORKER_PASSWORD",
                "MQTT_BRIDGE_PASSWORD", "MQTT_HOST", "MQTT_PORT"):
        env.pop(key, None)  # the launcher generates them into the test's own .env
    env_file = work / ".env"
    cmd = [str(ROOT / ".venv-app" / "bin" / "python"), str(ROOT / "scripts" / "run_stack.py"),
           "--rasa-port", str(ports["rasa"]), "--actions-port", str(ports["actions"]), "--web-port", str(ports["web"]),
           "--mqtt-port", str(ports["mqtt"]),
           "--model", model, "--env-file", str(env_file), "--log-dir", str(work / "log")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # A reader thread, because select() on a buffered pipe misses lines already read into the buffer.
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    output: list[str] = []
    deadline = time.time() + 420
    ready = False
    while time.time() < deadline and not ready:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        output.append(line)
        ready = line.strip() == "READY"
    if not ready:
        proc.kill()
        logs = "".join(p.read_text()[-3000:] for p in (work / "log").glob("*.log"))
        pytest.fail("the stack did not start:\n" + "".join(output)[-3000:] + logs)
    secrets = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line and not line.startswith("#"))
    env.update(secrets)
    env.update({"MQTT_HOST": "127.0.0.1", "MQTT_PORT": str(ports["mqtt"])})  # for the simulator run by tests
    try:
        yield Stack(rasa_url=f"http://127.0.0.1:{ports['rasa']}", web_url=f"http://127.0.0.1:{ports['web']}",
                    actions_url=f"http://127.0.0.1:{ports['actions']}", env=env, database_url=env["DATABASE_URL"],
                    mqtt_port=ports["mqtt"], work=work)
    finally:
        proc.terminate()  # SIGTERM: the launcher stops its children in order
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
