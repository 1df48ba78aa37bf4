"""Closed-loop chat load against one Rasa server, over REST or socket.io (used by bench_chat.py).

N simulated customers each hold one conversation at a time and send its next message as soon as the
previous turn's reply is complete (no think time), so N is the number of turns in flight. A turn is one
user message and all the bot messages it produces; it counts as right when the replies match the step's
pattern (REST: the whole reply list; socket.io: the bot_uttered events received since the message was
sent, until the pattern matches). A wrong or late reply ends that conversation, which restarts with a
new sender id. Runs in Rasa's environment (.venv-rasa), which ships aiohttp and python-socketio.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio


@dataclass(frozen=True)
class Step:
    """One user message and the pattern its replies must match (named groups are kept for later steps)."""

    message: str | Callable[[dict[str, str]], str]
    expect: str


@dataclass
class TurnRecord:
    start: float  # time.monotonic() when the message was sent
    end: float  # when the reply was complete (or the turn failed)
    ok: bool
    step: int


@dataclass
class LevelResult:
    records: list[TurnRecord] = field(default_factory=list)
    conversations_started: int = 0
    conversations_completed: int = 0
    failures: list[str] = field(default_factory=list)  # the first few, for the log


def reply_text(messages: list[dict[str, Any]]) -> str:
    """The bot messages of a turn as one text (texts, button titles, image URLs)."""
    parts = []
    for msg in messages:
        if msg.get("text"):
            parts.append(str(msg["text"]))
        for button in msg.get("buttons") or msg.get("quick_replies") or []:
            parts.append(str(button.get("title", "")))
        if msg.get("image") or (msg.get("attachment") or {}).get("payload"):
            parts.append("[image]")
    return "\n".join(parts)


class RestTransport:
    """Rasa's REST channel: one POST per turn returns every bot message of the turn."""

    def __init__(self, http: aiohttp.ClientSession, rasa_url: str, timeout: float) -> None:
        self.http, self.url, self.timeout = http, f"{rasa_url}/webhooks/rest/webhook", timeout

    async def open(self, sender: str) -> None:
        self.sender = sender

    async def turn(self, message: str, expect: re.Pattern[str]) -> str:
        # A production stack's REST channel needs the trusted back end's token (REST_CHANNEL_TOKEN).
        token = os.environ.get("REST_CHANNEL_TOKEN", "")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.post(self.url, json={"sender": self.sender, "message": message}, headers=headers,
                                  timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
            resp.raise_for_status()
            return reply_text(await resp.json())

    async def close(self) -> None:
        pass


class SocketIOTransport:
    """Rasa's socket.io channel as the web chat uses it: one connection per conversation, a session
    request, then user_uttered out and bot_uttered in (one event per bot message)."""

    def __init__(self, rasa_url: str, timeout: float) -> None:
        self.url, self.timeout = rasa_url, timeout
        self.sio = socketio.AsyncClient(reconnection=False)
        self.inbox: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.confirmed = asyncio.Event()
        self.sio.on("bot_uttered", self._on_bot)
        self.sio.on("session_confirm", self._on_confirm)

    async def _on_bot(self, data: dict[str, Any]) -> None:
        self.inbox.append(data)
        self.arrived.set()

    async def _on_confirm(self, data: Any) -> None:
        # The server issues the session (its id and key); a requested id is only resumed with its key.
        self.sender = data["session_id"] if isinstance(data, dict) else data
        self.confirmed.set()

    async def open(self, sender: str) -> None:
        self.sender = sender
        await self.sio.connect(self.url, transports=["websocket"], socketio_path="socket.io",
                               wait_timeout=self.timeout)
        await self.sio.emit("session_request", {"session_id": sender})
        await asyncio.wait_for(self.confirmed.wait(), self.timeout)

    async def turn(self, message: str, expect: re.Pattern[str]) -> str:
        self.inbox.clear()
        self.arrived.clear()
        await self.sio.emit("user_uttered", {"message": message})
        deadline = time.monotonic() + self.timeout
        while True:
            text = reply_text(self.inbox)
            if expect.search(text):
                return text
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return text
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return reply_text(self.inbox)

    async def close(self) -> None:
        await self.sio.disconnect()


async def run_level(
    *,
    channel: str,
    rasa_url: str,
    users: int,
    script: Callable[[dict[str, str]], list[Step]],
    customers: list[dict[str, str]],
    warmup: float,
    duration: float,
    timeout: float,
    max_turns: int,
) -> tuple[LevelResult, float, float]:
    """Runs `users` closed-loop customers for warmup + duration seconds (or until max_turns turns started).

    `customers` must hold at least `users` entries; a customer serves one conversation at a time, so no
    two concurrent conversations share one. Returns the result and the measurement window (monotonic).
    """
    if len(customers) < users:
        raise ValueError(f"{users} concurrent conversations need {users} distinct customers, have {len(customers)}")
    result = LevelResult()
    pool: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for customer in customers:
        pool.put_nowait(customer)
    t0 = time.monotonic()
    window = (t0 + warmup, t0 + warmup + duration)
    started = 0
    compiled: dict[str, re.Pattern[str]] = {}

    async def user(http: aiohttp.ClientSession) -> None:
        nonlocal started
        while time.monotonic() < window[1] and started < max_turns:
            customer = await pool.get()
            transport: RestTransport | SocketIOTransport = (
                RestTransport(http, rasa_url, timeout) if channel == "rest" else SocketIOTransport(rasa_url, timeout))
            context = dict(customer)
            try:
                await transport.open(f"bench-{uuid.uuid4().hex[:12]}")
                result.conversations_started += 1
                steps = script(context)
                for index, step in enumerate(steps):
                    if time.monotonic() >= window[1] or started >= max_turns:
                        break
                    started += 1
                    message = step.message(context) if callable(step.message) else step.message
                    pattern = compiled.setdefault(step.expect, re.compile(step.expect, re.S))
                    begin = time.monotonic()
                    try:
                        text = await transport.turn(message, pattern)
                        match = pattern.search(text)
                    except (aiohttp.ClientError, asyncio.TimeoutError, socketio.exceptions.SocketIOError) as err:
                        text, match = f"{type(err).__name__}: {err}", None
                    result.records.append(TurnRecord(begin, time.monotonic(), match is not None, index))
                    if match is None:
                        if len(result.failures) < 5:
                            result.failures.append(f"step {index} {message!r}: {text[:300]!r}")
                        break
                    context.update({k: v for k, v in match.groupdict().items() if v})
                else:
                    result.conversations_completed += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, socketio.exceptions.SocketIOError) as err:
                if len(result.failures) < 5:
                    result.failures.append(f"connect: {type(err).__name__}: {err}")
            finally:
                try:
                    await transport.close()
                except Exception:  # noqa: BLE001 - a failed disconnect must not stop the load
                    pass
                pool.put_nowait(customer)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(user(http) for _ in range(users)))
    return result, window[0], window[1]


