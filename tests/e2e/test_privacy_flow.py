"""Privacy end to end through the real processes (launcher of `make run`: Rasa, actions, web, worker, Mosquitto).

A demo customer chats over socket.io and REST (verifying with e-mail and order number), is handed to an
agent, gets a ticket, and their device sends telemetry and a malformed message (a dead letter). Erasing them
through the API leaves none of their identifiers in any CRM table, the tracker store or any log file;
ticket counts per category survive; their device is refused by the broker; re-running changes nothing;
an erase killed half way (kill -9) is finished by re-running it. Revoking telemetry consent refuses the
device's telemetry as ``no_consent`` within 5 s with the worker running.

Both topologies: the CRM and the tracker store are read through their URLs (``DATABASE_URL`` and
``TRACKER_STORE_URL`` / ``TRACKER_*`` of the stack's env) with SQLAlchemy: SQLite files on the embedded
stack, PostgreSQL databases on the production one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import inspect

from crm_store.db import get_engine
from crm_store.tracker_store import TrackerStore, tracker_store_url
from device_hooks.simulator import normal_readings
from crm_store.enums import ApplianceCategory
from tests.e2e.conftest import ROOT, Stack
from tests.e2e.test_device_flows import admin, query, verify_as
from tests.e2e.test_handoff_flow import SioCustomer, agent_token, find_handoff  # noqa: F401  (fixture)
from tests.privacy.builder import scan_crm, scan_tracker

APP_PY = str(ROOT / ".venv-app" / "bin" / "python")



def stores(stack: Stack) -> TrackerStore:
    """The stack's tracker store, read through its URL (``TRACKER_STORE_URL`` or the ``TRACKER_*`` variables of
    the stack's env) like the CRM through ``DATABASE_URL``: SQLite files on the embedded topology, PostgreSQL
    databases on the production one (checked, so that a production run never silently reads SQLite)."""
    url = tracker_store_url(stack.env)
    assert url, "the stack has no tracker store configured"
    tracker = TrackerStore(url)
    expected = "sqlite" if stack.topology == "embedded" else "postgresql"
    assert get_engine(stack.database_url).dialect.name == expected, stack.database_url
    assert tracker.engine.dialect.name == expected, url
    return tracker


def pick_customer(stack: Stack, skip: set[int], *, proactive: bool = False) -> dict[str, Any]:
    """A demo customer (not Anna, whom other tests use) with a phone, an order and a provisioned device, and
    a name no other customer has (the scans look for it). ``proactive``: one whose proactive consent is on
    (about one demo customer in ten has it off, so turning it off would record no change)."""
    tokens = json.loads((stack.work / "device_tokens.json").read_text())
    rows = query(stack, """
        SELECT c.id, c.full_name, c.email, c.phone FROM customers c
        WHERE c.id > 1 AND c.phone IS NOT NULL
          AND EXISTS (SELECT 1 FROM purchases p WHERE p.customer_id = c.id)
          AND EXISTS (SELECT 1 FROM devices d JOIN product_models m ON m.id = d.model_id
                      WHERE d.customer_id = c.id AND m.category != 'cold_chain_logger')
          AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.customer_id = c.id)
          AND (SELECT count(*) FROM customers c2 WHERE c2.full_name = c.full_name) = 1
          AND NOT EXISTS (SELECT 1 FROM consent_events e WHERE e.customer_id = c.id)
          AND (c.consent_proactive OR NOT ?)
        ORDER BY c.id""", proactive)
    for cid, name, email, phone in rows:
        if cid in skip:
            continue
        serials = [r[0] for r in query(stack, "SELECT serial FROM devices WHERE customer_id = ? ORDER BY id", cid)]
        if all(s in tokens for s in serials):
            orders = [r[0] for r in query(stack, "SELECT order_number FROM purchases WHERE customer_id = ?", cid)]
            category = query(stack, "SELECT m.category FROM devices d JOIN product_models m ON m.id = d.model_id "
                                    "WHERE d.serial = ?", serials[0])[0][0]
            return {"id": cid, "name": name, "email": email, "phone": phone, "orders": orders, "serials": serials,
                    "tokens": {s: tokens[s] for s in serials}, "category": category,
                    "needles": [name, email, phone, *orders, *serials]}
    raise AssertionError("no suitable demo customer")


def device_client(stack: Stack, serial: str, token: str) -> tuple[mqtt.Client, Any]:
    """Connects as the device; returns (client, reason code of the CONNACK)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{serial}-{uuid.uuid4().hex[:6]}")
    client.username_pw_set(serial, token)
    result: dict[str, Any] = {}
    client.on_connect = lambda c, u, f, rc, p: result.setdefault("rc", rc)
    port, tls = stack.device_mqtt()
    if tls is not None:
        tls.apply(client)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.time() + 10
    while "rc" not in result and time.time() < deadline:
        time.sleep(0.05)
    return client, result.get("rc")


