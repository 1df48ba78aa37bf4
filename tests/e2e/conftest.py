"""The whole system started as real processes by the same launcher as `make run`, on free ports, in both
topologies: ``embedded`` (make run: SQLite, one of each) and ``production`` (make run-production:
PostgreSQL, Redis, HAProxy, two of each). Every test that uses ``stack`` runs against both."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import re
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from scripts.topology import free_port, throwaway_env

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def rest_headers(env: dict[str, str]) -> dict[str, str]:
    """Headers of a REST channel POST as a trusted back end sends it: the bearer token, which the REST channel
    requires in both topologies (throwaway_env gives each test stack one of its own)."""
    token = env.get("REST_CHANNEL_TOKEN", "")
    return {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}


def _warm_up(rasa_url: str, env: dict[str, str]) -> None:
    req = urllib.request.Request(f"{rasa_url}/webhooks/rest/webhook", headers=rest_headers(env),
                                 data=json.dumps({"sender": f"warm-up-{uuid.uuid4().hex[:8]}", "message": "hello"}).encode())
    with urllib.request.urlopen(req, timeout=300) as resp:
        resp.read()



@dataclass
class Stack:
    rasa_url: str
    web_url: str
    actions_url: str
    env: dict[str, str]
    database_url: str
    mqtt_port: int
    work: pathlib.Path
    topology: str = "embedded"
    rasa_instances: tuple[str, ...] = ()  # each Rasa server's own address (rasa_url is the load balancer's)
    output: list[str] | None = None  # the launcher's (supervisor's) output, growing while the stack runs
    mqtt_tls_port: int = 0  # the broker's TLS listener for devices (both topologies)
    ca_file: str = ""  # the devices' CA (device_hooks.pki), which signed the broker's and HAProxy's certificate
    web_tls_url: str = ""  # production: HAProxy's HTTPS frontend, the only one that takes device ingestion

    @property
    def devices_tls_only(self) -> bool:
        """Production: devices reach the stack over TLS only (MQTT and HTTP)."""
        return self.topology == "production"

    def device_mqtt(self) -> tuple[int, Any]:
        """(port, device_hooks.settings.MqttTls or None) of the devices' MQTT listener: TLS in production (the
        only one there), plain in the embedded topology (the development one)."""
        from device_hooks.settings import MqttTls

        return (self.mqtt_tls_port, MqttTls(self.ca_file)) if self.devices_tls_only else (self.mqtt_port, None)

    def simulator_args(self) -> list[str]:
        """``device_hooks.simulator`` options that reach the devices' listener of this topology."""
        if self.devices_tls_only:
            return ["--port", str(self.mqtt_tls_port), "--tls", "--ca-file", self.ca_file]
        return ["--port", str(self.mqtt_port)]

    def device_web(self) -> tuple[str, ssl.SSLContext | None]:
        """(base URL, SSL context) where devices post over HTTP: HTTPS with the CA in production, else web_url."""
        if self.devices_tls_only:
            return self.web_tls_url, ssl.create_default_context(cafile=self.ca_file)
        return self.web_url, None

    def rasa_request(self, path: str, *, base: str | None = None, body: Any = None) -> urllib.request.Request:
        """A request to Rasa's HTTP API as the services send it: a short-lived JWT in the Authorization
        header (never a token in the URL). ``base``: one Rasa server's own address instead of the stack's."""
        from web_service.rasa_client import rasa_authorization

        return urllib.request.Request(f"{base or self.rasa_url}{path}", method="POST" if body is not None else "GET",
                                      data=json.dumps(body).encode() if body is not None else None,
                                      headers={"Content-Type": "application/json",
                                               **rasa_authorization(self.env["RASA_TOKEN"])})

    def pids(self) -> dict[str, int]:
        """The supervisor's children and their current process ids."""
        return {k: int(v) for k, v in json.loads((self.work / "children.json").read_text()).items()}

    def instance_url(self, name: str) -> str:
        """A server's own address: ``rasa``/``web``/``actions`` (embedded) or ``rasa-1`` etc. (production)."""
        kind = name.split("-")[0]
        if self.topology == "embedded":
            return {"rasa": self.rasa_url, "web": self.web_url, "actions": self.actions_url}[kind]
        cfg = (self.work / "haproxy.cfg").read_text()
        match = re.search(rf"server {re.escape(name)} [\d.]+:(\d+)", cfg)
        assert match, f"{name} is not in haproxy.cfg"
        return f"http://127.0.0.1:{match.group(1)}"

    def kill9(self, name: str) -> int:
        """SIGKILL to a child of the supervisor (no clean-up, as an OOM kill or a crash); returns its pid."""
        pid = self.pids()[name]
        os.kill(pid, signal.SIGKILL)
        # kill() returns before the kernel has torn the process down (its listening socket may still take a
        # connection for an instant); what follows the kill starts once it is dead (or a zombie).
        wait_until(lambda: not _alive(pid), 10, f"pid {pid} is gone")
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 240) -> int:
        """Waits until the supervisor logged the death and restart of ``name`` and runs a new process."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid = self.pids().get(name)
            said = "".join(self.output or [])
            if pid and pid != old_pid and f"{name} (pid {old_pid}) died with signal 9 (SIGKILL)" in said \
                    and f"{name} restarted (pid {pid}" in said:
                return pid
            time.sleep(0.2)
        raise AssertionError(f"{name} was not restarted within {timeout} s:\n" + "".join((self.output or [])[-10:]))


    def say(self, sender: str, message: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Sends a message through Rasa's REST channel, as a customer's client would; waits ``timeout`` s."""
        req = urllib.request.Request(
            f"{self.rasa_url}/webhooks/rest/webhook",
            data=json.dumps({"sender": sender, "message": message}).encode(),
            headers=rest_headers(self.env),
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def api(self, method: str, path: str, token: str | None = None, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(f"{self.web_url}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {}),
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls ``check`` until it is true; fails after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError):
            pass  # refused, reset, bad gateway while the server comes back
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting until {what}")


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def http_ok(url: str, timeout: float = 5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


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


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, for one test (browser_kit.launch: the flags this machine needs)."""
    from playwright.sync_api import sync_playwright

    from tests.e2e.browser_kit import launch  # browser_kit imports this module

    with sync_playwright() as pw:
        b = launch(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def fake_graph() -> Iterator[FakeGraphApi]:
    graph = FakeGraphApi()
    yield graph
    graph.server.shutdown()


TOPOLOGIES = ["embedded", "production"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "production_only: runs only against the production topology's stack")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``production_only`` are not collected for the embedded stack (rather than skipped
    there, which would start a stack only to skip)."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        embedded = callspec is not None and callspec.params.get("stack") == "embedded"
        (drop if embedded and item.get_closest_marker("production_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", params=TOPOLOGIES)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake_graph: FakeGraphApi) -> Iterator[Stack]:
    model = os.environ.get("BOT_MODEL")
    if not model:
        pytest.fail("BOT_MODEL is not set: run the suite through `make test`")
    topology = request.param
    work = tmp_path_factory.mktemp(f"stack-{topology}")
    ports = {"rasa": free_port(), "actions": free_port(), "web": free_port(), "mqtt": free_port(),
             "mqtt_tls": free_port(), "web_tls": free_port()}
    postgres_url = ""
    if topology == "production":
        from tests.conftest import PG_ADMIN_URL, postgres_available

        if not postgres_available():
            pytest.fail("the production topology needs PostgreSQL on 127.0.0.1:5432")
        postgres_url = PG_ADMIN_URL
    # Databases, a Redis key prefix and socket.io channel of this test session's own; the team staffed around the
    # clock, whatever time the tests run; the launcher generates the secrets into the test's own .env.
    env, databases = throwaway_env(os.environ, work, topology, name="e2e", postgres_url=postgres_url, redis_db=4)
    env.update({
        # Messenger on, its Graph API calls to the local stand-in for Facebook's servers.
        "FACEBOOK_APP_SECRET": FB_APP_SECRET,
        "FACEBOOK_VERIFY_TOKEN": "e2e-verify-token",
        "FACEBOOK_PAGE_ACCESS_TOKEN": "e2e-page-token",
        "FACEBOOK_GRAPH_URL": fake_graph.url,
        # Every test customer shares 127.0.0.1: the per-address chat limit would count the whole suite.
        "CHAT_RATE_PER_CLIENT": "100000/minute",
        "VERIFY_MAX_FAILURES_PER_CLIENT": "100000",
        "ANONYMOUS_ESCALATIONS_PER_CLIENT": "100000/hour",
        # A confirmed chat erasure starts 5 s after the turn rather than a minute: long enough for Rasa to have
        # stored the turn (which the test checks is erased too), and the suite does not wait a minute per topology.
        "CHAT_ERASURE_DELAY_SECONDS": "5",
    })
    env_file = work / ".env"
    cmd = [str(ROOT / ".venv-app" / "bin" / "python"), str(ROOT / "scripts" / "run_stack.py"), "--topology", topology,
           "--rasa-port", str(ports["rasa"]), "--actions-port", str(ports["actions"]), "--web-port", str(ports["web"]),
           "--mqtt-port", str(ports["mqtt"]), "--mqtt-tls-port", str(ports["mqtt_tls"]),
           "--web-tls-port", str(ports["web_tls"]), "--pki-dir", str(work / "pki"),
           "--model", model, "--env-file", str(env_file), "--log-dir", str(work / "log")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # A reader thread, because select() on a buffered pipe misses lines already read into the buffer; it
    # keeps reading after READY, so tests can see the supervisor's restarts.
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            output.append(line)
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    # The launcher's own wait for readiness (STACK_START_SECONDS, 420 by default; longer on a busy machine where
    # several stacks load their models at once) plus the migrations, demo data and device provisioning before it.
    deadline = time.time() + float(os.environ.get("STACK_START_SECONDS") or 420) + 120
    ready = False
    while time.time() < deadline and not ready:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        ready = line.strip() == "READY"
    try:
        if not ready:
            # No kill -9 here: the launcher would leave its children running. The ``finally`` below stops it
            # with SIGTERM, which stops its children in order.
            logs = "".join(p.read_text()[-3000:] for p in (work / "log").glob("*.log"))
            pytest.fail("the stack did not start:\n" + "".join(output)[-3000:] + logs)
        secrets = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line and not line.startswith("#"))
        env.update(secrets)
        env.update({"MQTT_HOST": "127.0.0.1", "MQTT_PORT": str(ports["mqtt"])})  # for the simulator run by tests
        instances = next((line.split(None, 2)[2].strip().split(", ") for line in output
                          if line.strip().startswith("Rasa servers")), [f"http://127.0.0.1:{ports['rasa']}"])
        stack = Stack(rasa_url=f"http://127.0.0.1:{ports['rasa']}", web_url=f"http://127.0.0.1:{ports['web']}",
                      actions_url=f"http://127.0.0.1:{ports['actions']}", env=env, database_url=env["DATABASE_URL"],
                      mqtt_port=ports["mqtt"], work=work, topology=topology, rasa_instances=tuple(instances),
                      output=output, mqtt_tls_port=ports["mqtt_tls"], ca_file=str(work / "pki" / "ca.crt"),
                      web_tls_url=f"https://127.0.0.1:{ports['web_tls']}" if topology == "production" else "")
        # Each Rasa server's first turn builds TensorFlow graphs and warms the action server (tens of seconds on
        # a busy machine): taken here, once, so that no test's first reply waits for it.
        for url in instances:
            _warm_up(url, env)
        yield stack
    finally:
        proc.terminate()  # SIGTERM: the launcher stops its children in order
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
        if databases:
            from crm_store.db import drop_databases
            from tests.conftest import PG_ADMIN_URL

            drop_databases(PG_ADMIN_URL, databases)


# --- diagnostics: a failing end-to-end test carries what the stack's processes logged while it ran ---------
_LOG_OFFSETS = pytest.StashKey[dict[pathlib.Path, int]]()


@pytest.fixture(autouse=True)
def _mark_stack_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    if "stack" in request.fixturenames:
        work: pathlib.Path = request.getfixturevalue("stack").work
        request.node.stash[_LOG_OFFSETS] = {p: p.stat().st_size for p in (work / "log").glob("*.log")}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    offsets = item.stash.get(_LOG_OFFSETS, None)
    if report.when != "call" or not report.failed or offsets is None:
        return
    for path, start in offsets.items():
        try:
            with path.open("rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
        except OSError:
            continue
        if text.strip():
            report.sections.append((f"stack log {path.name} (during the test, last 4,000 characters)", text[-4000:]))
