"""Issue 16, cases 6, 7 and 10 (the bot's side): a person at once for a safety-critical fault, device events in a
conversation an agent owns, and staff ticket updates told to the customer. Real SQLite CRM with the demo data."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from actions.handoff import ActionEscalate
from actions.safety import ActionDeliverDeviceEvents, ActionNotifyTicketUpdate, ActionSafetyHandoff
from crm_store.db import session_scope
from crm_store.enums import HandoffMessageKind, HandoffReason, ProactiveKind, TicketSource, TicketStatus
from crm_store.escalation_policy import get_escalation_config
from crm_store.models import Handoff, HandoffMessage
from crm_store.repositories.customers import link_identity
from crm_store.repositories.devices import get_device_by_serial
from crm_store.repositories.proactive import last_status_change_id, queue_notification, queue_ticket_update
from crm_store.repositories.tickets import change_ticket_status, open_ticket
from tests.actions.conftest import run_action, tracker_from

SENDER = "web-session-1"


@pytest.fixture(autouse=True)
def staffed(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    config = tmp_path / "escalation.yml"
    config.write_text("staffed_hours:\n  always: true\n")
    monkeypatch.setenv("ESCALATION_CONFIG", str(config))
    get_escalation_config.cache_clear()
    yield
    get_escalation_config.cache_clear()


def anna_chat(crm_url: str, **overrides) -> object:
    with session_scope(crm_url) as s:
        link_identity(s, channel="socketio", external_id=SENDER, customer_id=1)
    return tracker_from("greet_socketio", **overrides)


def washer_leak(crm_url: str) -> str:
    with session_scope(crm_url) as s:
        washer = get_device_by_serial(s, serial="WM80-23000102")
        ticket, _ = open_ticket(s, customer_id=1, device_id=washer.id, source=TicketSource.DEVICE, category="F05",
                                title="Leak detected near electrical parts (WashPro 8)", dedup_key="fault:F05",
                                author="device", fault_code="F05")
        queue_notification(s, ticket=ticket, kind=ProactiveKind.DEVICE_FAULT, safety_critical=True)
        return str(ticket.number)


def test_case6_a_safety_critical_fault_brings_in_a_person_at_once_and_says_so(crm_url):
    number = washer_leak(crm_url)
    events, messages = run_action(ActionSafetyHandoff(), anna_chat(crm_url))
    assert any(e["event"] == "pause" for e in events)
    assert "can be dangerous, I'm bringing in a person from our service team right away" in messages[0]["text"]
    assert number in messages[0]["text"]
    with session_scope(crm_url) as s:
        [handoff] = s.query(Handoff).all()
        assert handoff.reason is HandoffReason.SAFETY_FAULT and handoff.ticket.number == number
    # Run again (a retried push): no second handoff, nothing said twice.
    events, messages = run_action(ActionSafetyHandoff(), anna_chat(crm_url))
    assert messages == [] and not any(e["event"] == "pause" for e in events)


def test_case6_no_safety_fault_no_handoff(crm_url):
    events, messages = run_action(ActionSafetyHandoff(), anna_chat(crm_url))
    assert messages == [] and not any(e["event"] == "pause" for e in events)


def test_case7_a_device_event_during_a_handoff_reaches_customer_and_agent(crm_url):
    tracker = anna_chat(crm_url, latest_message={"text": "a person please", "intent": {"name": "request_human"}})
    run_action(ActionEscalate(), tracker)
    number = washer_leak(crm_url)
    _, messages = run_action(ActionDeliverDeviceEvents(), anna_chat(crm_url))
    assert any(number in (m.get("text") or "") for m in messages)
    with session_scope(crm_url) as s:
        notes = [m for m in s.query(HandoffMessage).all() if m.kind is HandoffMessageKind.SYSTEM]
        assert len(notes) == 1 and notes[0].author == "bot"
        assert notes[0].body.startswith(f"Device fault (safety-critical) on ticket {number}, told to the customer: ")
        # A safety fault moves the conversation up the queue.
        assert notes[0].handoff.priority.value == "urgent"
    # Delivered once: running again tells nobody anything.
    assert run_action(ActionDeliverDeviceEvents(), anna_chat(crm_url))[1] == []


def test_case10_a_staff_status_change_is_told_to_the_customer_once(crm_url):
    with session_scope(crm_url) as s:
        ticket, _ = open_ticket(s, customer_id=1, device_id=1, source=TicketSource.CHAT, category="E01",
                                title="Compartment temperature too high", dedup_key="fault:E01", author="bot")
        seen = last_status_change_id(s, ticket_id=ticket.id)
        change_ticket_status(s, ticket=ticket, status=TicketStatus.IN_PROGRESS, author="maria",
                             note="A technician is booked for Tuesday morning.")
        message = queue_ticket_update(s, ticket=ticket, after_event_id=seen)
        # A second change later is a message of its own; the first still tells its own change.
        seen = last_status_change_id(s, ticket_id=ticket.id)
        change_ticket_status(s, ticket=ticket, status=TicketStatus.RESOLVED, author="maria")
        later = queue_ticket_update(s, ticket=ticket, after_event_id=seen)
        # Nothing changed (a retried request): nothing queued.
        assert queue_ticket_update(s, ticket=ticket, after_event_id=last_status_change_id(s, ticket_id=ticket.id)) is None
        number, first, second = ticket.number, str(message.id), str(later.id)

    def pushed(proactive_id: str) -> object:
        return anna_chat(crm_url, slots={"proactive_id": proactive_id},
                         latest_message={"text": "EXTERNAL: EXTERNAL_ticket_update", "intent": {"name": "EXTERNAL_ticket_update"},
                                         "entities": [{"entity": "ticket_number", "value": number},
                                                      {"entity": "proactive_id", "value": proactive_id}]})

    _, messages = run_action(ActionNotifyTicketUpdate(), pushed(first))
    assert [m["text"] for m in messages] == [
        f"An update on your ticket {number} (Compartment temperature too high): our team is working on it. "
        "Note from our team: A technician is booked for Tuesday morning."]
    assert run_action(ActionNotifyTicketUpdate(), pushed(first))[1] == []  # a retried push says nothing twice
    assert [m["text"] for m in run_action(ActionNotifyTicketUpdate(), pushed(second))[1]] == [
        f"An update on your ticket {number} (Compartment temperature too high): it has been resolved."]


def test_case10_an_update_is_not_shown_in_someone_elses_chat(crm_url):
    with session_scope(crm_url) as s:
        ticket, _ = open_ticket(s, customer_id=2, device_id=None, source=TicketSource.API, category="general",
                                title="Billing question", dedup_key="general", author="maria")
        seen = last_status_change_id(s, ticket_id=ticket.id)
        change_ticket_status(s, ticket=ticket, status=TicketStatus.RESOLVED, author="maria")
        message_id = str(queue_ticket_update(s, ticket=ticket, after_event_id=seen).id)
    tracker = anna_chat(crm_url, slots={"proactive_id": message_id},
                        latest_message={"text": "", "intent": {"name": "EXTERNAL_ticket_update"},
                                        "entities": [{"entity": "proactive_id", "value": message_id}]})
    assert run_action(ActionNotifyTicketUpdate(), tracker)[1] == []
