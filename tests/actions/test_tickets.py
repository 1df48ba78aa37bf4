"""Problem reports and ticket status, from tracker snapshots."""

from __future__ import annotations

from actions.base import CRM_UNAVAILABLE
from actions.customers import ActionResumeRequest
from actions.tickets import ActionAskDeviceSerial, ActionOpenTicket, ValidateProblemForm
from crm_store.db import session_scope
from crm_store.enums import TicketSource
from crm_store.repositories.tickets import list_tickets, open_ticket
from tests.actions.conftest import closed_in_place, run_action, slots_of, tracker_from, validated_slots


def test_named_appliance_and_descriptive_first_message_fill_the_form(crm_url):
    events, messages = run_action(ValidateProblemForm(), tracker_from("problem_reported"))
    slots = validated_slots(events)
    assert slots["device_serial"] == "WM80-23000102"
    assert slots["symptom"] == "my washing machine won't drain"
    assert slots["requested_slot"] is None
    # The complete form's ticket is opened in the same call (action_open_ticket's work), and the turn ends.
    number = slots_of(events)["ticket_number"]
    assert closed_in_place(events) and f"I've opened ticket {number} for your washing machine" in messages[-1]["text"]
    with session_scope(crm_url, write=False) as s:
        tickets = list_tickets(s, customer_id=1, only_open=True)
        assert [t.number for t in tickets if t.device and t.device.serial == "WM80-23000102"] == [number]
    assert slots_of(events)["device_serial"] is None  # the report's slots are reset for the next one


def test_without_an_appliance_the_bot_asks_which_one_with_buttons(crm_url):
    tracker = tracker_from("problem_reported", slots={"appliance": None, "problem_text": "something is broken"},
                           latest_message={"text": "something is broken", "entities": []})
    events, _ = run_action(ValidateProblemForm(), tracker)
    assert slots_of(events)["requested_slot"] == "device_serial"
    _, messages = run_action(ActionAskDeviceSerial(), tracker)
    assert messages[0]["text"] == "Which appliance is it?"
    assert [b["payload"] for b in messages[0]["buttons"]] == [
        '/inform{"serial_number": "FR50-21000101"}',
        '/inform{"serial_number": "WM80-23000102"}',
        '/inform{"serial_number": "DW60-24000103"}',
    ]


def test_picking_a_device_by_location_word_or_order(crm_url):
    base = {"appliance": None, "problem_text": "something is broken", "requested_slot": "device_serial"}
    tracker = tracker_from("problem_reported", slots=base, latest_message={"text": "the second one", "entities": []})
    assert slots_of(run_action(ValidateProblemForm(), tracker)[0])["device_serial"] == "WM80-23000102"
    tracker = tracker_from("problem_reported", slots=base, latest_message={"text": "dishwasher", "entities": []})
    assert slots_of(run_action(ValidateProblemForm(), tracker)[0])["device_serial"] == "DW60-24000103"
    tracker = tracker_from("problem_reported", slots=base, latest_message={"text": "the purple one", "entities": []})
    events, messages = run_action(ValidateProblemForm(), tracker)
    assert slots_of(events)["device_serial"] is None
    assert messages[0]["text"] == "Sorry, I couldn't tell which appliance you mean."


def test_open_ticket_once_then_point_to_the_open_one(crm_url):
    slots = {"device_serial": "WM80-23000102", "symptom": "it won't drain, water stays in the drum"}
    events, messages = run_action(ActionOpenTicket(), tracker_from("problem_reported", slots=slots))
    number = slots_of(events)["ticket_number"]
    text = messages[0]["text"]
    assert text.startswith(f"I've opened ticket {number} for your washing machine WashPro 8")
    assert "Drain pump blocked" in text and "clean the pump filter" in text

    _, messages = run_action(ActionOpenTicket(), tracker_from("problem_reported", slots=slots))
    assert messages[0]["text"].startswith(f"You already have ticket {number} open for this")
    with session_scope(crm_url) as s:
        open_for_device = [t for t in list_tickets(s, customer_id=1, only_open=True) if t.device and t.device.serial == "WM80-23000102"]
        assert [t.number for t in open_for_device] == [number]
        assert open_for_device[0].source is TicketSource.CHAT
        assert len(open_for_device[0].events) == 2  # created + the repeated report


def test_safety_critical_fault_puts_safety_steps_first(crm_url):
    slots = {"device_serial": "WM80-23000102", "symptom": "it is leaking, there is a flood on the floor"}
    events, messages = run_action(ActionOpenTicket(), tracker_from("problem_reported", slots=slots))
    assert messages[0]["text"].startswith("This can be dangerous. Please do this now:")
    with session_scope(crm_url) as s:
        ticket = list_tickets(s, customer_id=1, only_open=True)[0]
        assert (ticket.fault_code, ticket.priority.value) == ("F05", "urgent")


def test_ticket_status_of_own_ticket_and_same_answer_for_unknown_or_foreign(crm_url):
    with session_scope(crm_url) as s:
        own, _ = open_ticket(s, customer_id=1, device_id=1, source=TicketSource.DEVICE, category="E01",
                             title="Compartment temperature too high", dedup_key="fault:E01", author="device")
        foreign, _ = open_ticket(s, customer_id=2, device_id=None, source=TicketSource.AGENT, category="general",
                                 title="Someone else's", dedup_key="x", author="agent")
        own_number, foreign_number = own.number, foreign.number
    base = {"customer_id": 1.0, "pending_request": "ticket_status"}
    _, messages = run_action(ActionResumeRequest(), tracker_from("verify_reference", slots={**base, "ticket_number": own_number}))
    assert messages[0]["text"].startswith(f"Ticket {own_number} (Compartment temperature too high) is open.")
    _, foreign_msgs = run_action(ActionResumeRequest(), tracker_from("verify_reference", slots={**base, "ticket_number": foreign_number}))
    _, unknown_msgs = run_action(ActionResumeRequest(), tracker_from("verify_reference", slots={**base, "ticket_number": "T-999999"}))
    assert foreign_msgs[0]["text"].startswith(f"I can't find a ticket {foreign_number} on your account.")
    assert unknown_msgs[0]["text"].replace("T-999999", foreign_number) == foreign_msgs[0]["text"]
    _, listing = run_action(ActionResumeRequest(), tracker_from("verify_reference", slots=base))
    assert listing[0]["text"].startswith("Your open tickets:") and own_number in listing[0]["text"]


def test_crm_failure_becomes_a_helpful_reply_not_silence(crm_url, monkeypatch, tmp_path):
    from actions.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/missing-dir-is-a-file/x.db")
    (tmp_path / "missing-dir-is-a-file").write_text("not a directory")
    get_settings.cache_clear()
    events, messages = run_action(ActionOpenTicket(), tracker_from("problem_reported", slots={"device_serial": "WM80-23000102", "symptom": "x y z"}))
    assert events == []
    assert messages[0]["text"] == CRM_UNAVAILABLE
