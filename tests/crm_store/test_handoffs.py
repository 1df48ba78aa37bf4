"""Handoff repository on SQLite and PostgreSQL: one active handoff per conversation, queue order, closing."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from sqlalchemy.orm import Session

from crm_store.db import make_engine
from crm_store.enums import ApplianceCategory, HandoffReason, HandoffStatus, TicketPriority, UserRole
from crm_store.errors import ConflictError, InvalidTransitionError
from crm_store.models import utcnow
from crm_store.repositories.handoffs import (
    Skills,
    claim_handoff,
    close_handoff,
    create_handoff,
    get_active_handoff,
    list_handoffs,
    queue_position,
    sla_breached,
)
from crm_store.repositories.users import create_user


def new(session: Session, conversation: str | None = None, *, priority=TicketPriority.NORMAL, due_in: int = 15,
        category=None, language="en"):
    handoff, created = create_handoff(
        session, conversation_id=conversation or f"c-{uuid.uuid4().hex[:8]}", channel="socketio", customer_id=None,
        ticket_id=None, reason=HandoffReason.CUSTOMER_REQUEST, trigger_key="customer_request", priority=priority,
        language=language, category=category, summary="", packet={},
        first_response_due_at=utcnow() + dt.timedelta(minutes=due_in),
    )
    return handoff, created


def test_queue_order_and_positions(session):
    normal_late, _ = new(session, due_in=1)
    urgent, _ = new(session, priority=TicketPriority.URGENT, due_in=2)
    normal, _ = new(session, due_in=10)
    ours = [h.id for h in list_handoffs(session) if h.id in {normal_late.id, urgent.id, normal.id}]
    assert ours == [urgent.id, normal_late.id, normal.id]
    assert queue_position(session, handoff=urgent) < queue_position(session, handoff=normal_late) < queue_position(session, handoff=normal)


def test_one_active_handoff_per_conversation_then_a_new_one_after_closing(session):
    first, created = new(session, "conv-1")
    again, created_again = new(session, "conv-1")
    assert created and not created_again and again.id == first.id
    agent = create_user(session, username=f"a-{uuid.uuid4().hex[:6]}", password="x" * 12, role=UserRole.AGENT)
    claim_handoff(session, handoff=first, user=agent)
    other = create_user(session, username=f"b-{uuid.uuid4().hex[:6]}", password="x" * 12, role=UserRole.AGENT)
    with pytest.raises(ConflictError):
        claim_handoff(session, handoff=first, user=other)
    close_handoff(session, handoff=first, status=HandoffStatus.RESOLVED, author=agent.username)
    with pytest.raises(InvalidTransitionError):
        close_handoff(session, handoff=first, status=HandoffStatus.HANDED_BACK, author=agent.username)
    assert get_active_handoff(session, conversation_id="conv-1") is None
    second, created = new(session, "conv-1")
    assert created and second.id != first.id


def test_sla_breach_means_no_first_reply_by_the_due_time(session):
    late, _ = new(session, due_in=-1)
    on_time, _ = new(session, due_in=5)
    assert sla_breached(late) and not sla_breached(on_time)
    on_time.first_response_at = on_time.first_response_due_at + dt.timedelta(seconds=1)
    assert sla_breached(on_time)


def test_skills_match_category_and_language(session):
    boiler_de, _ = new(session, category=ApplianceCategory.BOILER, language="de")
    assert Skills().accepts(boiler_de)
    assert Skills(categories=frozenset({"boiler"}), languages=frozenset({"de", "en"})).accepts(boiler_de)
    assert not Skills(categories=frozenset({"fridge"})).accepts(boiler_de)
    assert not Skills(languages=frozenset({"en"})).accepts(boiler_de)


def test_racing_escalations_of_one_conversation_queue_one_handoff(database_url):
    engine = make_engine(database_url)
    conversation = f"race-{uuid.uuid4().hex[:8]}"
    results: list[tuple[int, bool]] = []
    barrier = threading.Barrier(4)

    def escalate() -> None:
        with Session(engine) as s:
            barrier.wait()
            handoff, created = new(s, conversation)
            s.commit()
            results.append((handoff.id, created))

    threads = [threading.Thread(target=escalate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len({hid for hid, _ in results}) == 1 and sum(c for _, c in results) == 1
    finally:
        engine.dispose()
