"""The console's change feed loses nothing: a row whose transaction commits after a higher id was read (ids come
from sequences on PostgreSQL, commits come in any order) and a read that fails half-way (the live loop reads
again with the same cursor). Each message, signal and photo is delivered once.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import delete, event
from sqlalchemy.orm import Session

from crm_store.db import is_sqlite, session_factory, session_scope
from crm_store.enums import HandoffMessageKind
from crm_store.id_cursor import HOLE_SECONDS, MAX_HOLES, IdCursor
from crm_store.models import ConversationSignal
from crm_store.repositories.console import FeedCursor, add_attachment, add_signal, read_feed
from crm_store.repositories.handoffs import add_handoff_message, get_handoff
from tests.crm_store.test_handoffs import new

PNG = b"\x89PNG\r\n\x1a\nxx"


def of(events: list[dict[str, Any]], conversation: str) -> list[tuple[str, int]]:
    """(type, id) of the message, signal and photo events of one conversation, in feed order."""
    return [(e["type"], e["id"]) for e in events if e["type"] != "handoff" and e["conversation_id"] == conversation]


def write_one_of_each(session: Session, handoff_id: int, conversation: str) -> list[tuple[str, int]]:
    """A note, a typing signal and a photo in the conversation (flushed: ids taken, not committed). A note, not
    a reply: an agent's first reply also updates the handoff row, and two open writers would wait on each other."""
    handoff = get_handoff(session, handoff_id=handoff_id)
    message = add_handoff_message(session, handoff=handoff, kind=HandoffMessageKind.NOTE, author="lena", body="hi")
    signal = add_signal(session, conversation_id=conversation, party="customer", kind="typing")
    photo = add_attachment(session, conversation_id=conversation, handoff=handoff, ticket=None, filename="door.png",
                           content_type="image/png", data=PNG)
    return [("message", message.id), ("signal", signal), ("attachment", photo.id)]


def read(url: str, cursor: FeedCursor, now: float = 0.0) -> list[dict[str, Any]]:
    with session_scope(url, write=False) as s:  # as the live loop reads: a unit of work per read
        return read_feed(s, cursor, now=now)


def test_a_cursor_remembers_ids_missed_below_its_highest_for_a_minute_and_at_most_a_thousand():
    cursor = IdCursor.at(10).advanced([11, 14], now=0.0)
    assert (cursor.last, cursor.holes) == (14, {12: 0.0, 13: 0.0})
    assert cursor.advanced([13], now=5.0).holes == {12: 0.0}  # turned up: read once, forgotten
    assert cursor.advanced([], now=HOLE_SECONDS).holes == {12: 0.0, 13: 0.0}
    assert cursor.advanced([], now=HOLE_SECONDS + 0.1).holes == {}  # a rolled-back insert never turns up
    wide = IdCursor.at(0).advanced([MAX_HOLES + 501], now=0.0)
    assert len(wide.holes) == MAX_HOLES and min(wide.holes) == 501  # the newest ids are kept
    wider = wide.advanced([MAX_HOLES + 510], now=1.0)  # 8 new holes: the 8 oldest went
    assert len(wider.holes) == MAX_HOLES and min(wider.holes) == 509 and list(wider.holes.values()).count(1.0) == 8
    assert wider.pending(now=HOLE_SECONDS + 0.5) == sorted(i for i, since in wider.holes.items() if since == 1.0)


def test_a_row_committed_after_a_higher_id_was_read_is_delivered_at_the_next_read(database_url):
    """The reported loss: the reader moved its cursor to id 11 while id 10's transaction was still open."""
    if is_sqlite(database_url):
        pytest.skip("SQLite has one writer at a time: ids become visible in id order")
    conversation = f"feed-{uuid.uuid4().hex[:8]}"
    with session_scope(database_url) as s:
        handoff_id = new(s, conversation)[0].id
    cursor = FeedCursor()
    read(database_url, cursor)  # the first read only sets the cursor
    slow, fast = session_factory(database_url)(), session_factory(database_url)()
    try:
        late = write_one_of_each(slow, handoff_id, conversation)  # lower ids, still uncommitted
        early = write_one_of_each(fast, handoff_id, conversation)
        fast.commit()
        assert all(low[1] < high[1] for low, high in zip(late, early))
        assert of(read(database_url, cursor, now=1.0), conversation) == early
        slow.commit()
    finally:
        slow.close()
        fast.close()
    assert of(read(database_url, cursor, now=2.0), conversation) == late
    assert of(read(database_url, cursor, now=3.0), conversation) == []  # each one once
    per_table = {"message": cursor.messages, "signal": cursor.signals, "attachment": cursor.attachments}
    assert not [(kind, i) for kind, i in late + early if i in per_table[kind].holes]  # found: no longer asked for


