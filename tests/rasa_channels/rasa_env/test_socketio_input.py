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
    handler = channel.sio.handlers["/"]["user_uttered"]
    asyncio.run(handler("sid-1", {"message": message, "session_id": "session-1"}))
    assert not reached  # nothing for language understanding
    assert [(e, d.get("text"), r) for e, d, r in sent] == [("bot_uttered", REPLY_EMPTY, "session-1")]
