"""A freshly started Rasa server's first web-chat customer, with the socket.io rooms shared through Redis (the
production topology): their ``session_confirm`` and a message another Rasa server sends them right after arrive,
even when Redis is slow to take the server's subscription. Before, python-socketio subscribed only at the first
connection, and what was published before the SUBSCRIBE reached Redis was lost (a browser test's page on the
production topology never greeted). Real Sanic server on loopback with our channel's blueprint, real Redis on
127.0.0.1:6379, python-socketio's own client."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import socketio
from redis.asyncio.client import PubSub
from sanic import Sanic

from rasa_channels import guard as guard_module
from rasa_channels.guard import GuardSettings, InputGuard
from rasa_channels.socketio import SharedRooms, SocketIOInput, start_client_manager
from scripts.topology import free_port

REDIS_URL = "redis://127.0.0.1:6379/5"
SLOW_SUBSCRIBE_SECONDS = 1.0


@pytest.fixture(autouse=True)
def several_servers_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sanic rewrites its HTTP code when a server starts; a second server in one process needs its test mode, which
    rewrites from the original each time (as sanic-testing does)."""
    monkeypatch.setattr(Sanic, "test_mode", True)


@pytest.fixture
def chat_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard_module, "_GUARD", InputGuard(GuardSettings()))
    monkeypatch.setenv("CHAT_SESSION_SECRET", "s" * 64)


@pytest.fixture
def slow_subscribe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis takes a second to subscribe (a loaded machine, a remote Redis): the race, made certain."""
    subscribe = PubSub.subscribe

    async def slow(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(SLOW_SUBSCRIBE_SECONDS)
        return await subscribe(self, *args, **kwargs)

    monkeypatch.setattr(PubSub, "subscribe", slow)


def channel_on(redis_channel: str, redis_url: str = REDIS_URL) -> SocketIOInput:
    return SocketIOInput.from_credentials({"session_persistence": True, "redis_url": redis_url,
                                           "redis_channel": redis_channel})


async def serve(channel: SocketIOInput, port: int) -> Any:
    """Starts a Sanic server as `rasa run` does: the before-start listeners run before the socket serves."""
    app = Sanic(f"chat-{secrets.token_hex(4)}")

    async def on_new_message(_message: Any) -> None:
        return None

    app.blueprint(channel.blueprint(on_new_message))
    server = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True,
                                     asyncio_server_kwargs={"start_serving": False})
    await server.startup()
    await server.before_start()
    await server.start_serving()
    await server.after_start()
    return server


@asynccontextmanager
async def customer_of(channel: SocketIOInput) -> AsyncIterator[tuple[dict, asyncio.Future]]:
    """A server with ``channel`` started, and a web-chat customer who connects at once and asks for a session:
    yields the confirmed session and a future of the first ``bot_uttered`` the customer receives."""
    port = free_port()
    server = await serve(channel, port)
    client = socketio.AsyncClient(reconnection=False)
    confirmed: asyncio.Future = asyncio.get_running_loop().create_future()
    uttered: asyncio.Future = asyncio.get_running_loop().create_future()
    client.on("session_confirm", lambda data: confirmed.done() or confirmed.set_result(data))
    client.on("bot_uttered", lambda data: uttered.done() or uttered.set_result(data))
    try:
        await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"], socketio_path="/socket.io")
        await client.emit("session_request", {"session_id": None})
        yield await asyncio.wait_for(confirmed, 5), uttered
    finally:
        await client.disconnect()
        server.close()
        await server.wait_closed()


def test_the_first_customer_after_start_gets_the_session_and_other_servers_messages(
        slow_subscribe: None, chat_guard: None) -> None:
    redis_channel = f"test-socketio-{secrets.token_hex(4)}"

    async def scenario() -> tuple[dict, dict]:
        # Another Rasa server of the same deployment (only publishes here: a proactive message, an agent's reply).
        other = socketio.AsyncRedisManager(REDIS_URL, channel=redis_channel, write_only=True)
        try:
            async with customer_of(channel_on(redis_channel)) as (session, uttered):
                await other.emit("bot_uttered", {"text": "Your washing machine reported a fault."},
                                 room=session["session_id"], namespace="/")
                return session, await asyncio.wait_for(uttered, 5)
        finally:
            await other.redis.close()

    session, message = asyncio.run(scenario())
    assert len(session["session_id"]) == 32 and session["session_key"]
    assert message == {"text": "Your washing machine reported a fault."}


def test_the_subscription_is_in_place_when_the_start_hook_returns(slow_subscribe: None) -> None:
    redis_channel = f"test-socketio-{secrets.token_hex(4)}"

    async def scenario() -> tuple[int, int, bool]:
        channel = channel_on(redis_channel)
        channel.blueprint(lambda _m: asyncio.sleep(0))
        probe = channel.sio.manager.redis  # any connection to the same Redis
        before = dict(await probe.pubsub_numsub(redis_channel))[redis_channel.encode()]
        ready = await start_client_manager(channel.sio)
        after = dict(await probe.pubsub_numsub(redis_channel))[redis_channel.encode()]
        channel.sio.manager.thread.cancel()
        return before, after, ready

    before, after, ready = asyncio.run(scenario())
    assert (before, after, ready) == (0, 1, True)


def test_in_memory_rooms_need_no_start() -> None:
    async def scenario() -> bool:
        channel = SocketIOInput.from_credentials({"session_persistence": True})
        channel.blueprint(lambda _m: asyncio.sleep(0))
        return await start_client_manager(channel.sio, timeout=0.1)

    assert asyncio.run(scenario()) is True


def test_the_session_is_confirmed_straight_to_the_socket_even_when_redis_loses_messages(
        chat_guard: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The socket that asked is on this server: its session_confirm needs no Redis round trip (nor Redis)."""
    published: list[Any] = []

    async def lost(self: SharedRooms, data: Any) -> None:
        published.append(data.get("event"))  # Redis takes it and delivers nothing

    monkeypatch.setattr(SharedRooms, "_publish", lost)

    async def scenario() -> dict:
        async with customer_of(channel_on(f"test-socketio-{secrets.token_hex(4)}")) as (session, _uttered):
            return session

    session = asyncio.run(scenario())
    assert len(session["session_id"]) == 32 and "session_confirm" not in published


def test_a_server_started_while_redis_refuses_connections_retries_calmly_and_starts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis away at start-up: the start waits a bounded time and says so, and the listener retries with a growing
    pause (python-socketio 5.9's own retried its first subscription at once, in a loop that kept a core busy)."""
    tries: list[float] = []
    subscribe = PubSub.subscribe

    async def counted(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        tries.append(asyncio.get_running_loop().time())
        return await subscribe(self, *args, **kwargs)

    monkeypatch.setattr(PubSub, "subscribe", counted)
    nobody = f"redis://127.0.0.1:{free_port()}/5"  # nothing listens there: every connection is refused

    async def scenario() -> tuple[bool, float]:
        channel = channel_on(f"test-socketio-{secrets.token_hex(4)}", nobody)
        channel.blueprint(lambda _m: asyncio.sleep(0))
        loop = asyncio.get_running_loop()
        began = loop.time()
        ready = await start_client_manager(channel.sio, timeout=2.0)
        waited = loop.time() - began
        channel.sio.manager.thread.cancel()
        return ready, waited

    ready, waited = asyncio.run(scenario())
    assert ready is False and 1.9 <= waited < 5
    # Tries at 0, 0.5 and 1.5 s (then 3.5 s): three in two seconds, not thousands.
    assert 2 <= len(tries) <= 4
    assert all(later - earlier >= 0.45 for earlier, later in zip(tries, tries[1:]))
