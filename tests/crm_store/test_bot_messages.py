"""The web chat's catch-up read of Rasa's tracker store (``TrackerStore.bot_messages``) on SQLite and PostgreSQL:
only the bot's messages of the one conversation, later than ``after``, the first ``limit`` of them, oldest first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crm_store.tracker_store import TrackerStore
from tests.conftest import _create_pg_database, _drop_pg_database, postgres_available


@pytest.fixture(params=["sqlite", "postgresql"])
def tracker(request: pytest.FixtureRequest, tmp_path) -> Iterator[TrackerStore]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield TrackerStore(f"sqlite:///{tmp_path}/tracker.db")
        return
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable")
    name, url = _create_pg_database()
    store = TrackerStore(url)
    try:
        yield store
    finally:
        store.engine.dispose()
        _drop_pg_database(name)


def bot(ts: float, text: str) -> dict:
    return {"event": "bot", "timestamp": ts, "text": text, "data": {"buttons": [{"title": "Yes", "payload": "/affirm"}]}}


def test_only_the_conversations_bot_messages_after_the_given_time_oldest_first(tracker: TrackerStore):
    assert tracker.bot_messages("c1", after=0) == []  # before Rasa created its table: nothing, no error
    tracker.create_schema()
    tracker.append("c1", [{"event": "user", "timestamp": 100.0, "text": "hi"}, bot(100.25, "hello"),
                          {"event": "action", "timestamp": 100.5, "name": "action_listen"}, bot(101.125, "second"),
                          bot(102.0625, "third")])
    tracker.append("c2", [bot(101.5, "someone else's")])
    assert [m["text"] for m in tracker.bot_messages("c1", after=0)] == ["hello", "second", "third"]
    got = tracker.bot_messages("c1", after=100.25)
    assert [(m["timestamp"], m["text"]) for m in got] == [(101.125, "second"), (102.0625, "third")]  # exact floats
    assert got[0]["data"]["buttons"] == [{"title": "Yes", "payload": "/affirm"}]
    assert [m["text"] for m in tracker.bot_messages("c1", after=0, limit=2)] == ["hello", "second"]  # then after 101.125
    assert tracker.bot_messages("c1", after=102.0625) == [] and tracker.bot_messages("nobody", after=0) == []
