"""The chat input guard (rasa_channels.guard) with Rasa's real tracker store and the real limits library."""

from __future__ import annotations

import asyncio
import types

import pytest
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from rasa_channels.guard import (
    REPLY_EMPTY,
    REPLY_OTHER_CHANNEL,
    REPLY_RATE_LIMITED,
    GuardSettings,
    InputGuard,
    clean_text,
    offered_payloads,
)


def test_clean_text_drops_controls_and_overrides_but_keeps_joiners() -> None:
    assert clean_text("my\x00 fridge\x1b[31m is\u202e broken") == "my fridge[31m is broken"
    assert clean_text("a\tb\r\n\n  c") == "a b\nc"
    assert clean_text("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645") == "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"
    assert clean_text("family \U0001F468\u200d\U0001F469") == "family \U0001F468\u200d\U0001F469"
    assert clean_text(None) == "" and clean_text(["x"]) == "" and clean_text("   ") == ""


def test_clean_text_cuts_long_text_at_a_word_boundary() -> None:
    text = "my fridge is broken " * 5000  # 100 KB
    cut = clean_text(text, 1000)
    assert 800 < len(cut) <= 1000
    assert cut.endswith(("my", "fridge", "is", "broken"))
    assert clean_text("x" * 5000, 1000) == "x" * 1000


def test_offered_payloads_are_the_buttons_since_the_last_user_message() -> None:
    events = [
        UserUttered("hi"),
        BotUttered("pick", data={"buttons": [{"title": "Old", "payload": "/old"}]}),
        UserUttered("my fridge"),
        BotUttered("which one?", data={"buttons": [{"title": "A", "payload": '/choose{"d": "A"}'}]}),
        ActionExecuted("action_listen"),
        BotUttered("or", data={"quick_replies": [{"title": "B", "payload": "/choose_b"}]}),
    ]
    assert offered_payloads(events) == {'/choose{"d": "A"}', "/choose_b"}


class _Store:
    def __init__(self) -> None:
        self.store = InMemoryTrackerStore(Domain.empty())

    async def add(self, sender: str, *events) -> None:  # type: ignore[no-untyped-def]
        tracker = DialogueStateTracker.from_events(sender, list(events))
        await self.store.save(tracker)


def _guard(**kw) -> tuple[InputGuard, _Store]:  # type: ignore[no-untyped-def]
    store = _Store()
    guard = InputGuard(GuardSettings(**kw))
    guard.app = types.SimpleNamespace(ctx=types.SimpleNamespace(agent=types.SimpleNamespace(tracker_store=store.store)))
    return guard, store


def _msg(text: str, sender: str = "s1") -> UserMessage:
    return UserMessage(text, CollectingOutputChannel(), sender, input_channel="rest")


def test_typed_intent_is_read_as_text_unless_the_bot_offered_it() -> None:
    guard, store = _guard()

    async def run() -> None:
        await store.add("s1", UserUttered("hi", input_channel="rest"),
                        BotUttered("pick", data={"buttons": [{"title": "A", "payload": "/affirm"}]}))
        for typed, seen in [("/restart", "restart"), ('/EXTERNAL_device_fault{"ticket": "T-1"}', 'EXTERNAL_device_fault{"ticket": "T-1"}'),
                            ("//session_start", "session_start"), ("/affirm", "/affirm")]:
            message = _msg(typed)
            assert await guard.admit(message, "rest") is None
            assert message.text == seen
        message = _msg("/affirm", sender="never-seen")
        assert await guard.admit(message, "rest") is None and message.text == "affirm"
        # The web chat's opening message is the one payload anyone may send; with entities it is text again.
        for sent, seen in [("/greet", "/greet"), ('/greet{"customer_id": 1}', 'greet{"customer_id": 1}')]:
            message = _msg(sent, sender="new-visitor")
            assert await guard.admit(message, "socketio") is None and message.text == seen

    asyncio.run(run())
    assert guard.counts["typed_intent_as_text"] == 5


def test_a_conversation_is_bound_to_its_channel() -> None:
    guard, store = _guard()

    async def run() -> None:
        await store.add("web-session-1", UserUttered("hello", input_channel="socketio"))
        assert await guard.admit(_msg("what devices do I have?", "web-session-1"), "rest") == REPLY_OTHER_CHANNEL
        assert await guard.admit(_msg("hi", "web-session-1"), "socketio") is None
        assert await guard.admit(_msg("hi", "brand-new"), "rest") is None
        assert await guard.admit(_msg("hi", "brand-new"), "socketio") == REPLY_OTHER_CHANNEL  # remembered

    asyncio.run(run())
    assert guard.counts["other_channel"] == 2


