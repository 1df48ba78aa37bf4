"""Issue 16, cases 6, 7 and 10 end to end through the real processes (Rasa, action server, web service, device
worker, Mosquitto), in both topologies. The simulator publishes as the appliance; the customer is a socket.io
web chat; staff use the REST API. Each test takes a customer nobody else has used in this stack.

- case 7: a fault while a person has the chat reaches the customer at once, once, and the agent as a system
  note with the ticket; the console transcript has no "EXTERNAL" line;
- case 6: a gas/CO alarm (E99) brings in exactly one person at once, urgent and with the ticket: in the open
  chat (the customer is told), and as a callback when the customer has no open chat (told at their next visit);
- case 10: staff status changes reach the customer's chat through the same proactive path, once per change.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

from tests.e2e.conftest import Stack, wait_until
from tests.e2e.test_device_flows import admin, free_warning_code, query, simulator, verify_as, wait_for_bot
from tests.e2e.test_handoff_flow import SioCustomer, find_handoff


def fresh_customer(stack: Stack, category: str) -> tuple[str, str, str, int]:
    """(serial, e-mail, order number, customer id) of a customer with consent to messages, no quiet hours, an
    appliance of ``category``, and no ticket, chat or handoff yet in this stack. From the highest ids down: the
    other end-to-end tests take theirs from the lowest up, and must not find one of these (reachable) instead."""
    rows = query(stack, """
        SELECT d.serial, c.email, p.order_number, c.id FROM devices d JOIN customers c ON c.id = d.customer_id
        JOIN purchases p ON p.device_id = d.id JOIN product_models m ON m.id = d.model_id
        WHERE c.consent_proactive AND c.quiet_hours_start IS NULL AND m.category = ? AND c.id > 1
          AND c.id NOT IN (SELECT customer_id FROM tickets WHERE customer_id IS NOT NULL)
          AND c.id NOT IN (SELECT customer_id FROM channel_identities)
          AND c.id NOT IN (SELECT customer_id FROM handoffs WHERE customer_id IS NOT NULL)
        ORDER BY c.id DESC LIMIT 1""", category)
    assert rows, f"no unused customer with a {category}"
    serial, email, order, customer_id = rows[0]
    return str(serial), str(email), str(order), int(customer_id)


def report_presence(stack: Stack, customer: SioCustomer) -> None:
    """What the open chat page does every 20 s: the notifier only pushes into a chat that is there."""
    req = urllib.request.Request(f"{stack.web_url}/chat/presence", method="POST",
                                 data=json.dumps(customer.proof()).encode(),
                                 headers={"Content-Type": "application/json"})
    assert urllib.request.urlopen(req, timeout=10).status == 204


def tracker_events(stack: Stack, conversation: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(stack.rasa_request(f"/conversations/{conversation}/tracker"), timeout=30) as resp:
        return list(json.loads(resp.read()).get("events") or [])


def safety_handoffs(stack: Stack, customer_id: int) -> list[tuple[Any, ...]]:
    return query(stack, """SELECT h.status, h.priority, t.number, h.conversation_id FROM handoffs h
                           LEFT JOIN tickets t ON t.id = h.ticket_id
                           WHERE h.customer_id = ? AND h.reason = 'safety_fault'""", customer_id)


def test_case7_a_fault_while_a_person_has_the_chat_reaches_customer_and_agent_at_once_and_once(stack: Stack):
    serial, email, order, _ = fresh_customer(stack, "washing_machine")
    token = admin(stack)
    customer = SioCustomer(stack)
    try:
        verify_as(customer, email, order)
        customer.say("I want to talk to a person")
        wait_for_bot(customer, "bringing in a person")
        handoff = find_handoff(stack, token, customer.session_id)
        assert stack.api("POST", f"/api/handoffs/{handoff['id']}/claim", token)[0] == 200

        code = free_warning_code(stack, serial)
        report_presence(stack, customer)
        simulator(stack, "inject", serial, code)
        # The customer hears it while the agent has the chat, without writing anything.
        pushed = wait_for_bot(customer, rf"\(code {code}\)")
        number = re.search(r"T-\d{6}", pushed["text"]).group(0)

        # The agent sees a system note with the ticket; no line of the transcript is a triggered intent.
        status, detail = stack.api("GET", f"/api/handoffs/{handoff['id']}", token)
        assert status == 200
        notes = [m["body"] for m in detail["messages"] if m["kind"] == "system"]
        assert any(n.startswith(f"Device fault on ticket {number}, told to the customer") for n in notes), notes
        assert not [t for t in detail["transcript"] if "EXTERNAL" in t["text"]], detail["transcript"]
        assert [t["text"] for t in detail["transcript"] if t["from"] == "customer"][-1] == "I want to talk to a person"
        assert any(number in t["text"] for t in detail["transcript"] if t["from"] == "bot")

        # Delivered once, on the first push: nothing more reaches the customer, Rasa recorded no triggered intent.
        assert customer.silent_for(3), customer.received[-3:]
        assert query(stack, """SELECT m.status, m.attempts FROM proactive_messages m JOIN tickets t ON t.id = m.ticket_id
                               WHERE t.number = ?""", number) == [("sent", 1)]
        assert not [e for e in tracker_events(stack, customer.session_id)
                    if e.get("event") == "user" and str(e.get("text") or "").startswith("EXTERNAL")]
    finally:
        customer.close()


def test_case6_a_gas_alarm_in_an_open_chat_brings_in_one_person_at_once_and_says_so(stack: Stack):
    serial, email, order, customer_id = fresh_customer(stack, "boiler")
    customer = SioCustomer(stack)
    try:
        verify_as(customer, email, order)
        report_presence(stack, customer)
        simulator(stack, "inject", serial, "E99")
        # Rasa's socket.io channel sends each paragraph as a message of its own: safety steps first, then the ticket.
        pushed = wait_for_bot(customer, r"Important, please read this first")
        assert "Leave the building now" in pushed["text"]
        number = re.search(r"T-\d{6}", wait_for_bot(customer, r"I've opened ticket T-\d{6}")["text"]).group(0)
        told = wait_for_bot(customer, "bringing in a person")
        assert "can be dangerous" in told["text"] and number in told["text"]

        assert safety_handoffs(stack, customer_id) == [("queued", "urgent", number, customer.session_id)]
        # The device reports the alarm again: the same episode, no second ticket, message or handoff.
        simulator(stack, "inject", serial, "E99")
        assert customer.silent_for(3), customer.received[-3:]
        assert len(safety_handoffs(stack, customer_id)) == 1
        assert query(stack, "SELECT count(*) FROM tickets WHERE customer_id = ? AND fault_code = 'E99'", customer_id) == [(1,)]
    finally:
        customer.close()


def test_case6_a_gas_alarm_with_no_open_chat_queues_one_callback_and_the_customer_hears_it_next_visit(stack: Stack):
    serial, email, order, customer_id = fresh_customer(stack, "boiler")
    simulator(stack, "inject", serial, "E99")
    # Nobody to tell in a chat: a person is brought in anyway, at once, without the customer writing.
    wait_until(lambda: bool(safety_handoffs(stack, customer_id)), 60, "a safety handoff is queued")
    [(status, priority, number, _conversation)] = safety_handoffs(stack, customer_id)
    assert (status, priority) == ("callback", "urgent")
    token = admin(stack)
    callbacks = stack.api("GET", "/api/handoffs?view=callbacks", token)[1]
    assert any(h["ticket"] == number and h["priority"] == "urgent" for h in callbacks), callbacks

    customer = SioCustomer(stack)
    try:
        verify_as(customer, email, order)
        held = wait_for_bot(customer, number)
        assert "A person from our service team is already on it" in held["text"]
        assert any(t.startswith("Important, please read this first") for t in customer.received)
    finally:
        customer.close()
    assert len(safety_handoffs(stack, customer_id)) == 1  # the visit did not queue a second one


def test_case10_staff_status_changes_reach_the_customers_chat_once_per_change(stack: Stack):
    _serial, email, order, customer_id = fresh_customer(stack, "dishwasher")
    token = admin(stack)
    status, ticket = stack.api("POST", "/api/tickets", token, {"customer_id": customer_id, "category": "general",
                                                               "title": "Dishwasher door hinge loose"})
    assert status == 201
    number = ticket["number"]
    customer = SioCustomer(stack)
    try:
        verify_as(customer, email, order)
        report_presence(stack, customer)
        status, _ = stack.api("PATCH", f"/api/tickets/{number}", token,
                              {"status": "in_progress", "note": "A technician is scheduled for Tuesday 10:00."})
        assert status == 200
        update = wait_for_bot(customer, rf"An update on your ticket {number}")
        assert update["text"] == (f"An update on your ticket {number} (Dishwasher door hinge loose): our team is working "
                                  "on it. Note from our team: A technician is scheduled for Tuesday 10:00.")

        report_presence(stack, customer)
        assert stack.api("PATCH", f"/api/tickets/{number}", token, {"status": "resolved"})[0] == 200
        assert stack.api("PATCH", f"/api/tickets/{number}", token, {"status": "resolved"})[0] == 200  # no change
        resolved = wait_for_bot(customer, rf"An update on your ticket {number}")
        assert resolved["text"].endswith("it has been resolved.")
        assert customer.silent_for(3), customer.received[-3:]
    finally:
        customer.close()
    rows = query(stack, """SELECT m.status, e.author FROM proactive_messages m JOIN tickets t ON t.id = m.ticket_id
                           JOIN ticket_events e ON e.id = m.ticket_event_id
                           WHERE t.number = ? AND m.kind = 'ticket_update'""", number)
    assert rows == [("sent", "admin"), ("sent", "admin")]  # one per change, the repeated PATCH changed nothing
