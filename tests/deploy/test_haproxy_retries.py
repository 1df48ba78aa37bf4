"""The production load balancer's retries, with the real HAProxy and the configuration make run-production writes.

One web replica is "dying": it accepts a connection, reads the request and closes it unanswered, as a replica
killed with the request in its accept queue does. The other answers. A console reply (which carries an
Idempotency-Key) and a read must reach the live replica; a send without a key must not be repeated.
"""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.error
import urllib.request
import uuid

import pytest

from scripts.topology import free_port, haproxy_config
from tests.deploy.test_deploy_files import running_haproxy



class Live(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path != "/health":
            Live.seen.append((self.command, self.headers.get("Idempotency-Key")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class Dying(Live):
    """Healthy to the checks (so it stays in rotation), but every other request is read and dropped."""

    def _answer(self) -> None:
        if self.path == "/health":
            return super()._answer()
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = _answer


@pytest.fixture
def balancer(tmp_path):
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for handler in (Dying, Live)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    web_port = free_port()
    ports = {"rasa-1": free_port(), "rasa-2": free_port(), "actions-1": free_port(), "actions-2": free_port(),
             "web-1": servers[0].server_address[1], "web-2": servers[1].server_address[1]}
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(free_port(), free_port(), web_port, ports))
    with running_haproxy(cfg, web_port):
        Live.seen.clear()
        yield f"http://127.0.0.1:{web_port}"
    for server in servers:
        server.shutdown()


def send(url: str, method: str, key: str | None) -> int:
    req = urllib.request.Request(f"{url}/api/handoffs/1/messages", method=method,
                                 data=b'{"body": "hi"}' if method == "POST" else None,
                                 headers={"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_keyed_sends_and_reads_go_to_the_live_replica_and_unkeyed_sends_are_not_repeated(balancer):
    keys = [uuid.uuid4().hex for _ in range(8)]
    assert [send(balancer, "POST", key) for key in keys] == [200] * 8
    assert [send(balancer, "GET", None) for _ in range(8)] == [200] * 8
    # Each keyed send reached the live replica exactly once (round robin put about half on the dying one first).
    assert sorted(k for m, k in Live.seen if m == "POST") == sorted(keys)
    Live.seen.clear()
    unkeyed = [send(balancer, "POST", None) for _ in range(8)]
    assert set(unkeyed) == {200, 502} and len(Live.seen) == unkeyed.count(200), unkeyed
