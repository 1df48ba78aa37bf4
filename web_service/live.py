"""Push for the console and the web chat: one change-feed reader per web process fans database changes out
to the server-sent-event streams connected to this process.

The reader (``Hub.run``) reads ``crm_store.repositories.console.read_feed`` every ``interval`` seconds while
at least one stream is open, so a change written by any replica, the bot or the sweeper reaches every
console whichever replica it is connected to; browsers never poll. Signals written by this process (typing,
a customer's "sent") are also published at once (``publish_local``) and skipped when the reader sees them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from crm_store.db import session_scope
from crm_store.repositories.console import FeedCursor, prune_signals, read_feed

logger = logging.getLogger(__name__)
KEEPALIVE_SECONDS = 15.0
CLOSE: dict[str, Any] = {"type": "_close"}  # ends a stream

Event = dict[str, Any]


class Hub:
    """Subscribers are (filter, queue) pairs living on the event loop; ``publish`` must run on the loop."""

    def __init__(self, database_url: str, *, interval: float = 0.5) -> None:
        self.database_url = database_url
        self.interval = interval
        self.subscribers: dict[asyncio.Queue[Event], Callable[[Event], bool]] = {}
        self._local_signals: deque[int] = deque(maxlen=2048)
        self._cursor = FeedCursor()
        self._wake = asyncio.Event()
        self._reads = 0
        self.closing = False

    def subscribe(self, accept: Callable[[Event], bool]) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=1000)
        self.subscribers[queue] = accept
        if self.closing:
            queue.put_nowait(CLOSE)
        self._wake.set()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        self.subscribers.pop(queue, None)

    def publish(self, event: Event) -> None:
        for queue, accept in list(self.subscribers.items()):
            if accept(event):
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:  # a stuck client: drop it, its browser reconnects and reloads
                    self.unsubscribe(queue)

    def close(self) -> None:
        """The server is stopping: end every stream (browsers reconnect to another replica or after restart),
        so that the server's graceful shutdown does not wait on them."""
        self.closing = True
        for queue in list(self.subscribers):
            try:
                queue.put_nowait(CLOSE)
            except asyncio.QueueFull:
                pass

    def publish_local(self, event: Event) -> None:
        """A signal this process just committed: out now, and not again when the reader sees its row."""
        self._local_signals.append(int(event["id"]))
        self.publish(event)

    def _read(self) -> list[Event]:
        with session_scope(self.database_url, write=False) as session:
            return read_feed(session, self._cursor)

    def _prune(self) -> None:
        with session_scope(self.database_url) as session:
            prune_signals(session)

    async def run(self) -> None:
        """Reads the feed while anyone listens; cancelled at shutdown."""
        while True:
            if not self.subscribers:
                self._cursor = FeedCursor()  # nobody listened meanwhile: start afresh, no stale burst
                self._wake.clear()
                await self._wake.wait()
            try:
                events = await asyncio.to_thread(self._read)
                for event in events:
                    if event["type"] == "signal" and event["id"] in self._local_signals:
                        continue
                    self.publish(event)
                self._reads += 1
                if self._reads % 600 == 0:
                    await asyncio.to_thread(self._prune)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is down: keep streams open, try again
                logger.warning("change feed unavailable: %s", type(exc).__name__)
            await asyncio.sleep(self.interval)


_hub: Hub | None = None


def get_hub() -> Hub:
    if _hub is None:
        raise RuntimeError("the push hub is not started")
    return _hub


def start_hub(database_url: str, interval: float = 0.5) -> asyncio.Task[None]:
    """Creates this process's hub and its reader task (call from the app's lifespan)."""
    global _hub
    _hub = Hub(database_url, interval=interval)
    _close_on_exit_signals(_hub, asyncio.get_running_loop())
    return asyncio.create_task(_hub.run(), name="push-hub")


def _close_on_exit_signals(hub: Hub, loop: asyncio.AbstractEventLoop) -> None:
    """Uvicorn waits for open responses before it stops, and a push stream never ends by itself: chain onto
    the server's SIGTERM/SIGINT handlers so that the streams end first."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Callable[..., Any] = previous) -> None:
            loop.call_soon_threadsafe(hub.close)
            previous(signum, frame)

        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread (a test client): nothing to chain
            return


async def sse(get: Callable[[], Awaitable[Event]], close: Callable[[], None],
              first: Event | None = None) -> AsyncIterator[bytes]:
    """Server-sent events from ``get()`` with a comment line every ``KEEPALIVE_SECONDS`` as keep-alive;
    ``close`` runs when the client goes."""
    try:
        yield b"retry: 2000\n\n"
        if first is not None:
            yield f"data: {json.dumps(first)}\n\n".encode()
        while True:
            try:
                event = await asyncio.wait_for(get(), timeout=KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if event is CLOSE:
                return
            yield f"data: {json.dumps(event, default=str)}\n\n".encode()
    finally:
        close()
