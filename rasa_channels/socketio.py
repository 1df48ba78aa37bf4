"""Rasa's socket.io web-chat channel, able to reach a customer connected to another Rasa server.

Rasa 3.6's ``SocketIOInput`` keeps its sockets in the process's memory: with two Rasa servers behind a
load balancer, a message that Rasa B sends (a proactive message through ``trigger_intent``, an agent's
reply through ``execute``) to a customer whose socket lives on Rasa A is lost. This channel is the same
channel (name ``socketio``, same events, same session rooms) with python-socketio's ``AsyncRedisManager``
as the client manager when ``redis_url`` is set: every ``emit`` to a session's room is published on a
Redis channel and delivered by whichever server holds the socket. Without ``redis_url`` it keeps the
in-memory manager (one Rasa server).

credentials.yml::

    rasa_channels.socketio.SocketIOInput:
      user_message_evt: user_uttered
      bot_message_evt: bot_uttered
      session_persistence: true
      redis_url: ${SOCKETIO_REDIS_URL}           # e.g. redis://127.0.0.1:6379/3; empty: one server only
      redis_password: ${SOCKETIO_REDIS_PASSWORD}  # kept out of the URL
      redis_channel: ${SOCKETIO_REDIS_CHANNEL}    # the same on every Rasa server of one deployment

The Redis listener is started, and its SUBSCRIBE sent to Redis, before the server takes its first connection
(``start_client_manager``). python-socketio starts it at the first connection instead, so whatever was published
before the subscription reached Redis was lost: a freshly (re)started Rasa server's first customer got no
``session_confirm`` and their page never greeted (seen on the production topology under load, the first web chat
after start-up). ``session_confirm`` goes straight to the socket (it is always on this server), not through Redis.
While Redis refuses connections, the first subscription is retried with a growing pause (``SharedRooms``).

A session id is not a credential here (agents see it; it is the conversation id): each new session comes with
a key (crm_store.chat_sessions, HMAC with ``CHAT_SESSION_SECRET`` from the environment, the same on every Rasa
server and web replica). ``session_confirm`` carries ``{"session_id", "session_key"}``; a ``session_request``
resumes a session only with its key (otherwise a new session is issued, and the refusal logged and counted);
a socket's messages always go to the session it joined, whatever ``session_id`` they name.

Every ``bot_uttered`` payload also carries ``ts`` (the bot event's timestamp in Unix seconds, as Rasa stores it in its
tracker store) and ``part`` (0, 1 ... for the pieces Rasa cuts one bot message into). A socket.io emit is at most once:
it is lost while the customer's socket is away (a reload, a network drop) or while Redis restarts. The web chat asks
the web service for the bot's recent messages (``POST /chat/missed``, read from the tracker store) when it reconnects
and every 20 s, and shows those it has no ``ts`` of.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import rasa.core.channels.channel
import rasa.shared.utils.io
from rasa.core.channels.channel import UserMessage
from rasa.core.channels.socketio import SocketBlueprint, SocketIOOutput
from rasa.core.channels.socketio import SocketIOInput as RasaSocketIOInput
from redis.exceptions import RedisError
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from socketio import AsyncManager, AsyncRedisManager, AsyncServer

from crm_store.chat_sessions import new_session_id, owns, session_key
from rasa_channels.guard import client_address, get_guard

logger = logging.getLogger(__name__)
DEFAULT_REDIS_CHANNEL = "rasa-socketio"


# How long a starting server waits for its Redis subscription before it serves anyway (Redis away at start-up:
# the listener keeps trying on its own, with a growing pause; see SharedRooms).
SUBSCRIBE_WAIT_SECONDS = 10.0
# The listener's pauses between tries while Redis refuses its first subscription: from the first to the longest.
SUBSCRIBE_FIRST_PAUSE_SECONDS = 0.5
SUBSCRIBE_LONGEST_PAUSE_SECONDS = 30.0


class SharedRooms(AsyncRedisManager):
    """python-socketio's Redis client manager whose first subscription retries with a growing pause.

    python-socketio 5.9 retries a lost subscription with a growing pause, but not its first one: while Redis refused
    connections at start-up, its listener task retried at once, in a loop, with a traceback on stderr each time (one
    core busy until Redis came back; python-socketio issue 1534, fixed after 5.9). Here the first subscription waits
    0.5, 1, 2 ... up to 30 s between tries and logs one line per try; everything after it is python-socketio's.
    ``first_subscription`` is set once that SUBSCRIBE has gone out to Redis."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_subscription = asyncio.Event()

    async def _listen(self) -> Any:
        pause = SUBSCRIBE_FIRST_PAUSE_SECONDS
        while True:
            try:
                await self.pubsub.subscribe(self.channel)
                self.first_subscription.set()
                break
            except RedisError as exc:
                logger.warning("socket.io: cannot subscribe to Redis (%s); next try in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, SUBSCRIBE_LONGEST_PAUSE_SECONDS)
                self._redis_connect()  # a new client and pub/sub object, as python-socketio's own retries do
        # python-socketio's listener from here on; its own SUBSCRIBE again is a no-op for Redis.
        async for message in super()._listen():
            yield message


async def start_client_manager(sio: AsyncServer, timeout: float = SUBSCRIBE_WAIT_SECONDS) -> bool:
    """Starts ``sio``'s client manager now (python-socketio does it at the first connection) and, for the Redis
    manager, waits until its SUBSCRIBE went out and one Redis round trip after it came back: a message published from
    then on reaches this server. Returns False (and logs) if that took longer than ``timeout`` seconds in all; True
    at once for the in-memory manager. Call it on the server's event loop before it accepts connections; it never
    raises for Redis being away or slow."""
    if not sio.manager_initialized:
        sio.manager_initialized = True
        sio.manager.initialize()  # starts the listener task, which subscribes first
    if not isinstance(sio.manager, SharedRooms):
        return True

    async def subscribed() -> None:
        await sio.manager.first_subscription.wait()
        await sio.manager.redis.ping()  # a round trip begun after the SUBSCRIBE was written

    try:
        await asyncio.wait_for(subscribed(), timeout)
        return True
    except Exception as exc:  # the time-out, or Redis going away just now: the listener goes on trying
        logger.warning("socket.io: no Redis subscription confirmed within %.0f s (%s); serving anyway, messages from "
                       "other Rasa servers arrive once it is up", timeout, type(exc).__name__)
        return False


@dataclass
class _Sending:
    """The bot event whose payloads one ``send_response`` is emitting, and the number of the next one."""

    ts: float
    agent_name: str | None
    part: int = 0


# One per task: Rasa sends a conversation's messages one after another; another conversation's sends run in their own
# tasks and contexts.
_SENDING: contextvars.ContextVar[_Sending | None] = contextvars.ContextVar("socketio_bot_event", default=None)


class StampedOutput(SocketIOOutput):
    """Rasa's socket.io output channel whose ``bot_uttered`` payloads say which bot event they are: ``ts`` (Unix
    seconds, the event's timestamp in the tracker store) and ``part`` (0, 1 ... in the order Rasa emits them), and,
    for an agent's line, ``agent_name``. The payloads are otherwise Rasa's own; the web chat uses the pair to show a
    message it missed once, and only once (crm_store.chat_pieces cuts a stored event the same way)."""

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        stamp, agent = message.get("timestamp"), message.get("agent_name")
        token = _SENDING.set(_Sending(stamp, agent if isinstance(agent, str) else None)
                             if isinstance(stamp, (int, float)) else None)
        try:
            await super().send_response(recipient_id, message)
        finally:
            _SENDING.reset(token)

    async def _send_message(self, socket_id: str, response: Any) -> None:
        sending = _SENDING.get()
        if sending is not None and isinstance(response, dict):
            response = {**response, "ts": sending.ts, "part": sending.part}
            if sending.agent_name:
                response["agent_name"] = sending.agent_name  # an agent's line (actions.agent_relay): no guessing
            sending.part += 1
        await super()._send_message(socket_id, response)


class ClosedWebsocketNoise(logging.Filter):
    """Drops sanic's error for every closed socket.io WebSocket: python-engineio's handler returns nothing when
    the socket closes and sanic logs "Invalid response type None" with a traceback (sanic issue 2572, open).
    Nothing failed; one traceback per closed chat tab would bury real errors in Rasa's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and "Invalid response type None" in str(exc) and "/socket.io/" in record.getMessage())


logging.getLogger("sanic.error").addFilter(ClosedWebsocketNoise())


class SocketIOInput(RasaSocketIOInput):
    """Rasa's socket.io input channel with an optional Redis client manager shared by all Rasa servers."""

    @classmethod
    def name(cls) -> str:
        return "socketio"  # trackers, handoffs and ``output_channel=latest`` know the channel by this name

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> SocketIOInput:
        credentials = credentials or {}
        return cls(
            credentials.get("user_message_evt", "user_uttered"),
            credentials.get("bot_message_evt", "bot_uttered"),
            credentials.get("namespace"),
            credentials.get("session_persistence", False),
            credentials.get("socketio_path", "/socket.io"),
            credentials.get("jwt_key"),
            credentials.get("jwt_method", "HS256"),
            credentials.get("metadata_key", "metadata"),
            redis_url=credentials.get("redis_url") or None,
            redis_password=credentials.get("redis_password") or None,
            redis_channel=credentials.get("redis_channel") or DEFAULT_REDIS_CHANNEL,
            session_secret=os.environ.get("CHAT_SESSION_SECRET", ""),
        )

    def __init__(self, *args: Any, redis_url: str | None = None, redis_password: str | None = None,
                 redis_channel: str = DEFAULT_REDIS_CHANNEL, session_secret: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redis_url = redis_url
        self.redis_password = redis_password
        self.redis_channel = redis_channel
        if not session_secret:
            # Sessions then last only as long as this process, and the web service cannot check their keys.
            logger.warning("CHAT_SESSION_SECRET is not set: web-chat sessions cannot be resumed after a restart")
            session_secret = secrets.token_hex(32)
        self.session_secret = session_secret

    def client_manager(self) -> AsyncManager:
        """Redis pub/sub manager when ``redis_url`` is set (several Rasa servers), else the in-memory one."""
        if not self.redis_url:
            return AsyncManager()
        options = {"password": self.redis_password} if self.redis_password else {}
        logger.info("socket.io rooms shared through Redis channel %r", self.redis_channel)
        return SharedRooms(self.redis_url, channel=self.redis_channel, redis_options=options)

    def get_output_channel(self) -> StampedOutput | None:
        """The output channel for messages sent through Rasa's HTTP API (proactive messages, agents' replies)."""
        if self.sio is None:
            return super().get_output_channel()  # Rasa's warning: no server yet
        return StampedOutput(self.sio, self.bot_message_evt)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        """Rasa 3.6's socket.io blueprint (same routes and events) on a server with our client manager."""
        sio = AsyncServer(async_mode="sanic", cors_allowed_origins=[], client_manager=self.client_manager())
        socketio_webhook = SocketBlueprint(sio, self.socketio_path, "socketio_webhook", __name__)
        self.sio = sio  # get_output_channel() uses it for messages sent through Rasa's HTTP API

        @socketio_webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @sio.on("connect", namespace=self.namespace)
        async def connect(sid: str, environ: dict, auth: dict | None) -> bool:
            if not self.jwt_key:
                return True
            token = (auth or {}).get("token")
            payload = rasa.core.channels.channel.decode_bearer_token(token, self.jwt_key, self.jwt_algorithm) if token else None
            return bool(payload)

        @sio.on("session_request", namespace=self.namespace)
        async def session_request(sid: str, data: dict | None) -> None:
            data = data if isinstance(data, dict) else {}
            session_id = data.get("session_id")
            if session_id and not owns(self.session_secret, session_id, data.get("session_key")):
                # A known id without its key (an agent's screen, a log, a guess) gets a new, empty session.
                get_guard().refuse("session_key_refused", self.name())  # logged and counted
                session_id = None
            if not session_id:
                session_id = new_session_id()
            await sio.save_session(sid, {"session_id": session_id}, namespace=self.namespace)
            if self.session_persistence:
                # The session id is the room: any server's emit to it reaches this socket.
                entered = sio.enter_room(sid, session_id, namespace=self.namespace)
                if inspect.isawaitable(entered):  # a coroutine from python-socketio 5.10 on
                    await entered
            # This socket is on this server: straight to it, not through Redis and back.
            await sio.emit("session_confirm", {"session_id": session_id,
                                               "session_key": session_key(self.session_secret, session_id)},
                           room=sid, namespace=self.namespace, ignore_queue=True)

        @sio.on(self.user_message_evt, namespace=self.namespace)
        async def handle_message(sid: str, data: dict) -> None:
            data = data if isinstance(data, dict) else {}
            output_channel = StampedOutput(sio, self.bot_message_evt)
            if self.session_persistence:
                # The session this socket joined with its key; a session_id in the message is not trusted.
                sender_id = (await sio.get_session(sid, namespace=self.namespace)).get("session_id")
                if not sender_id:
                    rasa.shared.utils.io.raise_warning(
                        "A message before `session_request` was received and ignored: the client must send "
                        "`session_request` first.")
                    return
            else:
                sender_id = sid
            environ = sio.get_environ(sid, namespace=self.namespace) or {}
            client = client_address(environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"))
            # The client's own metadata is not trusted (nor stored): the guard adds what the server knows.
            text = data.get("message")
            # UserMessage calls .strip() on any truthy text: a number or an object from a client raised there (an
            # unhandled error, no reply). Anything but a string is no text; the guard answers that politely.
            message = UserMessage(text if isinstance(text, str) else "", output_channel, sender_id,
                                  input_channel=self.name())
            await guarded(message, client)

        async def subscribe_first(_app: Any, _loop: Any) -> None:
            await start_client_manager(sio)

        socketio_webhook.listener("before_server_start")(subscribe_first)
        guard = get_guard()
        guard.attach(socketio_webhook)

        async def guarded(message: UserMessage, client: str | None) -> None:
            await guard.wrap(on_new_message, self.name(), lambda _m: client)(message)

        return socketio_webhook