def publish(client: mqtt.Client, serial: str, kind: str, payload: bytes) -> None:
    info = client.publish(f"devices/{serial}/{kind}", payload, qos=1)
    info.wait_for_publish(10)


def telemetry(seq: int, category: str) -> bytes:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
    return json.dumps({"ts": ts, "seq": seq, "readings": normal_readings(ApplianceCategory(category), __import__("random").Random(seq))}).encode()


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def scan_logs(stack: Stack, needles: list[str]) -> dict[str, int]:
    hits: dict[str, int] = {}
    for path in sorted((stack.work / "log").rglob("*")):
        if path.is_file():
            text = path.read_text(errors="replace").lower()
            n = sum(text.count(needle.lower()) for needle in needles)
            if n:
                hits[path.name] = n
    return hits


def tickets_per_category(stack: Stack) -> dict[str, int]:
    return dict(query(stack, "SELECT category, count(*) FROM tickets GROUP BY category"))


def all_counts(stack: Stack) -> dict[str, int]:
    """Rows per CRM table (SQLite or PostgreSQL, through SQLAlchemy's inspector), but the ingest counters."""
    tables = inspect(get_engine(stack.database_url)).get_table_names()
    return {t: query(stack, f'SELECT count(*) FROM "{t}"')[0][0] for t in tables if t != "ingest_counters"}


def erase(stack: Stack, token: str, cid: int) -> dict[str, Any]:
    status, req = stack.api("DELETE", f"/api/customers/{cid}", token)
    assert status == 202, req
    return wait_for(lambda: (lambda r: r if r["status"] == "done" else None)(
        stack.api("GET", f"/api/erasures/{req['id']}", token)[1]), 90, "the erasure to finish")


