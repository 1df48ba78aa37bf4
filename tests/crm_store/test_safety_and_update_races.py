"""Issue 16, cases 6 and 10 (the database's side), on SQLite and PostgreSQL with racing threads:

- one open handoff per safety-critical fault, whichever paths race for it (the device worker's callback for a
  customer it cannot reach, the chat's action in one or two conversations, a retried delivery);
- a staff status change queues exactly one message for the customer, in the change's own transaction: racing
  requests for the same change queue one, a change that loses or rolls back queues none.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from crm_store.db import session_scope
from crm_store.enums import (
    ApplianceCategory,
    HandoffReason,
    HandoffStatus,
    ProactiveKind,
    ProactiveStatus,
    TicketEventKind,
    TicketPriority,
    TicketSource,
    TicketStatus,
)
from crm_store.errors import ConflictError
from crm_store.models import Handoff, ProactiveMessage, TicketEvent, utcnow
from crm_store.repositories.handoffs import create_handoff
from crm_store.repositories.proactive import get_message, last_status_change_id, queue_ticket_update
from crm_store.repositories.safety_handoffs import open_safety_handoff, queue_safety_callback
from crm_store.repositories.tickets import change_ticket_status, get_ticket_by_number, open_ticket
from tests.crm_store.conftest import Factory
from tests.races import race

ROUNDS = 12
RACERS = 6


def safety_fault(url: str, *, status: ProactiveStatus = ProactiveStatus.HELD) -> tuple[int, int]:
    """A safety-critical device ticket and its outbox message (held: the customer could not be told)."""
    with session_scope(url) as s:
        f = Factory(s)
        customer = f.customer()
        device = f.device(customer)
        ticket, _ = open_ticket(s, customer_id=customer.id, device_id=device.id, source=TicketSource.DEVICE,
                                category="F05", title="Leak detected near electrical parts", dedup_key="fault:F05",
                                author="device", fault_code="F05", priority=TicketPriority.URGENT)
        message = ProactiveMessage(customer_id=customer.id, ticket_id=ticket.id, kind=ProactiveKind.DEVICE_FAULT,
                                   status=status, safety_critical=True, reason="unreachable")
        s.add(message)
        s.flush()
        return ticket.id, message.id


def chat_handoff(url: str, ticket_id: int, conversation_id: str) -> int:
    """What the chat's escalation does for the fault (actions.handoff.escalate)."""
    with session_scope(url) as s:
        message_ticket = s.get(ProactiveMessage, s.scalar(select(ProactiveMessage.id).where(ProactiveMessage.ticket_id == ticket_id)))
        handoff, _ = create_handoff(
            s, conversation_id=conversation_id, channel="socketio", customer_id=message_ticket.customer_id,
            ticket_id=ticket_id, reason=HandoffReason.SAFETY_FAULT, trigger_key=f"safety_fault:{ticket_id}",
            priority=TicketPriority.URGENT, language="en", category=ApplianceCategory.WASHING_MACHINE,
            summary="safety", packet={}, first_response_due_at=utcnow() + dt.timedelta(minutes=2),
        )
        return handoff.id


def worker_callback(url: str, message_id: int) -> int:
    """What the device worker does for a held safety fault (device_hooks.notifier)."""
    with session_scope(url) as s:
        handoff, _ = queue_safety_callback(s, message=get_message(s, message_id=message_id), conversation_id=None,
                                           priority=TicketPriority.URGENT,
                                           first_response_due_at=utcnow() + dt.timedelta(minutes=2))
        return handoff.id


def open_safety_handoffs(url: str, ticket_id: int) -> list[Handoff]:
    with session_scope(url) as s:
        return list(s.scalars(select(Handoff).where(
            Handoff.ticket_id == ticket_id, Handoff.reason == HandoffReason.SAFETY_FAULT,
            Handoff.status.in_([HandoffStatus.QUEUED, HandoffStatus.ASSIGNED, HandoffStatus.CALLBACK]))))


def test_the_worker_and_chats_racing_for_one_safety_fault_queue_one_handoff(database_url):
    for r in range(ROUNDS):
        ticket_id, message_id = safety_fault(database_url)

        def step(i: int) -> int:
            # Half the racers are the worker (retried, or two workers), half the chat in two conversations.
            return worker_callback(database_url, message_id) if i % 2 else chat_handoff(database_url, ticket_id, f"chat-{r}-{i % 4}")

        outcomes = race(RACERS, step)
        assert all(o.ok for o in outcomes), outcomes
        [handoff] = open_safety_handoffs(database_url, ticket_id)
        assert {o.value for o in outcomes} == {handoff.id}  # every path got the one handoff back


def test_the_workers_callback_carries_the_ticket_its_priority_and_the_chats_trigger_key(database_url):
    ticket_id, message_id = safety_fault(database_url)
    worker_callback(database_url, message_id)
    with session_scope(database_url) as s:
        handoff = open_safety_handoff(s, ticket_id=ticket_id)
        assert handoff is not None and handoff.status is HandoffStatus.CALLBACK and handoff.active_key is None
        assert handoff.priority is TicketPriority.URGENT and handoff.conversation_id == f"ticket:{handoff.ticket.number}"
        assert handoff.trigger_key == f"safety_fault:{handoff.ticket.number}"
        assert handoff.packet["ticket"] == handoff.ticket.number and handoff.packet["customer"]["email"]


