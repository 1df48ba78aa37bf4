"""Issue 16, cases 6, 7 and 10 (the delivery side): the device worker's notifier on PostgreSQL with the demo data,
pushing through a stand-in of Rasa's HTTP API that runs the project's real actions.

- a conversation a person has gets its message through ``execute`` of ``action_deliver_device_events`` (not
  ``trigger_intent``, which Rasa ignores while paused), once, with a system note for the agent;
- a safety-critical fault nobody could be told about in a chat gets exactly one callback handoff, even with
  the notifier run again and two notifiers racing;
- a staff ticket update is pushed with ``EXTERNAL_ticket_update`` and its ticket number, once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from crm_store.db import session_scope
from crm_store.enums import (
    HandoffMessageKind,
    HandoffReason,
    HandoffStatus,
    ProactiveKind,
    ProactiveStatus,
    TicketPriority,
    TicketSource,
    TicketStatus,
)
from crm_store.escalation_policy import get_escalation_config
from crm_store.models import Handoff, ProactiveMessage, utcnow
from crm_store.repositories.customers import link_identity
from crm_store.repositories.handoffs import create_handoff
from crm_store.repositories.proactive import last_status_change_id, queue_notification, queue_ticket_update
from crm_store.repositories.tickets import change_ticket_status, open_ticket
from tests.conftest import migrated_database
from tests.crm_store.conftest import Factory
from tests.races import race
from tests.rasa_standin import RasaStandIn


@pytest.fixture(scope="module")
def pg_crm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from crm_store.demo_data import generate

    with migrated_database("postgresql", tmp_path_factory) as url:
        with session_scope(url) as s:
            generate(s, customers=10)
        yield url


@pytest.fixture
def crm(pg_crm: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from actions.settings import get_settings

    config = tmp_path / "escalation.yml"
    config.write_text("staffed_hours:\n  always: true\n")
    monkeypatch.setenv("ESCALATION_CONFIG", str(config))
    monkeypatch.setenv("DATABASE_URL", pg_crm)
    monkeypatch.setenv("ACTION_SERVER_TOKEN", "test-token")
    get_settings.cache_clear()
    get_escalation_config.cache_clear()
    yield pg_crm
    get_settings.cache_clear()
    get_escalation_config.cache_clear()


@pytest.fixture
def rasa() -> Iterator[RasaStandIn]:
    standin = RasaStandIn("up")
    yield standin
    standin.close()


def customer_with_washer(url: str, *, consent: bool = True, chat: str | None = None) -> tuple[int, int]:
    """A new customer with a washing machine (fault F05 is safety-critical), optionally with an open chat."""
    with session_scope(url) as s:
        f = Factory(s)
        customer = f.customer(consent_proactive=consent)
        device = f.device(customer, "WM80")
        if chat is not None:
            link_identity(s, channel="socketio", external_id=chat, customer_id=customer.id)  # seen just now
        return customer.id, device.id


def device_fault(url: str, customer_id: int, device_id: int, *, code: str = "F05", safety: bool = True) -> tuple[int, str]:
    """What the worker's pipeline does for a new fault: the ticket and its outbox message."""
    with session_scope(url) as s:
        ticket, _ = open_ticket(s, customer_id=customer_id, device_id=device_id, source=TicketSource.DEVICE,
                                category=code, title="Leak detected near electrical parts (WashPro 8)",
                                dedup_key=f"fault:{code}", author="device", fault_code=code,
                                priority=TicketPriority.URGENT if safety else TicketPriority.NORMAL)
        message = queue_notification(s, ticket=ticket, kind=ProactiveKind.DEVICE_FAULT, safety_critical=safety)
        return message.id, str(ticket.number)


def run_notifier(url: str, rasa: RasaStandIn, times: int = 1, *, chats: dict[str, int] | None = None) -> None:
    """Runs the worker's notifier ``times``; before each run the open ``chats`` (conversation → customer)
    report presence, as the chat page does."""
    from device_hooks.notifier import Notifier
    from device_hooks.pipeline import Pipeline

    async def go() -> None:
        async with httpx.AsyncClient() as client:
            notifier = Notifier(Pipeline(url), rasa.url, "token", client)
            for _ in range(times):
                with session_scope(url) as s:
                    for chat, customer_id in (chats or {}).items():
                        link_identity(s, channel="socketio", external_id=chat, customer_id=customer_id)
                await notifier.run_once()

    asyncio.run(go())