def summarise(result: LevelResult, window: tuple[float, float]) -> dict[str, Any]:
    """Throughput over the window and latency percentiles of the turns started in it."""
    begin, end = window
    done_in_window = [r for r in result.records if begin <= r.end <= end and r.ok]
    measured = sorted((r.end - r.start) * 1000 for r in result.records if r.start >= begin and r.ok)
    failed = sum(1 for r in result.records if r.start >= begin and not r.ok)

    def pct(q: float) -> float | None:
        if not measured:
            return None
        return round(measured[min(len(measured) - 1, int(round(q / 100 * (len(measured) - 1))))], 1)

    by_step: dict[int, list[float]] = {}
    for r in result.records:
        if r.start >= begin and r.ok:
            by_step.setdefault(r.step, []).append((r.end - r.start) * 1000)
    return {
        "turns_per_s": round(len(done_in_window) / (end - begin), 2),
        "turns_measured": len(measured),
        "turns_ok_including_warmup": sum(1 for r in result.records if r.ok),
        "turns_failed": failed,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(measured[-1], 1) if measured else None,
        # Which turns of the script cost most (median per step, in script order).
        "p50_ms_by_step": [round(sorted(v)[len(v) // 2], 1) for _, v in sorted(by_step.items())],
        "conversations_started": result.conversations_started,
        "conversations_completed": result.conversations_completed,
        "failures": result.failures,
    }