def test_a_closed_safety_handoff_does_not_block_a_new_one_for_the_fault(database_url):
    ticket_id, message_id = safety_fault(database_url)
    first = worker_callback(database_url, message_id)
    with session_scope(database_url) as s:
        s.get(Handoff, first).status = HandoffStatus.RESOLVED
    second = chat_handoff(database_url, ticket_id, "chat-after-callback")
    assert second != first and [h.id for h in open_safety_handoffs(database_url, ticket_id)] == [second]


def ticket(url: str) -> str:
    with session_scope(url) as s:
        f = Factory(s)
        customer = f.customer()
        t, _ = open_ticket(s, customer_id=customer.id, device_id=None, source=TicketSource.API, category="general",
                           title="Oven door hinge", dedup_key="general", author="maria")
        return str(t.number)


def staff_change(url: str, number: str, status: TicketStatus, note: str = "") -> int | None:
    """What PATCH /api/tickets/<number> does: the change and its message in one transaction."""
    with session_scope(url) as s:
        t = get_ticket_by_number(s, number=number)
        seen = last_status_change_id(s, ticket_id=t.id)
        change_ticket_status(s, ticket=t, status=status, author="maria", note=note)
        message = queue_ticket_update(s, ticket=t, after_event_id=seen)
        return message.id if message is not None else None


def updates(url: str, number: str) -> list[tuple[ProactiveMessage, TicketEvent]]:
    with session_scope(url) as s:
        t = get_ticket_by_number(s, number=number)
        rows = s.scalars(select(ProactiveMessage).where(ProactiveMessage.ticket_id == t.id,
                                                        ProactiveMessage.kind == ProactiveKind.TICKET_UPDATE)).all()
        return [(m, m.ticket_event) for m in rows]


def test_racing_requests_for_the_same_status_change_queue_one_message(database_url):
    for _ in range(ROUNDS):
        number = ticket(database_url)
        outcomes = race(RACERS, lambda i: staff_change(database_url, number, TicketStatus.RESOLVED))
        assert all(o.ok for o in outcomes), outcomes
        [(message, change)] = updates(database_url, number)
        assert [o.value for o in outcomes if o.value is not None] == [message.id]
        assert change.kind is TicketEventKind.STATUS_CHANGED and change.data == {"from": "open", "to": "resolved"}
        assert message.status is ProactiveStatus.PENDING and not message.safety_critical


def test_racing_different_changes_tell_each_change_that_happened_once_and_none_that_lost(database_url):
    for _ in range(ROUNDS):
        number = ticket(database_url)
        targets = [TicketStatus.IN_PROGRESS, TicketStatus.WAITING_CUSTOMER] * (RACERS // 2)
        outcomes = race(RACERS, lambda i: staff_change(database_url, number, targets[i]))
        assert all(o.ok or isinstance(o.error, ConflictError) for o in outcomes), outcomes
        told = updates(database_url, number)
        with session_scope(database_url) as s:
            t = get_ticket_by_number(s, number=number)
            changes = s.scalars(select(TicketEvent.id).where(TicketEvent.ticket_id == t.id,
                                                             TicketEvent.kind == TicketEventKind.STATUS_CHANGED)).all()
        # One message per change that committed (a racer that read the ticket after another's commit made a
        # second, real change), keyed by that change; the racers that got a conflict queued nothing.
        assert sorted(change.id for _, change in told) == sorted(changes)
        assert sorted(m.id for m, _ in told) == sorted(o.value for o in outcomes if o.ok and o.value is not None)


def test_each_change_is_its_own_message_and_a_rolled_back_change_queues_none(database_url):
    number = ticket(database_url)
    staff_change(database_url, number, TicketStatus.IN_PROGRESS, note="Technician booked for Tuesday 10:00")
    with pytest.raises(RuntimeError), session_scope(database_url) as s:
        t = get_ticket_by_number(s, number=number)
        seen = last_status_change_id(s, ticket_id=t.id)
        change_ticket_status(s, ticket=t, status=TicketStatus.RESOLVED, author="maria")
        assert queue_ticket_update(s, ticket=t, after_event_id=seen) is not None
        raise RuntimeError("the request failed after queueing: both roll back")
    staff_change(database_url, number, TicketStatus.RESOLVED)
    told = [change.data["to"] for _, change in updates(database_url, number)]
    assert sorted(told) == ["in_progress", "resolved"]


def test_no_consent_holds_a_ticket_update_for_the_next_chat(database_url):
    with session_scope(database_url) as s:
        customer = Factory(s).customer(consent_proactive=False)
        t, _ = open_ticket(s, customer_id=customer.id, device_id=None, source=TicketSource.API, category="general",
                           title="Oven door hinge", dedup_key="general", author="maria")
        number = t.number
    staff_change(database_url, number, TicketStatus.RESOLVED)
    [(message, _)] = updates(database_url, number)
    assert message.status is ProactiveStatus.HELD and message.reason == "no_consent"
