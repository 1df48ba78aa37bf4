"""The web chat's socket.io channel with what a hostile client may emit as ``user_uttered`` (found by make fuzz):
a message that is not a string is answered like an empty one, never an unhandled error with no reply."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rasa_channels import guard as guard_module
from rasa_channels.guard import REPLY_EMPTY, GuardSettings, InputGuard
from rasa_channels.socketio import SocketIOInput


@pytest.mark.parametrize("message", [5, 1.5, ["hi"], {"text": "hi"}, True, None])
def test_a_message_that_is_not_text_gets_the_empty_message_reply(message: Any, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(guard_module, "_GUARD", InputGuard(GuardSettings()))
    channel = SocketIOInput(user_message_evt="user_uttered", bot_message_evt="bot_uttered", session_persistence=True)
    reached: list[Any] = []

    async def on_new_message(msg: Any) -> None:
        reached.append(msg)

    channel.blueprint(on_new_message)
    sent: list[tuple[str, Any, Any]] = []

    async def emit(event: str, data: Any = None, room: Any = None, **_kw: Any) -> None:
        sent.append((event, data, room))

    channel.sio.emit = emit  # type: ignore[method-assign]  # what reaches the client's room

    async def get_session(sid: str, namespace: Any = None) -> dict[str, Any]:
        return {"session_id": "session-1"}  # the session this socket joined with session_request

    channel.sio.get_session = get_session  # type: ignore[method-assign]
    handler = channel.sio.handlers["/"]["user_uttered"]
    asyncio.run(handler("sid-1", {"message": message, "session_id": "someone-elses-session"}))
    assert not reached  # nothing for language understanding
    assert [(e, d.get("text"), r) for e, d, r in sent] == [("bot_uttered", REPLY_EMPTY, "session-1")]


def test_a_session_is_resumed_only_with_its_key(monkeypatch: pytest.MonkeyPatch):
    """A known session id without its key (an agent's screen, a log) gets a new session; with the key, the same."""
    from crm_store.chat_sessions import session_key

    monkeypatch.setattr(guard_module, "_GUARD", InputGuard(GuardSettings()))
    monkeypatch.setenv("CHAT_SESSION_SECRET", "s" * 64)
    channel = SocketIOInput.from_credentials({"session_persistence": True})
    channel.blueprint(lambda _m: asyncio.sleep(0))
    confirmed: list[Any] = []
    joined: dict[str, Any] = {}

    async def emit(event: str, data: Any = None, room: Any = None, **_kw: Any) -> None:
        confirmed.append(data)

    async def save_session(sid: str, session: dict[str, Any], namespace: Any = None) -> None:
        joined[sid] = session

    channel.sio.emit = emit  # type: ignore[method-assign]
    channel.sio.save_session = save_session  # type: ignore[method-assign]
    channel.sio.enter_room = lambda *a, **k: None  # type: ignore[method-assign]
    request = channel.sio.handlers["/"]["session_request"]
    asyncio.run(request("sid-1", {}))
    first = confirmed[-1]
    assert len(first["session_id"]) == 32 and first["session_key"] == session_key("s" * 64, first["session_id"])
    for data in ({"session_id": first["session_id"]}, {"session_id": first["session_id"], "session_key": "0" * 32},
                 {"session_id": first["session_id"], "session_key": 5}, "not a dict"):
        asyncio.run(request("sid-2", data))
        assert confirmed[-1]["session_id"] != first["session_id"] and joined["sid-2"] == {"session_id": confirmed[-1]["session_id"]}
    asyncio.run(request("sid-3", {"session_id": first["session_id"], "session_key": first["session_key"]}))
    assert confirmed[-1] == first and joined["sid-3"] == {"session_id": first["session_id"]}
    assert guard_module.get_guard().counts["session_key_refused"] == 3  # "not a dict" names no session


def test_only_the_closed_websocket_error_is_dropped_from_sanics_log():
    import logging
    import sys

    from sanic.exceptions import ServerError

    from rasa_channels.socketio import ClosedWebsocketNoise

    def record(uri: str, exc: Exception) -> logging.LogRecord:
        try:
            raise exc
        except type(exc):
            return logging.LogRecord("sanic.error", logging.ERROR, __file__, 1, "Exception occurred while handling uri: %r",
                                     (uri,), sys.exc_info())

    noise = ClosedWebsocketNoise()
    assert not noise.filter(record("ws://h/socket.io/?transport=websocket", ServerError("Invalid response type None (need HTTPResponse)")))
    assert noise.filter(record("ws://h/socket.io/?transport=websocket", ServerError("something else")))
    assert noise.filter(record("http://h/webhooks/rest/webhook", ServerError("Invalid response type None (need HTTPResponse)")))
