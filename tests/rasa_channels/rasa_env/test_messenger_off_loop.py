"""Messenger replies must not stall Rasa's event loop: fbmessenger posts to the Graph API synchronously.

A local stand-in for the Graph API (the one thing these tests cannot reach) answers each call after a
delay; while the channel sends, a ticker on the same event loop must keep running on time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from rasa.core.channels.channel import UserMessage
from rasa_channels import facebook
from rasa_channels.facebook import FacebookInput, Messenger

DELAY = 0.6


class SlowGraph:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        graph = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(DELAY)  # the slow Graph API this test is about
                graph.calls.append(body)
                data = json.dumps({"recipient_id": "1", "message_id": "m"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def graph() -> Iterator[SlowGraph]:
    stand_in = SlowGraph()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


def channel(graph_url: str) -> FacebookInput:
    return FacebookInput("verify", "app-secret", "page-token", graph_url)


async def max_loop_gap(work: Any) -> float:
    """Runs ``work`` while a ticker measures the longest time the event loop could not run it."""
    gaps: list[float] = []
    last = [time.perf_counter()]
    done = asyncio.Event()

    async def tick() -> None:
        while not done.is_set():
            await asyncio.sleep(0.02)
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now

    ticker = asyncio.create_task(tick())
    try:
        await work
    finally:
        gaps.append(time.perf_counter() - last[0])  # a loop blocked throughout shows as one long gap
        done.set()
        await ticker
    return max(gaps)


def test_replies_and_typing_indicators_leave_the_event_loop_free(graph):
    bot = channel(graph.url).get_output_channel()

    async def send() -> None:
        await bot.send_action("user-1", "typing_on")
        await bot.send_response("user-1", {"text": "first part\n\nsecond part"})
        await bot.send_response("user-1", {"text": "pick one", "buttons": [{"title": "Yes", "payload": "/affirm"}]})

    gap = asyncio.run(max_loop_gap(send()))
    assert len(graph.calls) == 4  # typing_on, two text parts, the button template
    assert graph.calls[0]["sender_action"] == "typing_on"
    assert [c["message"].get("text") for c in graph.calls[1:3]] == ["first part", "second part"]
    assert graph.calls[3]["message"]["attachment"]["payload"]["template_type"] == "button"
    assert gap < DELAY / 2  # each Graph call took DELAY; the loop never waited for one


def test_an_incoming_message_is_handled_with_the_off_loop_channel(graph):
    seen: list[UserMessage] = []

    async def on_new_message(message: UserMessage) -> None:
        seen.append(message)
        await message.output_channel.send_response(message.sender_id, {"text": "hello back"})

    messenger = Messenger("page-token", on_new_message)
    messenger.client = channel(graph.url).client()
    gap = asyncio.run(max_loop_gap(messenger._handle_user_message("hello", "user-2", None)))
    assert [m.text for m in seen] == ["hello"] and seen[0].input_channel == "facebook"
    actions = [c.get("sender_action") for c in graph.calls]
    assert actions == ["mark_seen", "typing_on", None, "typing_off"]
    assert graph.calls[2]["message"]["text"] == "hello back"
    assert gap < DELAY / 2


def test_a_graph_api_that_never_answers_times_out(monkeypatch):
    monkeypatch.setattr(facebook, "GRAPH_TIMEOUT_SECONDS", 0.5)
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        bot = channel(f"http://127.0.0.1:{silent.getsockname()[1]}").get_output_channel()
        started = time.perf_counter()
        with pytest.raises(requests.exceptions.Timeout):
            asyncio.run(bot.send_response("user-3", {"text": "anyone there?"}))
        assert time.perf_counter() - started < 3
