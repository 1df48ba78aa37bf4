"""Appliance faults end to end through real processes: the simulator publishes as the device to the
project's Mosquitto, the worker opens one ticket, and the owner's open web chat (Rasa's socket.io channel)
receives the bot's message first; the choices work as a conversation. A customer with no open chat gets
the message when they next come to the chat. A device without MQTT reports over HTTP with its token."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from typing import Any

from tests.e2e.conftest import ROOT, Stack
from tests.e2e.test_handoff_flow import SioCustomer


def simulator(stack: Stack, *args: str) -> str:
    cmd = [str(ROOT / ".venv-app" / "bin" / "python"), "-m", "device_hooks.simulator",
           "--tokens-file", str(stack.work / "device_tokens.json"), *stack.simulator_args(), *args]
    return subprocess.run(cmd, cwd=ROOT, env=stack.env, check=True, capture_output=True, text=True, timeout=60).stdout


def query(stack: Stack, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Reads the stack's CRM database (SQLite or PostgreSQL); ``?`` placeholders, in order."""
    from sqlalchemy import text

    from crm_store.db import session_scope

    parts = sql.split("?")
    named = parts[0] + "".join(f":p{i}{part}" for i, part in enumerate(parts[1:]))
    with session_scope(stack.database_url) as session:
        return [tuple(row) for row in session.execute(text(named), {f"p{i}": v for i, v in enumerate(params)})]


def admin(stack: Stack) -> str:
    status, body = stack.api("POST", "/api/auth/token", body={"username": "admin", "password": stack.env["ADMIN_PASSWORD"]})
    assert status == 200
    return str(body["access_token"])


def free_warning_code(stack: Stack, serial: str) -> str:
    """A warning-level fault of the device's model without a rule and without an open ticket."""
    rows = query(stack, """
        SELECT f.code FROM fault_definitions f JOIN devices d ON d.model_id = f.model_id
        WHERE d.serial = ? AND f.severity = 'warning' AND NOT f.safety_critical
          AND f.code NOT IN (SELECT fault_code FROM telemetry_rules r WHERE r.model_id = d.model_id)
          AND 'fault:' || f.code NOT IN (SELECT open_dedup_key FROM tickets t
                                         WHERE t.device_id = d.id AND open_dedup_key IS NOT NULL)
        ORDER BY f.code""", serial)
    assert rows, f"no free fault code for {serial}"
    return str(rows[0][0])


def wait_for_bot(customer: SioCustomer, pattern: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        event = customer.next(deadline - time.time())
        customer.received.append(event.get("text") or "")
        if re.search(pattern, event.get("text") or ""):
            return event
    raise AssertionError(f"no bot message matching {pattern!r}; got {customer.received[-5:]}")


def verify_as(customer: SioCustomer, email: str, order: str) -> None:
    customer.say("which appliances do I have?")
    wait_for_bot(customer, "e-mail")
    customer.say(email)
    wait_for_bot(customer, "order number")
    customer.say(order)
    wait_for_bot(customer, "found your account")


def test_a_device_fault_reaches_the_owners_open_chat_first_and_the_choices_work(stack: Stack):
    customer = SioCustomer(stack)
    try:
        verify_as(customer, "anna.schmidt@example.com", "ORD-2021-000101")
        # The chat page reports that it is open; the notifier only pushes to a chat that is there.
        req = urllib.request.Request(f"{stack.web_url}/chat/presence", method="POST",
                                     data=json.dumps(customer.proof()).encode(),
                                     headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=10).status == 204
        code = free_warning_code(stack, "FR50-21000101")
        simulator(stack, "inject", "FR50-21000101", code)

        pushed = wait_for_bot(customer, r"T-\d{6}", timeout=60)
        number = re.search(r"T-\d{6}", pushed["text"]).group(0)
        assert code in pushed["text"]
        payloads = [b["payload"] for b in pushed.get("quick_replies") or pushed.get("buttons") or []]
        assert any(p.startswith("/book_technician") for p in payloads) and "/request_human" in payloads

        token = admin(stack)
        status, ticket = stack.api("GET", f"/api/tickets/{number}", token)
        assert status == 200 and ticket["source"] == "device" and ticket["fault_code"] == code
        assert [e["kind"] for e in ticket["events"]][:2] == ["created", "customer_notified"]

        # The same fault reported again by the device: an event on the ticket, no second ticket or message.
        simulator(stack, "inject", "FR50-21000101", code)
        assert customer.silent_for(3)
        open_for_code = query(stack, "SELECT count(*) FROM tickets t JOIN devices d ON d.id = t.device_id "
                                     "WHERE d.serial = 'FR50-21000101' AND t.open_dedup_key = ?", f"fault:{code}")
        assert open_for_code == [(1,)]

        # The choices work as a conversation.
        customer.say(next(p for p in payloads if p.startswith("/book_technician")))
        wait_for_bot(customer, "technician")
        status, ticket = stack.api("GET", f"/api/tickets/{number}", token)
        assert "technician_requested" in [e["kind"] for e in ticket["events"]]

        # "How is my fridge doing?" from the latest telemetry.
        simulator(stack, "run", "--serial", "FR50-21000101", "--interval", "0.5", "--duration", "1.5")
        customer.say("how is my fridge doing?")
        wait_for_bot(customer, "°C")
    finally:
        customer.close()


def test_over_http_a_fault_for_a_customer_without_an_open_chat_waits_for_their_next_visit(stack: Stack):
    serial, email, order = query(stack, """
        SELECT d.serial, c.email, p.order_number FROM devices d JOIN customers c ON c.id = d.customer_id
        JOIN purchases p ON p.device_id = d.id JOIN product_models m ON m.id = d.model_id
        WHERE c.consent_proactive AND c.loyalty_tier = 'standard' AND m.category = 'dishwasher' AND c.id > 1
          AND c.id NOT IN (SELECT customer_id FROM tickets WHERE open_dedup_key IS NOT NULL AND customer_id IS NOT NULL)
        ORDER BY c.id LIMIT 1""")[0]
    code = free_warning_code(stack, serial)
    device_token = json.loads((stack.work / "device_tokens.json").read_text())[serial]
    body = json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seq": 1, "code": code}).encode()
    base, context = stack.device_web()  # production: HTTPS only
    req = urllib.request.Request(f"{base}/api/ingest/devices/{serial}/fault", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {device_token}", "Content-Type": "application/json"})
    assert urllib.request.urlopen(req, timeout=10, context=context).status == 202

    deadline = time.time() + 30
    held: list[tuple[Any, ...]] = []
    while time.time() < deadline and not held:
        held = query(stack, """SELECT t.number, m.reason FROM proactive_messages m JOIN tickets t ON t.id = m.ticket_id
                               JOIN devices d ON d.id = t.device_id WHERE d.serial = ? AND m.status = 'held'""", serial)
        time.sleep(0.3)
    assert held and held[0][1] == "unreachable"
    number = held[0][0]

    customer = SioCustomer(stack)
    try:
        verify_as(customer, email, order)
        wait_for_bot(customer, number)
    finally:
        customer.close()
    assert query(stack, "SELECT m.status FROM proactive_messages m JOIN tickets t ON t.id = m.ticket_id WHERE t.number = ?",
                 number) == [("sent",)]
