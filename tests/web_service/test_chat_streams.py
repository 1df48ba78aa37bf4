"""A web chat's push stream (``POST /chat/stream``) holds a connection through the load balancer and a hub
subscription, and a session key costs nothing: a replica holds at most 4 streams of one chat and
``CHAT_STREAMS_PER_CLIENT`` of one client address, and a closed stream frees its place. Through a real uvicorn."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ROOT, free_port
from tests.web_service.conftest import CHAT_SECRET, chat


@pytest.fixture
def server(api_db: str) -> Iterator[int]:
    port = free_port()
    env = dict(os.environ, DATABASE_URL=api_db, SECRET_KEY="k" * 40, CHAT_SESSION_SECRET=CHAT_SECRET,
               PYTHONPATH=str(ROOT), CHAT_STREAMS_PER_CLIENT="6", REDIS_URL="", HANDOFF_SWEEP_SECONDS="0")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "web_service.main:create_app", "--host",
                             "127.0.0.1", "--port", str(port), "--ws", "none"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)  # still starting: poll until it answers
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def open_stream(port: int, session: str) -> tuple[int, http.client.HTTPConnection]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/chat/stream", body=json.dumps(chat(session)), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status == 200:
        assert resp.readline().startswith(b"retry:")  # really streaming
    else:
        resp.read()
    return resp.status, conn


def test_streams_are_capped_per_chat_and_per_address_and_a_closed_one_frees_its_place(server: int):
    chat_a, chat_b = f"streams-a-{uuid.uuid4().hex}", f"streams-b-{uuid.uuid4().hex}"
    held = []
    for _ in range(4):  # four tabs of one chat
        code, conn = open_stream(server, chat_a)
        assert code == 200
        held.append(conn)
    code, extra = open_stream(server, chat_a)
    assert code == 429  # a fifth for the same chat
    extra.close()
    for _ in range(2):  # another chat from the same address, up to the address's 6
        code, conn = open_stream(server, chat_b)
        assert code == 200
        held.append(conn)
    code, extra = open_stream(server, f"streams-c-{uuid.uuid4().hex}")
    assert code == 429  # the address holds 6
    extra.close()
    held.pop(0).close()  # one tab of chat A goes
    deadline = time.monotonic() + 15
    while True:  # the server notices the closed connection: its place is free again
        code, conn = open_stream(server, chat_a)
        if code == 200:
            held.append(conn)
            break
        conn.close()
        assert time.monotonic() < deadline, "a closed stream kept its place"
        time.sleep(0.2)
    for conn in held:
        conn.close()
