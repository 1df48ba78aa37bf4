"""Oldest turn first: a Rasa server works on the customer turn that arrived first whenever several are ready.

Why: Rasa handles every conversation's message on one event loop. A product turn is several slices of CPU work
(tracker read, language understanding, policy predictions, tracker write) separated by calls to the action
server. asyncio resumes whatever became ready first, so a turn coming back from the action server queued behind
the first slices of turns that arrived after it, and the turns that call the action server most finished last.
Here a turn's slices wait for one gate, which is handed to the waiting turn that arrived first: a turn in
progress goes before turns that have not started, as in a first-come-first-served queue. The CPU work is the
same; only its order changes. Measured at 20 concurrent customers (bench/bench_chat.py, with
nlu/sql_tracker_store.py; bench/results/experiments-2026-12-01/README.md): p95 2,158 and 2,270 ms against 2,537 and
2,517 ms without both, p99 2,263 and 2,638 against 3,246 and 2,767 ms.

What is gated: ``MessageProcessor.handle_message``, from the moment its conversation lock is held (so a turn
never waits for the gate while another turn of the same conversation waits for it) to its end. The gate is
given back during every request to an endpoint (the action server; ``EndpointConfig.request``) and while the
bot's replies are sent (Messenger's Graph API, socket.io), and taken again, in arrival order, when that is done.
Everything else on the loop (HTTP parsing, other Rasa endpoints, external triggers) runs as before, outside it.

Shapes: a ``Turn`` holds its arrival time (``time.monotonic()``, seconds) and whether it holds the gate; the
current turn is a context variable, so nested calls (a follow-up inside a turn) do not queue again.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Turn:
    """One customer message being handled: ``arrived`` orders the queue (earlier first)."""

    arrived: float = field(default_factory=time.monotonic)
    holding: bool = False
    # The task handling the turn: a task it starts inherits the context variable, never the gate.
    owner: asyncio.Task | None = None


class OldestFirstGate:
    """A lock for one event loop whose waiters get it in order of their turn's arrival, not of their request.

    Not thread-safe: used only from the Rasa server's event loop. ``acquire`` raises ``CancelledError`` if its
    task is cancelled while waiting; the gate is then not held (and passed on if it had just been handed over).
    """

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[tuple[float, int, asyncio.Future, Turn]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        """How many turns wait for the gate (for tests and diagnostics)."""
        return sum(1 for *_, fut, _t in self._waiters if not fut.done())

    async def acquire(self, turn: Turn) -> None:
        if not self._held:  # free: a release with waiters hands the gate over, so nobody is waiting
            self._held = turn.holding = True
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (turn.arrived, next(self._order), fut, turn))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed over just before the cancellation: pass it on
                turn.holding = False
                self._hand_over()
            raise

    def release(self, turn: Turn) -> None:
        if not turn.holding:
            return
        turn.holding = False
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters:
            *_, fut, turn = heapq.heappop(self._waiters)
            if not fut.done():  # skips waiters whose task was cancelled
                turn.holding = True
                fut.set_result(None)
                return
        self._held = False


GATE = OldestFirstGate()
_current: contextvars.ContextVar[Turn | None] = contextvars.ContextVar("oldest_turn_first", default=None)


def gated(handle: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wraps a turn's handler (``MessageProcessor.handle_message``): it runs holding the gate, as one ``Turn``."""

    @functools.wraps(handle)
    async def handle_in_turn(*args: Any, **kwargs: Any) -> Any:
        if _current.get() is not None:  # already inside a turn
            return await handle(*args, **kwargs)
        turn = Turn(owner=asyncio.current_task())
        token = _current.set(turn)
        try:
            await GATE.acquire(turn)
            return await handle(*args, **kwargs)
        finally:
            GATE.release(turn)
            _current.reset(token)

    return handle_in_turn


def ungated(request: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wraps a call that waits on the network (an action server request, sending the bot's replies): the turn gives
    the gate back for it. Only the turn's own task does: a task started during the turn (a reminder, say) sees the
    turn in its copied context but never releases or takes the gate in the turn's name."""

    @functools.wraps(request)
    async def request_outside_turn(*args: Any, **kwargs: Any) -> Any:
        turn = _current.get()
        if turn is None or not turn.holding or turn.owner is not asyncio.current_task():
            return await request(*args, **kwargs)
        GATE.release(turn)  # other turns work while this one waits for the action server
        try:
            return await request(*args, **kwargs)
        finally:
            await GATE.acquire(turn)  # then it goes before every turn that arrived after it

    return request_outside_turn


def apply() -> None:
    """Gates ``MessageProcessor.handle_message``; ungates ``EndpointConfig.request`` and the sending of the bot's
    replies (see the module doc)."""
    from rasa.core.processor import MessageProcessor
    from rasa.utils.endpoints import EndpointConfig

    MessageProcessor.handle_message = gated(MessageProcessor.handle_message)  # type: ignore[method-assign]
    EndpointConfig.request = ungated(EndpointConfig.request)  # type: ignore[method-assign]
    # A staticmethod in Rasa 3.6: Messenger's Graph API (up to 10 s a call) and socket.io's Redis publish must not
    # hold every other conversation.
    MessageProcessor._send_bot_messages = staticmethod(  # type: ignore[method-assign]
        ungated(MessageProcessor._send_bot_messages))
