"""nlu.sql_tracker_store: Rasa's SQL tracker store, read and saved through SQLAlchemy Core, stores the same rows and
reads back the same trackers as Rasa's own code, on SQLite and PostgreSQL (its speed is measured by
`make bench-chat`, not here)."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid

import pytest
import sqlalchemy as sa
from rasa.core.tracker_store import AwaitableTrackerStore, FailSafeTrackerStore, InMemoryTrackerStore, SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

import nlu  # noqa: F401 - importing the package applies the Rasa runtime changes, as loading a model does
from nlu.sql_tracker_store import RASA, remembered
from rasa_channels.channel_binding import NOT_SQL, latest_input_channel

DOMAIN = Domain.from_dict({"intents": ["greet", "report_problem"], "entities": ["appliance"],
                           "slots": {"appliance": {"type": "text", "mappings": [{"type": "from_entity", "entity": "appliance"}]}},
                           "actions": ["action_greet"]})
COLUMNS = ("sender_id", "type_name", "timestamp", "intent_name", "action_name", "data")


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    """Two empty tracker stores of one kind: one for this project's code, one for Rasa's own."""
    if request.param == "sqlite":
        yield [SQLTrackerStore(DOMAIN, dialect="sqlite", db=str(tmp_path / f"{name}.db")) for name in ("ours", "rasa")]
        return
    names = [f"tracker_{name}_{uuid.uuid4().hex[:8]}" for name in ("ours", "rasa")]
    try:
        made = [SQLTrackerStore(DOMAIN, dialect="postgresql", host="127.0.0.1", port=5432, db=name,
                                username="postgres", login_db="postgres") for name in names]
    except Exception as err:  # noqa: BLE001 - any connection error
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed: {err}")
    yield made
    for store in made:
        store.engine.dispose()
    admin = sa.create_engine("postgresql://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def rows(store: SQLTrackerStore) -> list[tuple]:
    table = SQLTrackerStore.SQLEvent.__table__
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(*(table.c[c] for c in COLUMNS)).order_by(table.c.id))]


def turn(n: int, t: float) -> list:
    return [UserUttered(f"my washer {n}", {"name": "report_problem", "confidence": 0.9},
                        [{"entity": "appliance", "value": "washer", "start": 3, "end": 9}], timestamp=t),
            SlotSet("appliance", "washer", timestamp=t + 0.1),
            ActionExecuted("action_greet", timestamp=t + 0.2),
            BotUttered(f"answer {n}", timestamp=t + 0.3),
            ActionExecuted("action_listen", timestamp=t + 0.4)]


def run_conversation(store: SQLTrackerStore, save, retrieve) -> list[list[dict]]:  # type: ignore[no-untyped-def]
    """Turns saved on a tracker read back each time, a second session started in the middle of one, a tracker
    saved twice, and a second conversation, with time going forwards; returns what each read saw."""
    seen = []
    tracker = DialogueStateTracker("c1", DOMAIN.slots)
    tracker.update_with_events([ActionExecuted("action_session_start", timestamp=1.0), SessionStarted(timestamp=1.0),
                                ActionExecuted("action_listen", timestamp=1.0)], DOMAIN, override_timestamp=False)
    asyncio.run(save(store, tracker))
    for n in range(3):
        tracker = asyncio.run(retrieve(store, "c1", False))
        seen.append([e.as_dict() for e in tracker.events])
        tracker.update_with_events(turn(n, 10.0 + 10 * n), DOMAIN, override_timestamp=False)
        if n == 1:  # the session expired: this turn starts a new one
            tracker.update_with_events([ActionExecuted("action_session_start", timestamp=21.0),
                                        SessionStarted(timestamp=21.0), ActionExecuted("action_listen", timestamp=21.0)],
                                       DOMAIN, override_timestamp=False)
        asyncio.run(save(store, tracker))
        tracker.update_with_events(turn(10 + n, 15.0 + 10 * n), DOMAIN, override_timestamp=False)  # saved twice
        asyncio.run(save(store, tracker))
    other = DialogueStateTracker("c2", DOMAIN.slots)
    other.update_with_events(turn(99, 50.0), DOMAIN, override_timestamp=False)
    asyncio.run(save(store, other))
    for sender in ("c1", "c2"):
        for everything in (False, True):
            seen.append([e.as_dict() for e in asyncio.run(retrieve(store, sender, everything)).events])
    return seen


def test_the_same_rows_and_trackers_as_rasas_own_code(stores):
    ours, rasa = stores
    mine = run_conversation(ours, SQLTrackerStore.save, SQLTrackerStore._retrieve)
    theirs = run_conversation(rasa, RASA["save"], RASA["_retrieve"])
    assert rows(ours) == rows(rasa)
    assert mine == theirs
    assert {r[0] for r in rows(ours)} == {"c1", "c2"}
    assert asyncio.run(ours.retrieve("nobody")) is None


def test_a_tracker_read_a_moment_ago_is_saved_without_counting_the_stored_events(stores):
    store = stores[0]
    tracker = DialogueStateTracker("c1", DOMAIN.slots)
    tracker.update_with_events(turn(0, 1.0), DOMAIN, override_timestamp=False)
    asyncio.run(store.save(tracker))  # a new conversation's tracker: counted, as Rasa does
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute",
                    lambda _c, _cur, statement, *_a: statements.append(statement.lower()))
    read = asyncio.run(store.retrieve("c1"))
    assert remembered(read) == 5
    assert remembered(copy.deepcopy(read)) is None  # a copy is another tracker: counted, never trusted
    read.update_with_events(turn(1, 2.0), DOMAIN, override_timestamp=False)
    asyncio.run(store.save(read))
    assert sum("count(" in s for s in statements) == 0
    assert sum(s.startswith("insert") for s in statements) == 1  # one multi-row INSERT for the turn
    assert remembered(read) == 10
    assert [e.text for e in asyncio.run(store.retrieve("c1")).events if isinstance(e, UserUttered)] == [
        "my washer 0", "my washer 1"]


def test_a_conversation_erased_during_a_turn_gets_back_only_that_turns_events(stores):
    store = stores[0]
    tracker = DialogueStateTracker("c1", DOMAIN.slots)
    tracker.update_with_events(turn(0, 1.0), DOMAIN, override_timestamp=False)
    asyncio.run(store.save(tracker))
    read = asyncio.run(store.retrieve("c1"))
    with store.engine.begin() as conn:  # crm_store.erase deletes the conversation meanwhile
        conn.execute(sa.text("DELETE FROM events WHERE sender_id = 'c1'"))
    read.update_with_events(turn(1, 2.0), DOMAIN, override_timestamp=False)
    asyncio.run(store.save(read))
    assert [r[5] for r in rows(store) if '"my washer 0"' in r[5]] == []  # the erased turn is not written back
    assert len(rows(store)) == 5


def test_latest_input_channel_is_the_full_trackers_from_one_row(stores):
    store = stores[0]
    wrapped = AwaitableTrackerStore(FailSafeTrackerStore(store))  # as Rasa's server holds its store
    saved = DialogueStateTracker("c1", DOMAIN.slots)

    def answers() -> tuple:
        tracker = asyncio.run(store.retrieve_full_tracker("c1"))
        expected = tracker.get_latest_input_channel() if tracker is not None else None
        return asyncio.run(latest_input_channel(wrapped, "c1")), expected

    assert answers() == (None, None)  # unknown conversation
    saved.update_with_events([ActionExecuted("action_session_start", timestamp=1.0), SessionStarted(timestamp=1.0)],
                             DOMAIN, override_timestamp=False)
    asyncio.run(store.save(saved))
    assert answers() == (None, None)  # no user message yet
    saved.update_with_events([UserUttered("hi", input_channel="rest", timestamp=2.0),
                              UserUttered("hello", input_channel="socketio", timestamp=3.0),
                              BotUttered("hi there", timestamp=4.0)], DOMAIN, override_timestamp=False)
    asyncio.run(store.save(saved))
    assert answers() == ("socketio", "socketio")  # the latest user message's, not the first's
    saved.update_with_events([ActionExecuted("action_session_start", timestamp=5.0), SessionStarted(timestamp=5.0)],
                             DOMAIN, override_timestamp=False)
    asyncio.run(store.save(saved))
    # A new session without a user message yet: still the conversation's channel (the current session's
    # tracker, which Rasa's retrieve reads, has none).
    assert answers() == ("socketio", "socketio")
    assert asyncio.run(store.retrieve("c1")).get_latest_input_channel() is None
    saved.update_with_events([UserUttered("back", input_channel="facebook", timestamp=6.0)], DOMAIN,
                             override_timestamp=False)
    asyncio.run(store.save(saved))
    assert answers() == ("facebook", "facebook")
    # A triggered intent stored without a channel does not unbind the conversation (Rasa's answer would be None).
    saved.update_with_events([UserUttered.create_external("EXTERNAL_device_fault", input_channel=None)], DOMAIN)
    asyncio.run(store.save(saved))
    assert answers() == ("facebook", None)
    assert asyncio.run(latest_input_channel(InMemoryTrackerStore(DOMAIN), "c1")) is NOT_SQL


def _rows_read(node: dict) -> int:
    """Rows a PostgreSQL plan node and its children produced or filtered away (EXPLAIN ANALYZE, JSON)."""
    own = sum(node.get(key, 0) for key in ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck"))
    return own * node.get("Actual Loops", 1) + sum(_rows_read(child) for child in node.get("Plans", []))


def test_latest_input_channel_reads_the_conversations_rows_not_the_tables(stores):
    """A customer back after 300,000 other events: the lookup reads about their rows, not everyone's since."""
    store = stores[0]
    if store.engine.dialect.name != "postgresql":
        pytest.skip("the planner's choice of index is PostgreSQL's")
    user = json.dumps(UserUttered("my washer", input_channel="socketio").as_dict())
    with store.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO events (sender_id, type_name, timestamp, data) SELECT 'back', t, g, "
            "CASE WHEN t = 'user' THEN :user ELSE '{}' END FROM (SELECT g, CASE WHEN g % 50 = 0 THEN 'session_started' "
            "WHEN g % 3 = 0 THEN 'user' ELSE 'bot' END AS t FROM generate_series(1, 990) g) x"), {"user": user})
        conn.execute(sa.text(
            "INSERT INTO events (sender_id, type_name, timestamp, data) SELECT 'c' || (g / 10), "
            "CASE WHEN g % 3 = 0 THEN 'user' ELSE 'bot' END, 1000 + g, :user FROM generate_series(1, 300000) g"),
            {"user": user})
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE events"))
    statements: list[tuple] = []
    listener = lambda _c, _cur, statement, parameters, *_a: statements.append((statement, parameters))  # noqa: E731
    sa.event.listen(store.engine, "before_cursor_execute", listener)
    assert asyncio.run(latest_input_channel(store, "back")) == "socketio"
    sa.event.remove(store.engine, "before_cursor_execute", listener)
    statement, parameters = next(s for s in statements if s[0].lstrip().lower().startswith("select"))
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0][0]["Plan"]
    finally:
        raw.close()
    # The conversation's 990 rows, index and heap counted: ~2,000, not 300,000.
    assert _rows_read(plan) < 10_000, _tree(plan)


def _tree(node: dict, depth: int = 0) -> str:
    line = (f"{'  ' * depth}{node['Node Type']} {node.get('Index Name', '')} rows={node.get('Actual Rows')} "
            f"removed={node.get('Rows Removed by Filter', 0)} loops={node.get('Actual Loops')}")
    return "\n".join([line, *(_tree(child, depth + 1) for child in node.get("Plans", []))])
