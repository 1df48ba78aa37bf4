"""The production load balancer sends a chat turn or an action call to the least busy server.

Real HAProxy with the configuration make run-production writes, in front of two stand-in servers. One of them is
busy with a slow request (a turn whose actions are still running); the requests that follow must go to the other
one, not every second one to the busy server as round robin would (where it waits behind the slow turn).
"""

from __future__ import annotations

import http.server
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from scripts.topology import free_port, haproxy_config
from tests.deploy.test_deploy_files import running_haproxy

RELEASE = threading.Event()  # set: the slow requests answer


class Server(http.server.BaseHTTPRequestHandler):
    """Answers at once, except a POST whose body is ``slow``, which waits for RELEASE."""

    protocol_version = "HTTP/1.1"
    handled: dict[int, list[bytes]] = {}  # server port → bodies of the POSTs it answered or holds

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "POST":
            Server.handled.setdefault(self.server.server_address[1], []).append(body)
            if body == b"slow":
                RELEASE.wait(30)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def balancer(tmp_path) -> Iterator[tuple[dict[str, int], list[int]]]:
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server) for _ in range(4)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    backends = [server.server_address[1] for server in servers]
    ports = {"rasa-1": backends[0], "rasa-2": backends[1], "actions-1": backends[2], "actions-2": backends[3],
             "web-1": free_port(), "web-2": free_port()}
    frontends = {"rasa": free_port(), "actions": free_port(), "web": free_port()}
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(frontends["rasa"], frontends["actions"], frontends["web"], ports))
    with running_haproxy(cfg, frontends["rasa"], frontends["actions"]):
        RELEASE.clear()
        Server.handled.clear()
        yield frontends, backends
        RELEASE.set()
    for server in servers:
        server.shutdown()


def post(port: int, path: str, body: bytes) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()
        return resp.status


@pytest.mark.parametrize(("backend", "path", "servers"), [
    ("rasa", "/webhooks/rest/webhook", slice(0, 2)),
    ("actions", "/webhook", slice(2, 4)),
])
def test_while_one_server_is_busy_the_next_requests_go_to_the_other(balancer, backend: str, path: str,
                                                                   servers: slice):
    frontends, backends = balancer
    first, second = backends[servers]
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(post, frontends[backend], path, b"slow")
        deadline = time.monotonic() + 10
        while not any(b"slow" in Server.handled.get(port, []) for port in (first, second)):
            assert time.monotonic() < deadline and not slow.done(), "the slow request never reached a server"
            time.sleep(0.01)
        busy, idle = (first, second) if b"slow" in Server.handled.get(first, []) else (second, first)
        assert [post(frontends[backend], path, f"quick {i}".encode()) for i in range(6)] == [200] * 6
        assert Server.handled.get(busy) == [b"slow"], "a request was queued behind the busy server's slow one"
        assert Server.handled[idle] == [f"quick {i}".encode() for i in range(6)]
        RELEASE.set()
        assert slow.result(timeout=30) == 200
