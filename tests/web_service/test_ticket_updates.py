"""Issue 16, cases 7 and 10 (the web service's side): a staff status change queues the customer's message in the
same transaction, once per change; the console transcript never shows a triggered ``EXTERNAL_*`` intent as the
customer's words."""

from __future__ import annotations

from sqlalchemy import select

from actions.handoff import transcript, user_texts
from crm_store.db import session_scope
from crm_store.enums import ProactiveKind, ProactiveStatus
from crm_store.models import ProactiveMessage, Ticket
from tests.web_service.conftest import login
from web_service.rasa_client import transcript_from_events


def ticket_updates(url: str, number: str) -> list[tuple[str, dict, str]]:
    with session_scope(url) as s:
        ticket = s.scalar(select(Ticket).where(Ticket.number == number))
        rows = s.scalars(select(ProactiveMessage).where(ProactiveMessage.ticket_id == ticket.id,
                                                        ProactiveMessage.kind == ProactiveKind.TICKET_UPDATE)
                         .order_by(ProactiveMessage.id)).all()
        return [(m.status.value, m.ticket_event.data, m.ticket_event.body) for m in rows]


def test_a_staff_status_change_queues_one_message_per_change_for_the_customer(client, api_db):
    headers = login(client)
    number = client.post("/api/tickets", json={"customer_id": 3, "title": "Oven door hinge loose", "category": "door"},
                         headers=headers).json()["number"]
    assert ticket_updates(api_db, number) == []  # opening a ticket is not a status change

    resp = client.patch(f"/api/tickets/{number}", json={"status": "in_progress", "note": "Technician scheduled Tue 10:00"},
                        headers=headers)
    assert resp.status_code == 200
    # The same request again changes nothing, a priority change is no status change: nothing more is queued.
    assert client.patch(f"/api/tickets/{number}", json={"status": "in_progress"}, headers=headers).status_code == 200
    assert client.patch(f"/api/tickets/{number}", json={"priority": "high"}, headers=headers).status_code == 200
    assert client.patch(f"/api/tickets/{number}", json={"status": "resolved"}, headers=headers).status_code == 200
    # A refused change (closed → resolved is not allowed) queues nothing.
    assert client.patch(f"/api/tickets/{number}", json={"status": "closed"}, headers=headers).status_code == 200
    assert client.patch(f"/api/tickets/{number}", json={"status": "resolved"}, headers=headers).status_code == 422

    told = ticket_updates(api_db, number)
    assert [(data["to"], body) for _status, data, body in told] == [
        ("in_progress", "Technician scheduled Tue 10:00"), ("resolved", ""), ("closed", "")]
    # Customer 3 has no open chat yet: due now (or held), never sent by the API itself.
    assert {status for status, _, _ in told} <= {ProactiveStatus.PENDING.value, ProactiveStatus.HELD.value}


# What Rasa 3.6 records for POST /conversations/<id>/trigger_intent (the device worker's pushes).
TRIGGERED = {"event": "user", "timestamp": 1700000000.0, "text": "EXTERNAL: EXTERNAL_device_fault",
             "parse_data": {"intent": {"name": "EXTERNAL_device_fault", "confidence": 1.0},
                            "entities": [{"entity": "proactive_id", "value": "7"},
                                         {"entity": "ticket_number", "value": "T-000123"}]},
             "input_channel": "socketio", "metadata": {"is_external": True}}
EVENTS = [
    {"event": "user", "timestamp": 1699999990.0, "text": "I want to talk to a person",
     "parse_data": {"intent": {"name": "request_human"}, "entities": []}},
    {"event": "pause", "timestamp": 1699999991.0},
    TRIGGERED, TRIGGERED,
    {"event": "bot", "timestamp": 1700000001.0, "text": "Your washing machine reported a problem (ticket T-000123)."},
]


def test_the_console_transcript_shows_a_triggered_event_as_a_system_line_never_as_the_customers(client):
    turns, paused = transcript_from_events(EVENTS)
    assert paused is True
    assert [(t["from"], t["text"]) for t in turns] == [
        ("customer", "I want to talk to a person"),
        ("system", "Proactive message: a device fault (ticket T-000123)"),
        ("system", "Proactive message: a device fault (ticket T-000123)"),
        ("bot", "Your washing machine reported a problem (ticket T-000123)."),
    ]


def test_the_handoff_packet_and_the_escalation_triggers_ignore_triggered_events():
    assert [t["from"] for t in transcript(EVENTS)] == ["customer", "system", "system", "bot"]
    # Two identical "EXTERNAL" lines would otherwise read as the customer repeating themselves.
    assert user_texts(EVENTS) == ["I want to talk to a person"]