def test_erase_end_to_end(stack: Stack, agent_token: str):  # noqa: F811
    token = admin(stack)
    person = pick_customer(stack, set())
    tracker = stores(stack)
    serial = person["serials"][0]
    # Chats: socket.io (verified, then handed to an agent who replies) and REST (verified).
    web = SioCustomer(stack)
    try:
        verify_as(web, person["email"], person["orders"][0])
        web.say("I want to talk to a person")
        handoff = find_handoff(stack, agent_token, web.session_id)
        assert stack.api("POST", f"/api/handoffs/{handoff['id']}/claim", agent_token)[0] == 200
        assert stack.api("POST", f"/api/handoffs/{handoff['id']}/messages", agent_token,
                         {"body": f"Hello {person['name'].split()[0]}, about {serial}?"})[0] in (200, 201)
        assert stack.api("POST", f"/api/handoffs/{handoff['id']}/resolve", agent_token, {"note": "done"})[0] == 200
    finally:
        web.close()
    rest_sender = f"privacy-rest-{uuid.uuid4().hex[:8]}"
    stack.say(rest_sender, "which appliances do I have?")
    stack.say(rest_sender, person["email"])
    assert any("found your account" in (m.get("text") or "") for m in stack.say(rest_sender, person["orders"][0]))
    status, ticket = stack.api("POST", "/api/tickets", token, {
        "customer_id": person["id"], "device_serial": serial, "category": "privacy_e2e", "title": "Noisy drum",
        "description": f"{person['name']} ({person['phone']}) reports noise on {serial}"})
    assert status == 201, ticket
    # Telemetry and a dead letter, sent as the device.
    device, rc = device_client(stack, serial, person["tokens"][serial])
    assert rc == 0, rc
    for seq in range(5):
        publish(device, serial, "telemetry", telemetry(seq + 1, person["category"]))
    publish(device, serial, "telemetry", f'{{"serial": "{serial}", broken'.encode())
    device.loop_stop()
    device.disconnect()
    wait_for(lambda: query(stack, "SELECT count(*) FROM device_messages m JOIN devices d ON d.id = m.device_id "
                                  "WHERE d.serial = ?", serial)[0][0] >= 5, 30, "telemetry stored")
    wait_for(lambda: query(stack, "SELECT count(*) FROM dead_letters WHERE topic = ?",
                           f"devices/{serial}/telemetry")[0][0] >= 1, 30, "the dead letter")
    assert scan_crm(stack.database_url, person["needles"]) and scan_tracker(tracker, person["needles"])
    categories = tickets_per_category(stack)

    started = time.perf_counter()
    request = erase(stack, token, person["id"])
    elapsed = time.perf_counter() - started
    print(f"\nerase through the API: {elapsed:.2f} s; steps: "
          + json.dumps({k: v["rows"] for k, v in request["steps"].items()}))
    assert request["steps"]["chat_conversations"]["conversations"] >= 2
    assert request["steps"]["device_credentials"]["broker"] == "reloaded"

    crm, chats, logs = (scan_crm(stack.database_url, person["needles"]), scan_tracker(tracker, person["needles"]),
                        scan_logs(stack, person["needles"]))
    print(f"erase scan: CRM {sum(crm.values())} hits, tracker store {chats} hits, log files {sum(logs.values())} hits")
    assert (crm, chats, logs) == ({}, 0, {})
    # Every event of both conversations is gone from the tracker store's events table, not only the identifiers.
    assert tracker.conversation_events([web.session_id, rest_sender]) == {}
    assert tickets_per_category(stack) == categories
    # The broker refuses the device at once.
    refused, rc = device_client(stack, serial, person["tokens"][serial])
    refused.loop_stop()
    assert rc is not None and rc.is_failure, rc
    # The REST conversation continues as an anonymous one.
    assert any("e-mail" in (m.get("text") or "") for m in stack.say(rest_sender, "which appliances do I have?"))
    # Re-running (API and command) changes nothing.
    before = all_counts(stack)
    again = erase(stack, token, person["id"])
    assert again["id"] == request["id"] and again["steps"] == request["steps"]
    out = subprocess.run([APP_PY, "-m", "crm_store.erase", "--customer", str(person["id"])], cwd=ROOT, env=stack.env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out.splitlines()[-1])["id"] == request["id"]
    assert all_counts(stack) == {**before, "access_audit": all_counts(stack)["access_audit"]}
    assert scan_crm(stack.database_url, person["needles"]) == {} and scan_tracker(tracker, person["needles"]) == 0


def test_an_erase_killed_half_way_is_finished_by_rerunning_it(stack: Stack):
    person = pick_customer(stack, set())
    tracker = stores(stack)
    stack.say(f"privacy-kill-{uuid.uuid4().hex[:8]}", "which appliances do I have?")
    cmd = [APP_PY, "-m", "crm_store.erase", "--customer", str(person["id"])]
    proc = subprocess.Popen([*cmd, "--pause-after", "tickets"], cwd=ROOT, env=stack.env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "PAUSED tickets"  # type: ignore[union-attr]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    status, steps = query(stack, "SELECT status, steps FROM erasure_requests WHERE customer_id = ? "
                                 "ORDER BY id DESC LIMIT 1", person["id"])[0]
    steps = json.loads(steps) if isinstance(steps, str) else steps  # JSON text on SQLite, decoded by psycopg
    assert status == "running" and "tickets" in steps and "customer" not in steps
    assert query(stack, "SELECT count(*) FROM customers WHERE id = ?", person["id"])[0][0] == 1
    # Re-run at once (the web service's privacy job may take it over first: either finishes it).
    subprocess.run(cmd, cwd=ROOT, env=stack.env, capture_output=True, timeout=60)
    wait_for(lambda: query(stack, "SELECT status FROM erasure_requests WHERE customer_id = ? ORDER BY id DESC LIMIT 1",
                           person["id"])[0][0] == "done", 60, "the erasure to be finished")
    assert scan_crm(stack.database_url, person["needles"]) == {}
    assert scan_tracker(tracker, person["needles"]) == 0


