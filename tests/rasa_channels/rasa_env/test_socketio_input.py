"""The web chat's socket.io channel with what a hostile client may emit as ``user_uttered`` (found by make fuzz):
a message that is not a string is answered like an empty one, never an unhandled error with no reply."""

from __future__ import annotations

import asyncio
import json
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


def test_every_bot_payload_says_which_bot_event_and_piece_it_is(monkeypatch: pytest.MonkeyPatch):
    """The web chat matches what it caught up (``POST /chat/missed``: the bot events' timestamps) with what its socket
    brought by (ts, part): the payloads of messages sent in reply and through Rasa's HTTP API both carry them."""
    from rasa.shared.core.events import BotUttered

    monkeypatch.setattr(guard_module, "_GUARD", InputGuard(GuardSettings()))
    channel = SocketIOInput(user_message_evt="user_uttered", bot_message_evt="bot_uttered", session_persistence=True)
    assert channel.get_output_channel() is None  # no server yet: Rasa's own answer (and warning)
    channel.blueprint(lambda _m: asyncio.sleep(0))
    sent: list[dict[str, Any]] = []

    async def emit(event: str, data: Any = None, room: Any = None, **_kw: Any) -> None:
        sent.append({"event": event, "room": room, **data})

    channel.sio.emit = emit  # type: ignore[method-assign]
    event = BotUttered("Hi!\n\nPick one:", {"buttons": [{"title": "A", "payload": "/a"}], "image": "https://x/i.png"},
                       timestamp=1764700000.125)

    async def two_messages() -> None:
        output = channel.get_output_channel()
        # Two conversations at once: each send's pieces are numbered on their own.
        await asyncio.gather(output.send_response("s1", event.message()), output.send_response("s2", BotUttered(
            "Other", timestamp=5.5).message()))

    asyncio.run(two_messages())
    mine = [(m["ts"], m["part"], m.get("text"), len(m.get("quick_replies") or [])) for m in sent if m["room"] == "s1"]
    assert mine == [(1764700000.125, 0, "Hi!", 0), (1764700000.125, 1, "Pick one:", 1), (1764700000.125, 2, None, 0)]
    assert [(m["ts"], m["part"], m["text"]) for m in sent if m["room"] == "s2"] == [(5.5, 0, "Other")]
    sent.clear()
    asyncio.run(channel.get_output_channel().send_text_message("s1", "no event behind it"))  # e.g. the guard's replies
    assert sent == [{"event": "bot_uttered", "room": "s1", "text": "no event behind it"}]


TRICKY_BOT_EVENTS = [
    ("Hi!\n\nPick one:\n\n", {"buttons": [{"title": "A", "payload": "/a"}], "image": "https://x/i.png"}, {}),
    ("", {"buttons": [{"title": "Only buttons", "payload": "/b"}]}, {}),
    ("\x85\n\nHi\u2028", {}, {}),  # Python's strip() and JavaScript's trim() differ on these
    ("\ufeff\n\nHi", {}, {}),
    ("Both", {"quick_replies": [{"title": "Q", "payload": "/q"}], "buttons": [{"title": "B", "payload": "/b"}]}, {}),
    ("With custom", {"custom": {"data": {"kind": "card"}}, "image": "https://x/j.png", "attachment": "https://x/j.png"}, {}),
    (None, {"attachment": {"type": "file", "payload": {"src": "https://x/f.pdf"}}, "elements": [{"title": "e1"}, {"title": "e2"}]}, {}),
    ("Sam: on my way", {}, {"agent_name": "Sam", "agent": "agent7"}),
]


@pytest.mark.parametrize("text,data,metadata", TRICKY_BOT_EVENTS)
def test_the_pieces_the_page_catches_up_are_the_pieces_the_channel_emits(text, data, metadata,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """crm_store.chat_pieces (behind POST /chat/missed) cuts a stored bot event as Rasa's socket.io channel emits it:
    same (ts, part), text, choices, image and attachment, and the agent's name, so a caught-up piece is matched with
    the live one and nothing is shown twice or left out."""
    from rasa.shared.core.events import BotUttered

    from crm_store.chat_pieces import web_chat_pieces

    monkeypatch.setattr(guard_module, "_GUARD", InputGuard(GuardSettings()))
    channel = SocketIOInput(user_message_evt="user_uttered", bot_message_evt="bot_uttered", session_persistence=True)
    channel.blueprint(lambda _m: asyncio.sleep(0))
    sent: list[dict[str, Any]] = []

    async def emit(event: str, data: Any = None, to: Any = None, room: Any = None, skip_sid: Any = None,
                   namespace: Any = None, callback: Any = None, ignore_queue: bool = False) -> None:
        sent.append(dict(data))  # AsyncServer.emit's own signature: anything else raises, as it does there

    channel.sio.emit = emit  # type: ignore[method-assign]
    event = BotUttered(text, dict(data), metadata=dict(metadata), timestamp=1764700000.123456)
    asyncio.run(channel.get_output_channel().send_response("s1", event.message()))

    def live(m: dict[str, Any]) -> tuple:
        attachment = m.get("attachment")
        image = attachment["payload"]["src"] if isinstance(attachment, dict) and attachment.get("type") == "image" else None
        choices = [(b["title"], b["payload"]) for b in m.get("quick_replies") or []]
        return (m["ts"], m["part"], m.get("text", ""), choices, image, None if image else attachment, m.get("agent_name"))

    def caught_up(p: dict[str, Any]) -> tuple:
        return (p["ts"], p["part"], p["text"], [(b["title"], b["payload"]) for b in p["buttons"]], p["image"],
                p["attachment"], p["agent_name"])

    stored = json.loads(json.dumps(event.as_dict()))  # as the tracker store keeps it
    assert [caught_up(p) for p in web_chat_pieces(stored)] == [live(m) for m in sent if "ts" in m]
    assert all("ts" in m for m in sent if "kind" not in m)  # only a custom payload goes out unnumbered
