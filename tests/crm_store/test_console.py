"""Console repository on SQLite and PostgreSQL: the change feed the push streams are fed from, canned
responses (one per title, also when saved at once), search over closed conversations, photos."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session

from crm_store.db import make_engine
from crm_store.enums import HandoffMessageKind, HandoffStatus, UserRole
from crm_store.errors import ConflictError
from crm_store.models import CannedResponse
from crm_store.repositories.console import (
    FeedCursor,
    add_attachment,
    add_signal,
    current_agent,
    list_attachments,
    read_feed,
    save_canned,
    search_handoffs,
)
from crm_store.repositories.handoffs import add_handoff_message, claim_handoff, close_handoff
from crm_store.repositories.users import create_user
from tests.crm_store.test_handoffs import new


def test_feed_reports_new_handoffs_claims_messages_signals_and_closing(session):
    cursor = FeedCursor()
    assert read_feed(session, cursor) == []  # the first read only sets the cursor
    handoff, _ = new(session)
    events = read_feed(session, cursor)
    assert [(e["type"], e["id"], e["change"]) for e in events] == [("handoff", handoff.id, "new")]
    assert read_feed(session, cursor) == []  # nothing changed since
    agent = create_user(session, username=f"a-{uuid.uuid4().hex[:6]}", password="x" * 12, role=UserRole.AGENT,
                        full_name="Lena Berg")
    claim_handoff(session, handoff=handoff, user=agent)
    add_handoff_message(session, handoff=handoff, kind=HandoffMessageKind.AGENT, author=agent.username, body="hi")
    signal = add_signal(session, conversation_id=handoff.conversation_id, party="customer", kind="typing")
    events = read_feed(session, cursor)
    assert events[0]["type"] == "handoff" and events[-1]["type"] == "signal"
    assert events[0]["status"] == "assigned" and events[0]["agent_name"] == "Lena"
    assert "agent" in [e["kind"] for e in events if e["type"] == "message"]
    assert events[-1]["id"] == signal and events[-1]["party"] == "customer"
    assert current_agent(session, conversation_id=handoff.conversation_id) == "Lena"
    close_handoff(session, handoff=handoff, status=HandoffStatus.RESOLVED, author=agent.username)
    events = read_feed(session, cursor)
    assert [(e["type"], e["status"]) for e in events if e["type"] == "handoff"] == [("handoff", "resolved")]
    assert current_agent(session, conversation_id=handoff.conversation_id) is None
    assert handoff.id not in cursor.handoffs  # closed ones leave the snapshot


def test_search_finds_closed_conversations_by_conversation_id(session):
    handoff, _ = new(session, f"findme-{uuid.uuid4().hex[:6]}")
    agent = create_user(session, username=f"a-{uuid.uuid4().hex[:6]}", password="x" * 12, role=UserRole.AGENT)
    claim_handoff(session, handoff=handoff, user=agent)
    close_handoff(session, handoff=handoff, status=HandoffStatus.HANDED_BACK, author=agent.username)
    found = search_handoffs(session, query=handoff.conversation_id[:12].upper())
    assert [h.id for h in found] == [handoff.id]
    assert search_handoffs(session, query="no-such-conversation-anywhere") == []


def test_photos_listed_by_conversation(session):
    handoff, _ = new(session)
    photo = add_attachment(session, conversation_id=handoff.conversation_id, handoff=handoff, ticket=None,
                           filename="door.png", content_type="image/png", data=b"\x89PNG\r\n\x1a\nxx")
    assert [a.id for a in list_attachments(session, handoff=handoff)] == [photo.id]
    assert photo.size == 10 and len(photo.sha256) == 64


def test_canned_title_taken_is_a_conflict(session):
    title = f"Greeting {uuid.uuid4().hex[:6]}"
    save_canned(session, title=title, body="Hello {first_name}", author="sup")
    with pytest.raises(ConflictError):
        save_canned(session, title=title, body="other", author="sup")


def test_racing_saves_of_one_canned_title_keep_one(database_url):
    engine = make_engine(database_url)
    title = f"Race {uuid.uuid4().hex[:6]}"
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def save() -> None:
        with Session(engine) as s:
            barrier.wait()
            try:
                save_canned(s, title=title, body="x", author="sup")
                s.commit()
                outcomes.append("saved")
            except ConflictError:
                s.rollback()
                outcomes.append("conflict")
            except Exception as exc:  # SQLite: a writer that waited past its timeout
                outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert outcomes.count("saved") == 1 and outcomes.count("conflict") == 3, outcomes
    finally:
        with Session(engine) as s:
            s.execute(delete(CannedResponse).where(CannedResponse.title == title))
            s.commit()
        engine.dispose()