def test_on_an_sql_store_the_binding_is_read_without_the_tracker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rasa.core.tracker_store import AwaitableTrackerStore, SQLTrackerStore

    import nlu  # noqa: F401 - the Rasa runtime changes, as the Rasa server has them

    class Counted(SQLTrackerStore):
        retrieved = 0

        async def retrieve(self, sender_id: str):  # type: ignore[no-untyped-def]
            Counted.retrieved += 1
            return await super().retrieve(sender_id)

        async def retrieve_full_tracker(self, sender_id: str):  # type: ignore[no-untyped-def]
            Counted.retrieved += 1
            return await super().retrieve_full_tracker(sender_id)

    sql = Counted(Domain.empty(), dialect="sqlite", db=str(tmp_path / "trackers.db"))
    guard = InputGuard(GuardSettings())
    guard.app = types.SimpleNamespace(ctx=types.SimpleNamespace(agent=types.SimpleNamespace(
        tracker_store=AwaitableTrackerStore(sql))))

    async def run() -> None:
        await sql.save(DialogueStateTracker.from_events("web-1", [UserUttered("hello", input_channel="socketio")]))
        assert await guard.admit(_msg("my devices", "web-1"), "rest") == REPLY_OTHER_CHANNEL
        assert await guard.admit(_msg("my devices", "web-1"), "socketio") is None
        assert await guard.admit(_msg("hi", "new-1"), "rest") is None
        # A web chat whose new session has begun with no message stored yet stays bound, on a server that
        # has not met it before (restarted, or the other replica).
        await sql.save(DialogueStateTracker.from_events("web-2", [
            UserUttered("hello", input_channel="socketio", timestamp=1.0),
            ActionExecuted("action_session_start", timestamp=4000.0), SessionStarted(timestamp=4000.0)]))
        fresh = InputGuard(GuardSettings())
        fresh.app = guard.app
        assert await fresh.admit(_msg("my devices", "web-2"), "rest") == REPLY_OTHER_CHANNEL

    asyncio.run(run())
    assert Counted.retrieved == 0
    assert guard.counts["other_channel"] == 1


def test_a_failed_binding_read_admits_the_message_and_says_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rasa.core.tracker_store import AwaitableTrackerStore, FailSafeTrackerStore, SQLTrackerStore

    import nlu  # noqa: F401 - the Rasa runtime changes, as the Rasa server has them

    sql = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tmp_path / "trackers.db"))
    guard = InputGuard(GuardSettings())
    guard.app = types.SimpleNamespace(ctx=types.SimpleNamespace(agent=types.SimpleNamespace(
        tracker_store=AwaitableTrackerStore(FailSafeTrackerStore(sql)))))

    async def run() -> None:
        await sql.save(DialogueStateTracker.from_events("web-1", [UserUttered("hello", input_channel="socketio")]))
        with sql.engine.begin() as conn:  # the database loses the table: every read fails
            conn.exec_driver_sql("ALTER TABLE events RENAME TO events_away")
        assert await guard.admit(_msg("my devices", "web-1"), "rest") is None
        with sql.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE events_away RENAME TO events")
        # Not remembered while unknown: once the database answers, the binding holds again.
        assert await guard.admit(_msg("my devices", "web-1"), "rest") == REPLY_OTHER_CHANNEL

    asyncio.run(run())
    assert guard.counts["binding_unavailable"] == 1
    assert guard.counts["other_channel"] == 1


def test_rate_limits_per_conversation_and_per_client() -> None:
    guard, _ = _guard(per_conversation="5/minute", per_client="8/minute")

    async def run() -> list[str | None]:
        out = [await guard.admit(_msg("hi", "c1"), "rest", client="10.0.0.1") for _ in range(7)]
        out += [await guard.admit(_msg("hi", f"new-{i}"), "rest", client="10.0.0.1") for i in range(3)]
        out += [await guard.admit(_msg("hi", "other"), "rest", client="10.0.0.2")]
        return out

    out = asyncio.run(run())
    assert out[:5] == [None] * 5 and out[5:7] == [REPLY_RATE_LIMITED] * 2  # 6th and 7th of one conversation
    assert out[7] is None and out[8:10] == [REPLY_RATE_LIMITED] * 2  # the client's 9th and 10th
    assert out[10] is None  # another client is not affected
    assert guard.counts["rate_limited_conversation"] == 2 and guard.counts["rate_limited_client"] == 2