def test_case7_a_fault_in_a_conversation_a_person_has_is_delivered_through_execute_once_with_a_note(crm, rasa):
    chat = f"tab-{uuid.uuid4().hex[:8]}"
    customer_id, device_id = customer_with_washer(crm, chat=chat)
    with session_scope(crm) as s:
        handoff, _ = create_handoff(
            s, conversation_id=chat, channel="socketio", customer_id=customer_id, ticket_id=None,
            reason=HandoffReason.CUSTOMER_REQUEST, trigger_key="customer_request", priority=TicketPriority.NORMAL,
            language="en", category=None, summary="asked for a person", packet={},
            first_response_due_at=utcnow() + dt.timedelta(minutes=15))
        handoff_id = handoff.id
    message_id, number = device_fault(crm, customer_id, device_id)

    run_notifier(crm, rasa, times=3, chats={chat: customer_id})

    # Through execute of the delivering action, never a triggered intent (which a paused Rasa ignores).
    assert [(route, name) for conv, route, name in rasa.calls if conv == chat] == [("execute", "action_deliver_device_events")]
    told = [t for t in rasa.told(chat) if number in t]
    assert len(told) == 1 and told[0].startswith("Important, please read this first")
    with session_scope(crm) as s:
        assert s.get(ProactiveMessage, message_id).status is ProactiveStatus.SENT
        handoff = s.get(Handoff, handoff_id)
        notes = [m.body for m in handoff.messages if m.kind is HandoffMessageKind.SYSTEM]
        assert len(notes) == 1 and notes[0].startswith(f"Device fault (safety-critical) on ticket {number}")
        # The conversation already has a person: no second handoff, but it moved up the queue.
        assert handoff.priority is TicketPriority.URGENT
        assert s.scalar(select(Handoff.id).where(Handoff.customer_id == customer_id, Handoff.id != handoff_id)) is None


@pytest.mark.parametrize("consent", [True, False], ids=["no-open-chat", "no-consent"])
def test_case6_a_safety_fault_nobody_could_be_told_gets_one_callback_even_with_racing_notifiers(crm, rasa, consent):
    customer_id, device_id = customer_with_washer(crm, consent=consent)  # no chat open
    message_id, number = device_fault(crm, customer_id, device_id)

    outcomes = race(2, lambda i: run_notifier(crm, rasa, times=2))
    assert all(o.ok for o in outcomes), outcomes

    with session_scope(crm) as s:
        message = s.get(ProactiveMessage, message_id)
        assert message.status is ProactiveStatus.HELD and message.reason == ("unreachable" if consent else "no_consent")
        [handoff] = s.scalars(select(Handoff).where(Handoff.customer_id == customer_id)).all()
        assert handoff.reason is HandoffReason.SAFETY_FAULT and handoff.status is HandoffStatus.CALLBACK
        assert handoff.ticket.number == number and handoff.priority is TicketPriority.URGENT
        assert handoff.trigger_key == f"safety_fault:{number}" and number in handoff.summary


def test_a_fault_that_is_not_safety_critical_gets_no_callback(crm, rasa):
    customer_id, device_id = customer_with_washer(crm)
    message_id, _ = device_fault(crm, customer_id, device_id, code="E21", safety=False)
    run_notifier(crm, rasa, times=2)
    with session_scope(crm) as s:
        assert s.get(ProactiveMessage, message_id).status is ProactiveStatus.HELD
        assert s.scalar(select(Handoff.id).where(Handoff.customer_id == customer_id)) is None


def test_case10_a_staff_update_is_pushed_with_its_ticket_number_once(crm, rasa):
    chat = f"tab-{uuid.uuid4().hex[:8]}"
    customer_id, device_id = customer_with_washer(crm, chat=chat)
    with session_scope(crm) as s:
        ticket, _ = open_ticket(s, customer_id=customer_id, device_id=device_id, source=TicketSource.API,
                                category="E21", title="Drain pump blocked", dedup_key="fault:E21", author="maria")
        seen = last_status_change_id(s, ticket_id=ticket.id)
        change_ticket_status(s, ticket=ticket, status=TicketStatus.IN_PROGRESS, author="maria",
                             note="A technician is scheduled for Tuesday 10:00.")
        message_id, number = queue_ticket_update(s, ticket=ticket, after_event_id=seen).id, ticket.number

    run_notifier(crm, rasa, times=3, chats={chat: customer_id})

    assert [(route, name) for conv, route, name in rasa.calls if conv == chat] == [("trigger_intent", "EXTERNAL_ticket_update")]
    assert rasa.told(chat) == [f"An update on your ticket {number} (Drain pump blocked): our team is working on it. "
                               "Note from our team: A technician is scheduled for Tuesday 10:00."]
    with session_scope(crm) as s:
        message = s.get(ProactiveMessage, message_id)
        assert message.status is ProactiveStatus.SENT and message.conversation_id == chat