def test_an_id_missed_for_longer_than_hole_seconds_is_given_up(database_url):
    if is_sqlite(database_url):
        pytest.skip("SQLite has one writer at a time: ids become visible in id order")
    conversation = f"feed-{uuid.uuid4().hex[:8]}"
    cursor = FeedCursor()
    read(database_url, cursor)
    slow, fast = session_factory(database_url)(), session_factory(database_url)()
    try:
        late = add_signal(slow, conversation_id=conversation, party="customer", kind="typing")
        early = add_signal(fast, conversation_id=conversation, party="agent", kind="typing", author="lena")
        fast.commit()
        assert of(read(database_url, cursor, now=0.0), conversation) == [("signal", early)]
        assert late in cursor.signals.holes
        assert of(read(database_url, cursor, now=HOLE_SECONDS + 1), conversation) == []
        assert late not in cursor.signals.holes
        slow.commit()
    finally:
        slow.close()
        fast.close()
    assert of(read(database_url, cursor, now=HOLE_SECONDS + 2), conversation) == []


def test_a_hole_filled_later_is_delivered_once_and_not_after_hole_seconds(session):
    """Both databases, in one transaction: a row deleted after its id was taken stands for one not committed
    yet; inserting it again with that id stands for its late commit."""
    conversation = f"feed-{uuid.uuid4().hex[:8]}"
    cursor = FeedCursor()
    read_feed(session, cursor, now=0.0)
    ids = [add_signal(session, conversation_id=conversation, party="customer", kind="typing") for _ in range(4)]
    session.execute(delete(ConversationSignal).where(ConversationSignal.id.in_(ids[1:3])))
    assert of(read_feed(session, cursor, now=1.0), conversation) == [("signal", ids[0]), ("signal", ids[3])]
    session.add(ConversationSignal(id=ids[1], conversation_id=conversation, party="customer", kind="sent"))
    session.flush()
    assert of(read_feed(session, cursor, now=2.0), conversation) == [("signal", ids[1])]
    assert of(read_feed(session, cursor, now=3.0), conversation) == []
    session.add(ConversationSignal(id=ids[2], conversation_id=conversation, party="customer", kind="sent"))
    session.flush()
    assert of(read_feed(session, cursor, now=1.0 + HOLE_SECONDS + 1), conversation) == []  # given up by now


@contextmanager
def failing(session: Session, table: str) -> Iterator[None]:
    """Statements reading ``table`` in the session fail, as a dropped connection would, before reaching it."""

    def fail(_conn, _cursor, statement, _params, _context, _many):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement:
            raise ConnectionError(f"the database went away while reading {table}")

    bind = session.get_bind()
    event.listen(bind, "before_cursor_execute", fail)
    try:
        yield
    finally:
        event.remove(bind, "before_cursor_execute", fail)


def test_a_read_that_fails_half_way_leaves_the_cursor_and_the_retry_delivers_everything_once(session):
    """The reported loss: the snapshot and the message and signal cursors had moved when the photo query failed."""
    cursor = FeedCursor()
    read_feed(session, cursor, now=0.0)
    handoff, _ = new(session)
    conversation = handoff.conversation_id
    written = write_one_of_each(session, handoff.id, conversation)
    before = dataclasses.replace(cursor, handoffs=dict(cursor.handoffs))
    with failing(session, "attachments"), pytest.raises(ConnectionError):
        read_feed(session, cursor, now=1.0)
    assert cursor == before
    events = read_feed(session, cursor, now=2.0)
    assert [(e["id"], e["change"]) for e in events if e["type"] == "handoff"] == [(handoff.id, "new")]
    assert of(events, conversation) == written
    assert read_feed(session, cursor, now=3.0) == []