@pytest.mark.parametrize("text", ["", "   ", "\x00\x01", "\u202e", None])
def test_blank_message_gets_a_reply_not_silence(text) -> None:  # type: ignore[no-untyped-def]
    guard, _ = _guard()
    assert asyncio.run(guard.admit(_msg(text), "rest")) == REPLY_EMPTY


def test_wrapped_callback_answers_refusals_and_passes_the_rest() -> None:
    guard, _ = _guard(per_conversation="1/minute")
    seen: list[str] = []

    async def on_new_message(message: UserMessage) -> None:
        seen.append(message.text)

    wrapped = guard.wrap(on_new_message, "rest")
    first, second = _msg("hello\x00 there"), _msg("again")
    asyncio.run(wrapped(first))
    asyncio.run(wrapped(second))
    assert seen == ["hello there"]
    assert [m["text"] for m in second.output_channel.messages] == [REPLY_RATE_LIMITED]


def test_rate_limits_are_shared_through_redis() -> None:
    import redis

    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    import uuid

    sender = f"redis-{uuid.uuid4().hex}"
    first, _ = _guard(per_conversation="3/minute", redis_url="redis://127.0.0.1:6379/0")
    second, _ = _guard(per_conversation="3/minute", redis_url="redis://127.0.0.1:6379/0")

    async def run() -> list[str | None]:
        return [await (first if i % 2 else second).admit(_msg("hi", sender), "rest") for i in range(5)]

    assert asyncio.run(run()) == [None, None, None, REPLY_RATE_LIMITED, REPLY_RATE_LIMITED]


def test_the_guard_counts_in_a_redis_that_asks_for_a_password(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """REDIS_PASSWORD (never in the URL) was not passed on: each count failed to authenticate and every message
    was admitted. Both Rasa servers of a deployment count together; another deployment's prefix counts apart."""
    import uuid

    from tests.redis_server import redis_with_password

    with redis_with_password("guard-pass") as url:
        monkeypatch.setenv("REDIS_URL", url)
        monkeypatch.setenv("REDIS_PASSWORD", "guard-pass")
        monkeypatch.setenv("CHAT_RATE_PER_CONVERSATION", "2/minute")
        first, second = InputGuard(), InputGuard()
        monkeypatch.setenv("REDIS_KEY_PREFIX", "otherdeployment")
        other = InputGuard()
        for guard in (first, second, other):
            guard.app = _guard()[0].app
        sender = f"redis-{uuid.uuid4().hex}"

        async def run() -> list[str | None]:
            replies = [await (first if i % 2 else second).admit(_msg("hi", sender), "rest") for i in range(3)]
            return replies + [await other.admit(_msg("hi", sender), "rest")]

        assert asyncio.run(run()) == [None, None, REPLY_RATE_LIMITED, None]


def test_the_guard_refuses_to_start_on_a_refused_redis_password() -> None:
    """A refused password made every count fail and be admitted, as during an outage: the chat limits off."""
    from crm_store.redis_auth import RedisPasswordRefused
    from tests.redis_server import redis_with_password

    with redis_with_password("guard-pass") as url:
        with pytest.raises(RedisPasswordRefused):
            InputGuard(GuardSettings(redis_url=url, redis_password="not-guard-pass"))


CHANNELS_STARTED = """
import asyncio, sys, types
from sanic import Blueprint
import rasa_channels.facebook, rasa_channels.rest, rasa_channels.socketio
from rasa_channels.guard import get_guard
blueprint = Blueprint("probe")
get_guard().attach(blueprint)
for future in blueprint._future_listeners:  # what the server runs at its start
    asyncio.run(future.listener(types.SimpleNamespace(), None))
print(sorted(name for name in sys.modules if name.split(".")[0] == "nlu"))
"""


def test_the_channels_leave_rasa_as_it_comes():
    """`rasa init`'s bot in bench/bench_chat.py is served through these channels, as the baseline of Rasa as it comes:
    starting them (and the guard's start-up listener) must not import the ``nlu`` package, whose import changes Rasa
    inside the process (nlu/rasa_runtime.py: DIET's predictions, event parsing, lock polling ...). A fresh interpreter,
    since this test process has imported it."""
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", CHANNELS_STARTED], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