def test_revoked_telemetry_consent_refuses_the_next_telemetry_within_5_s(stack: Stack):
    token = admin(stack)
    person = pick_customer(stack, set())
    serial = person["serials"][0]
    device, rc = device_client(stack, serial, person["tokens"][serial])
    assert rc == 0
    no_consent = "SELECT coalesce(sum(value), 0) FROM ingest_counters WHERE name LIKE '%no_consent%'"
    stored = "SELECT count(*) FROM device_messages m JOIN devices d ON d.id = m.device_id WHERE d.serial = ?"
    try:
        publish(device, serial, "telemetry", telemetry(1, person["category"]))
        wait_for(lambda: query(stack, stored, serial)[0][0] >= 1, 30, "telemetry stored while consent is given")
        refused_before = query(stack, no_consent)[0][0]
        status, body = stack.api("PUT", f"/api/customers/{person['id']}/consent", token, {"telemetry": False})
        assert status == 200 and body["consent"]["telemetry"] is False
        revoked_at = time.time()
        seq, refused_after = 2, None
        # One reading every 0.25 s: the first one sent 5 s after the change must be refused, and from then on all.
        while time.time() - revoked_at < 8:
            before_send = query(stack, stored, serial)[0][0]
            sent_at = time.time()
            publish(device, serial, "telemetry", telemetry(seq, person["category"]))
            seq += 1
            if sent_at - revoked_at >= 5:
                wait_for(lambda: query(stack, no_consent)[0][0] > refused_before, 5, "a no_consent refusal")
                assert query(stack, stored, serial)[0][0] == before_send, "telemetry stored 5 s after consent was revoked"
                refused_after = sent_at - revoked_at
                break
            time.sleep(0.25)
        assert refused_after is not None
    finally:
        device.loop_stop()
        device.disconnect()


def _texts(replies: list[dict[str, Any]]) -> str:
    return " ".join(m.get("text") or "" for m in replies)


def test_the_customer_asks_from_the_chat_export_alerts_off_and_a_confirmed_erasure(stack: Stack):
    person = pick_customer(stack, set(), proactive=True)
    tracker = stores(stack)
    sender = f"privacy-chat-{uuid.uuid4().hex[:8]}"
    assert "e-mail" in _texts(stack.say(sender, "send me my data"))  # verification first
    stack.say(sender, person["email"])
    reply = _texts(stack.say(sender, person["orders"][0]))
    assert "privacy team" in reply and "registered with us" in reply, reply
    assert query(stack, "SELECT count(*) FROM access_audit WHERE action = 'export_requested' AND customer_id = ?",
                 person["id"])[0][0] == 1
    assert "won't send you messages" in _texts(stack.say(sender, "stop sending me device alerts"))
    assert query(stack, "SELECT consent_proactive FROM customers WHERE id = ?", person["id"])[0][0] == 0
    assert query(stack, "SELECT kind, granted, source FROM consent_events WHERE customer_id = ?", person["id"]) == [
        ("proactive", 0, "chat")]
    replies = stack.say(sender, "delete my data")
    assert "cannot be undone" in _texts(replies)
    assert query(stack, "SELECT count(*) FROM erasure_requests WHERE customer_id = ?", person["id"])[0][0] == 0
    assert "/confirm_erasure" in [b["payload"] for m in replies for b in m.get("buttons") or []]
    assert "erasure request is registered" in _texts(stack.say(sender, "/confirm_erasure"))
    # The web service's privacy job runs it CHAT_ERASURE_DELAY_SECONDS later (5 s here), after this turn is stored;
    # the conversation too.
    wait_for(lambda: query(stack, "SELECT status FROM erasure_requests WHERE customer_id = ?", person["id"])
             == [("done",)], 150, "the chat erasure to be done")
    assert scan_crm(stack.database_url, person["needles"]) == {}
    assert scan_tracker(tracker, person["needles"]) == 0
    assert tracker.conversation_events([sender]) == {}
    assert "e-mail" in _texts(stack.say(sender, "which appliances do I have?"))  # anonymous now
