"""HAProxy as `make run-production` configures it (scripts/topology.py haproxy_config), run for real with the
certificate of device_hooks.pki: device ingestion over HTTPS reaches the web backend, the plain frontend refuses
it with 403 (in any spelling the web service would route) and still serves everything else, and a client that
trusts another CA is refused. The web backend here is a recording HTTP server standing in for the web replicas
(the whole production stack does the same in tests/e2e/test_device_flows.py)."""

from __future__ import annotations

import http.server
import json
import pathlib
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from device_hooks.pki import PkiFiles, ensure_pki
from scripts.topology import free_port, haproxy_config
from tests.deploy.test_deploy_files import tool


class Recorder(http.server.ThreadingHTTPServer):
    paths: list[str]


class Handler(http.server.BaseHTTPRequestHandler):
    server: Recorder

    def _answer(self, status: int) -> None:
        self.server.paths.append(self.path)
        body = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(202)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Proxy:
    plain: str
    tls: str
    pki: PkiFiles
    backend: Recorder


@pytest.fixture
def proxy(tmp_path: pathlib.Path) -> Iterator[Proxy]:
    backend = Recorder(("127.0.0.1", 0), Handler)
    backend.paths = []
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    web = backend.server_address[1]
    pki = ensure_pki(tmp_path / "pki").files
    web_port, tls_port = free_port(), free_port()
    ports = {"rasa-1": free_port(), "actions-1": free_port(), "web-1": web}
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(free_port(), free_port(), web_port, ports, web_tls=(tls_port, str(pki.server_pem))))
    proc = subprocess.Popen([tool("haproxy"), "-W", "-db", "-f", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        found = Proxy(f"http://127.0.0.1:{web_port}", f"https://127.0.0.1:{tls_port}", pki, backend)
        deadline = time.time() + 20
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        while True:  # until HAProxy has seen the backend healthy on both frontends
            try:
                if all(urllib.request.urlopen(f"{url}/health", timeout=2, context=context).status == 200
                       for url in (found.plain, found.tls)):
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("haproxy did not serve: " + proc.communicate()[0].decode()[-2000:])
            time.sleep(0.2)
        backend.paths.clear()
        yield found
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        backend.shutdown()


def post(url: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=b'{"ts": 1, "seq": 1, "online": true}', method="POST",
                                 headers={"Authorization": "Bearer device-token", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_device_ingest_goes_over_https_and_the_plain_frontend_refuses_it(proxy: Proxy):
    context = ssl.create_default_context(cafile=str(proxy.pki.ca_cert))
    assert post(f"{proxy.tls}/api/ingest/devices/FR50-1/status", context)[0] == 202
    assert proxy.backend.paths == ["/api/ingest/devices/FR50-1/status"]
    for path in ("/api/ingest/devices/FR50-1/status", "/api/ingest/devices/FR50-1/telemetry?x=1",
                 "/api/%69ngest/devices/FR50-1/status", "/api/ingest/devices%2FFR50-1%2Ffault"):
        status, body = post(f"{proxy.plain}{path}")
        assert status == 403, path
        assert json.loads(body) == {"reason": "tls_required", "message": "devices must post over HTTPS"}
    assert proxy.backend.paths == ["/api/ingest/devices/FR50-1/status"]  # none of them reached the web service
    # Everything else still goes through the plain frontend (staff API, chat pages, health).
    with urllib.request.urlopen(f"{proxy.plain}/api/devices/FR50-1", timeout=10) as resp:
        assert resp.status == 200
    assert post(f"{proxy.plain}/api/tickets")[0] == 202


def test_a_client_that_trusts_another_ca_or_none_is_refused(proxy: Proxy, tmp_path: pathlib.Path):
    other = ssl.create_default_context(cafile=str(ensure_pki(tmp_path / "other").files.ca_cert))
    for context in (other, ssl.create_default_context()):
        with pytest.raises(urllib.error.URLError, match="certificate verify failed"):
            post(f"{proxy.tls}/api/ingest/devices/FR50-1/status", context)
    assert proxy.backend.paths == []
