"""Proactive device messages, their choices (self-help, technician), held messages and device health."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from actions.customers import ActionGreet, ActionResumeRequest
from actions.proactive import ActionNotifyDeviceFault, ActionNotifyDeviceRecovered
from crm_store.db import session_scope
from crm_store.enums import (
    DeviceMessageKind,
    ProactiveKind,
    ProactiveStatus,
    TicketEventKind,
    TicketSource,
    TicketStatus,
)
from crm_store.models import DeviceMessage, ProactiveMessage, Ticket, utcnow
from crm_store.repositories.customers import link_identity
from crm_store.repositories.devices import get_device_by_serial
from crm_store.repositories.tickets import add_ticket_event, change_ticket_status, open_ticket
from tests.actions.conftest import run_action, slots_of, tracker_from

FRIDGE, WASHER, DISHWASHER = "FR50-21000101", "WM80-23000102", "DW60-24000103"
# Times are told in the customer's zone (Anna: Europe/Berlin); a few minutes ago may be yesterday at midnight.
RECENTLY = r"(today|yesterday) at \d\d:\d\d"
# Anna (customer 1) has one ticket in the demo data: T-000010, in progress, the fridge's door alarm (E02).


def device_fault(url: str, *, serial: str = FRIDGE, code: str = "E01", customer_id: int = 1,
                 kind: ProactiveKind = ProactiveKind.DEVICE_FAULT, status: ProactiveStatus = ProactiveStatus.PENDING,
                 safety_critical: bool = False) -> tuple[int, str]:
    """A device-opened fault ticket and the outbox row the worker would queue; returns (message id, ticket number)."""
    with session_scope(url) as s:
        device = get_device_by_serial(s, serial=serial)
        fault = next(f for f in device.model.faults if f.code == code)
        ticket, _ = open_ticket(s, customer_id=customer_id, device_id=device.id, source=TicketSource.DEVICE,
                                category=code, title=f"{fault.title} ({device.model.name})", dedup_key=f"fault:{code}",
                                author=f"device:{serial}", fault_code=code)
        message = ProactiveMessage(customer_id=customer_id, ticket_id=ticket.id, kind=kind, status=status,
                                   safety_critical=safety_critical, detected_at=utcnow() - dt.timedelta(minutes=2))
        s.add(message)
        s.flush()
        return message.id, ticket.number


def pushed(message_id: int | str | None, sender: str = "web-session-9"):
    entities = [] if message_id is None else [{"entity": "proactive_id", "value": str(message_id)}]
    return tracker_from("device_fault_pushed", sender_id=sender, slots={"proactive_id": None if message_id is None else str(message_id)},
                        latest_message={"text": "EXTERNAL: EXTERNAL_device_fault", "intent": {"name": "EXTERNAL_device_fault"},
                                        "entities": entities})


def link_anna(url: str, sender: str = "web-session-9") -> None:
    with session_scope(url) as s:
        link_identity(s, channel="socketio", external_id=sender, customer_id=1)


def outbox(url: str, message_id: int) -> ProactiveMessage:
    with session_scope(url) as s:
        message = s.get(ProactiveMessage, message_id)
        s.expunge(message)
        return message


def ticket_of(url: str, number: str) -> tuple[TicketStatus, list[TicketEventKind]]:
    with session_scope(url) as s:
        ticket = s.scalar(select(Ticket).where(Ticket.number == number))
        return ticket.status, [e.kind for e in ticket.events]


def report(url: str, serial: str, readings: dict, *, minutes_ago: float = 1) -> None:
    with session_scope(url) as s:
        device = get_device_by_serial(s, serial=serial)
        ts = utcnow() - dt.timedelta(minutes=minutes_ago)
        s.add(DeviceMessage(device_id=device.id, kind=DeviceMessageKind.TELEMETRY, seq=1, ts=ts,
                            body={"readings": readings}))
        device.last_seen_at = ts


def resume(request: str, **slots):
    return tracker_from("linked_request", slots={"pending_request": request, **slots})


# --- the proactive fault message -------------------------------------------------------------------


def test_fault_push_tells_the_owner_with_ticket_and_choices_and_marks_it_sent(crm_url):
    link_anna(crm_url)
    message_id, number = device_fault(crm_url)
    events, messages = run_action(ActionNotifyDeviceFault(), pushed(message_id))
    assert len(messages) == 1
    text = messages[0]["text"]
    assert re.match(f"Your fridge FrostLine 500 \\(bedroom\\) reported a problem {RECENTLY}: ", text)
    assert f"Compartment temperature too high (code E01). I've already opened ticket {number} for it" in text
    assert messages[0]["buttons"] == [
        {"title": "Show me what I can do now", "payload": f'/fault_self_help{{"ticket_number":"{number}"}}'},
        {"title": "Book a technician", "payload": f'/book_technician{{"ticket_number":"{number}"}}'},
        {"title": "Talk to a person", "payload": "/request_human"},
    ]
    # The chat was not linked in this conversation yet: the push links it.
    assert slots_of(events) == {"proactive_id": None, "customer_id": 1.0, "customer_name": "Anna", "ticket_number": number}
    sent = outbox(crm_url, message_id)
    assert (sent.status, sent.channel, sent.conversation_id) == (ProactiveStatus.SENT, "socketio", "web-session-9")
    assert TicketEventKind.CUSTOMER_NOTIFIED in ticket_of(crm_url, number)[1]


def test_a_retried_push_does_not_tell_the_customer_twice(crm_url):
    link_anna(crm_url)
    message_id, _ = device_fault(crm_url)
    run_action(ActionNotifyDeviceFault(), pushed(message_id))
    _, messages = run_action(ActionNotifyDeviceFault(), pushed(message_id))
    assert messages == []
    assert outbox(crm_url, message_id).attempts == 1


def test_safety_critical_fault_puts_the_safety_steps_first(crm_url):
    link_anna(crm_url)
    message_id, number = device_fault(crm_url, serial=WASHER, code="F05", safety_critical=True)
    _, messages = run_action(ActionNotifyDeviceFault(), pushed(message_id))
    text = messages[0]["text"]
    assert text.startswith("Important, please read this first: your washing machine WashPro 8 (garage) reported "
                           "Leak detected near electrical parts (code F05)")
    assert text.index("Switch the machine off at the socket") < text.index(number)
    # The steps are already in the message: the buttons offer what comes next.
    assert [b["title"] for b in messages[0]["buttons"]] == ["Book a technician", "Talk to a person"]


@pytest.mark.parametrize("message_id", [None, "999999", "not-a-number"])
def test_unknown_or_missing_id_says_nothing_and_does_not_crash(crm_url, message_id):
    link_anna(crm_url)
    events, messages = run_action(ActionNotifyDeviceFault(), pushed(message_id))
    assert messages == []
    assert slots_of(events)["proactive_id"] is None


def test_another_customers_message_is_never_shown(crm_url):
    link_anna(crm_url)
    message_id, _ = device_fault(crm_url, serial="AC18-23000204", code="E05", customer_id=2)
    _, messages = run_action(ActionNotifyDeviceFault(), pushed(message_id))
    assert messages == []
    assert outbox(crm_url, message_id).status is ProactiveStatus.PENDING
    # Nor in a chat that is linked to nobody (someone typing /EXTERNAL_device_fault{...}).
    _, messages = run_action(ActionNotifyDeviceFault(), pushed(message_id, sender="web-session-stranger"))
    assert messages == []


def test_recovery_message_says_since_when_and_that_the_device_verified_it(crm_url):
    link_anna(crm_url)
    message_id, number = device_fault(crm_url, kind=ProactiveKind.DEVICE_RECOVERED)
    recovered_at = utcnow() - dt.timedelta(minutes=5)
    with session_scope(crm_url) as s:
        ticket = s.scalar(select(Ticket).where(Ticket.number == number))
        add_ticket_event(s, ticket=ticket, kind=TicketEventKind.DEVICE_RECOVERED, author=f"device:{FRIDGE}",
                         data={"device_verified": True, "at": recovered_at.isoformat()})
        change_ticket_status(s, ticket=ticket, status=TicketStatus.RESOLVED, author="device", note="device-verified recovery")
    _, messages = run_action(ActionNotifyDeviceRecovered(), pushed(message_id))
    text = messages[0]["text"]
    since = re.search(f"since ({RECENTLY});", text).group(1)
    assert since.endswith(f"{recovered_at.astimezone(ZoneInfo('Europe/Berlin')):%H:%M}")
    assert text == (
        f"Good news: your fridge FrostLine 500 (bedroom) has been reading normal again since {since}; "
        f"ticket {number} is marked as device-verified recovery. If anything still seems wrong, just tell me and "
        "I'll look into it."
    )
    assert outbox(crm_url, message_id).status is ProactiveStatus.SENT


# --- stored, not lost ------------------------------------------------------------------------------


def test_greeting_a_linked_customer_delivers_what_was_held(crm_url):
    link_anna(crm_url, "web-session-1")
    message_id, number = device_fault(crm_url, status=ProactiveStatus.HELD)
    _, messages = run_action(ActionGreet(), tracker_from("greet_socketio"))
    assert messages[0]["text"].startswith("Hi Anna, welcome back!")
    assert number in messages[1]["text"] and messages[1]["text"].startswith("Your fridge FrostLine 500")
    sent = outbox(crm_url, message_id)
    assert (sent.status, sent.channel, sent.conversation_id) == (ProactiveStatus.SENT, "socketio", "web-session-1")
    # Delivered once: the next greeting is just a greeting.
    _, messages = run_action(ActionGreet(), tracker_from("greet_socketio"))
    assert len(messages) == 1


def test_a_held_fault_that_was_settled_meanwhile_is_told_without_choices(crm_url):
    link_anna(crm_url, "web-session-1")
    _, number = device_fault(crm_url, status=ProactiveStatus.HELD)
    with session_scope(crm_url) as s:
        change_ticket_status(s, ticket=s.scalar(select(Ticket).where(Ticket.number == number)),
                             status=TicketStatus.RESOLVED, author="agent")
    _, messages = run_action(ActionGreet(), tracker_from("greet_socketio"))
    assert messages[1]["text"].startswith("While you were away, your fridge FrostLine 500 (bedroom) reported a problem")
    assert messages[1]["text"].endswith(f"Ticket {number} was opened for it and is now resolved.")
    assert "buttons" not in messages[1] or not messages[1]["buttons"]


def test_just_verified_customer_gets_the_answer_then_what_was_held(crm_url):
    message_id, number = device_fault(crm_url, status=ProactiveStatus.HELD)
    tracker = tracker_from("verify_reference", slots={"customer_id": 1.0, "pending_request": "list_devices"})
    _, messages = run_action(ActionResumeRequest(), tracker)
    assert messages[0]["text"].startswith("You have 3 appliances registered with us:")
    assert number in messages[1]["text"]
    assert outbox(crm_url, message_id).conversation_id == "web-session-2"


# --- the choices: self-help and a technician ---------------------------------------------------------


def test_self_help_for_the_ticket_from_the_button(crm_url):
    _, number = device_fault(crm_url)
    events, messages = run_action(ActionResumeRequest(), resume("fault_self_help", ticket_number=number))
    text = messages[0]["text"]
    assert text.startswith(f"Here's what you can try now (Compartment temperature too high on your fridge FrostLine 500 (bedroom), ticket {number}):")
    assert "- Check that the door closes fully and the seal is clean." in text
    assert [b["title"] for b in messages[0]["buttons"]] == ["Book a technician", "Talk to a person"]
    assert slots_of(events)["pending_request"] is None


def test_self_help_without_a_number_uses_the_latest_open_device_fault(crm_url):
    _, number = device_fault(crm_url, serial=DISHWASHER, code="E22")
    _, messages = run_action(ActionResumeRequest(), resume("fault_self_help"))
    assert f"Filter blocked on your dishwasher CleanWave 60 (kitchen), ticket {number}" in messages[0]["text"]


def test_self_help_for_someone_elses_ticket_is_refused_like_an_unknown_one(crm_url):
    _, foreign = device_fault(crm_url, serial="AC18-23000204", code="E01", customer_id=2)
    _, messages = run_action(ActionResumeRequest(), resume("fault_self_help", ticket_number=foreign))
    assert messages[0]["text"] == f"I can't find a ticket {foreign} on your account. Did you mean one of these?"
    assert "Air filter" not in str(messages)
    _, unknown = run_action(ActionResumeRequest(), resume("fault_self_help", ticket_number="T-999999"))
    assert unknown[0]["text"].replace("T-999999", foreign) == messages[0]["text"]


def test_booking_a_technician_records_it_and_says_what_happens_next(crm_url):
    _, number = device_fault(crm_url)
    events, messages = run_action(ActionResumeRequest(), resume("book_technician", ticket_number=number))
    assert messages[0]["text"].startswith(f"Done: I've asked for a technician for ticket {number}")
    assert "a technician will call you within one working day" in messages[0]["text"]
    status, kinds = ticket_of(crm_url, number)
    assert status is TicketStatus.IN_PROGRESS
    assert kinds.count(TicketEventKind.TECHNICIAN_REQUESTED) == 1
    # Asking again does not book a second visit.
    _, again = run_action(ActionResumeRequest(), resume("book_technician", ticket_number=number))
    assert again[0]["text"].startswith(f"A technician visit is already requested for ticket {number}")
    assert ticket_of(crm_url, number)[1].count(TicketEventKind.TECHNICIAN_REQUESTED) == 1


def test_booking_for_someone_elses_ticket_changes_nothing(crm_url):
    _, foreign = device_fault(crm_url, serial="AC18-23000204", code="E05", customer_id=2)
    _, messages = run_action(ActionResumeRequest(), resume("book_technician", ticket_number=foreign))
    assert messages[0]["text"].startswith(f"I can't find a ticket {foreign} on your account.")
    assert ticket_of(crm_url, foreign) == (TicketStatus.OPEN, [TicketEventKind.CREATED])


def test_booking_without_a_ticket_asks_which_repair(crm_url):
    _, number = device_fault(crm_url)
    _, messages = run_action(ActionResumeRequest(), resume("book_technician"))
    assert messages[0]["text"] == "Which repair is the technician for?"
    payloads = [b["payload"] for b in messages[0]["buttons"]]
    assert f'/book_technician{{"ticket_number":"{number}"}}' in payloads
    assert '/book_technician{"ticket_number":"T-000010"}' in payloads
    assert payloads[-1] == "/report_problem"


# --- how is my fridge doing? -------------------------------------------------------------------------


def test_device_status_answers_from_the_latest_telemetry(crm_url):
    report(crm_url, FRIDGE, {"compartment_temp_c": 4.23, "freezer_temp_c": -18.0, "door_open": False, "power_w": 80})
    events, messages = run_action(ActionResumeRequest(), resume("device_status", appliance="fridge"))
    text = messages[0]["text"]
    assert re.match(f"Here's the latest from your fridge:\n- Fridge FrostLine 500 \\(bedroom\\): online, last report {RECENTLY}: ", text)
    assert "fridge compartment 4.2 °C, freezer -18.0 °C, door open: no." in text
    assert "power use" not in text  # the most relevant readings, not all of them
    assert "Open ticket: T-000010 (Door open alarm (FrostLine 500), in progress)." in text
    assert slots_of(events)["appliance"] is None


def test_device_status_of_all_appliances_says_plainly_when_there_is_no_telemetry(crm_url):
    report(crm_url, WASHER, {"drum_rpm": 0, "water_temp_c": 21.5, "leak_sensor_wet": False}, minutes_ago=90)
    _, messages = run_action(ActionResumeRequest(), resume("device_status"))
    lines = messages[0]["text"].splitlines()
    assert lines[0] == "Here's how your appliances are doing:"
    assert lines[2].startswith("- Washing machine WashPro 8 (garage): offline, last report ")
    assert lines[2].endswith("leak sensor wet: no, drum speed 0 rpm, water temperature 21.5 °C. No faults reported.")
    assert lines[3] == ("- Dishwasher CleanWave 60 (kitchen): it hasn't sent us any readings yet, so I can't see how "
                        "it's doing from here.")


def test_device_status_for_an_appliance_the_customer_does_not_have(crm_url):
    _, messages = run_action(ActionResumeRequest(), resume("device_status", appliance="boiler"))
    assert messages[0]["text"].startswith("I don't see a boiler registered to you. Here's how your appliances are doing:")


def test_device_status_is_not_given_to_an_unverified_visitor(crm_url):
    tracker = tracker_from("verify_reference", slots={"verify_locked": True, "pending_request": "device_status"})
    _, messages = run_action(ActionResumeRequest(), tracker)
    assert messages[0]["text"].startswith("I can only do that for a verified customer")
