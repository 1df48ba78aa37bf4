"""The console's consent panel in Debian's Chromium against a live web service (SQLite and PostgreSQL), without
Rasa: it shows the customer's consent and history, a change is sent as a partial update with source
``console`` (a change another user made meanwhile to another kind survives), axe-core finds nothing serious.
The whole path to the device worker is tests/e2e/test_browser_consent.py."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
import pytest

from crm_store.db import session_scope
from crm_store.enums import HandoffReason, TicketPriority, TicketSource
from crm_store.models import Customer, utcnow
from crm_store.repositories.handoffs import create_handoff
from crm_store.repositories.tickets import open_ticket
from tests.e2e.browser_kit import DESKTOP, axe, launch, watch
from tests.web_service.conftest import PASSWORDS
from tests.web_service.live import bearer, live_server


def handoff_of(url: str, customer_id: int) -> tuple[int, str]:
    """A queued conversation of a verified customer (the packet as actions/handoff.py writes it)."""
    conversation = f"consent-{uuid.uuid4().hex[:8]}"
    with session_scope(url) as s:
        c = s.get(Customer, customer_id)
        ticket, _ = open_ticket(s, customer_id=customer_id, device_id=None, source=TicketSource.CHAT, category="escalation",
                                title="Chat escalated", dedup_key=f"handoff:{conversation}", author="bot")
        handoff, _ = create_handoff(
            s, conversation_id=conversation, channel="socketio", customer_id=customer_id, ticket_id=ticket.id,
            reason=HandoffReason.CUSTOMER_REQUEST, trigger_key="customer_request", priority=TicketPriority.NORMAL,
            language="en", category=None, summary="consent test", first_response_due_at=utcnow() + dt.timedelta(minutes=15),
            packet={"transcript": [], "devices": [], "customer": {
                "id": customer_id, "name": c.full_name, "loyalty_tier": "standard", "customer_since": "2020-01-01",
                "language": "en", "purchases": 0, "email": c.email, "phone": c.phone}})
        return handoff.id, c.full_name


def test_the_console_changes_consent_as_a_partial_update_with_source_console(api_db, monkeypatch: pytest.MonkeyPatch):
    from playwright.sync_api import sync_playwright

    customer_id = 4
    with session_scope(api_db) as s:
        c = s.get(Customer, customer_id)
        c.consent_telemetry, c.consent_marketing = True, False
    hid, name = handoff_of(api_db, customer_id)
    with live_server(monkeypatch, api_db, "http://127.0.0.1:9", SIGN_IN_RATE_PER_CLIENT="100000/minute") as base, \
            sync_playwright() as pw:
        browser = launch(pw)
        try:
            w = watch(browser.new_context(viewport=DESKTOP).new_page())
            p = w.page
            p.goto(f"{base}/console?conversation={hid}")
            p.fill("#username", "agent1")
            p.fill("#password", PASSWORDS["agent1"])
            p.click("#login-form button[type=submit]")
            p.locator("#conv-title", has_text=name).wait_for(timeout=15_000)
            box = p.locator("#consent-telemetry")
            box.wait_for(timeout=15_000)
            assert box.is_checked() and not p.locator("#consent-marketing").is_checked()
            assert p.locator("#consent-save").is_disabled()

            # Meanwhile a supervisor gives marketing consent through the API; the agent's page still shows it off.
            admin = bearer(base, "super1")
            resp = httpx.put(f"{base}/api/customers/{customer_id}/consent", headers=admin, json={"marketing": True}, timeout=10)
            assert resp.status_code == 200 and resp.json()["consent"]["marketing"] is True

            box.focus()
            p.keyboard.press("Space")  # keyboard only
            p.locator("#consent-status", has_text="1 unsaved consent change").wait_for(timeout=5_000)
            p.locator("#consent-save").focus()
            p.keyboard.press("Enter")
            p.locator("#consent-status", has_text="Consent saved: telemetry withdrawn").wait_for(timeout=10_000)
            # Only telemetry was sent: the supervisor's marketing consent survives, and the page now shows it.
            assert p.locator("#consent-marketing").is_checked()
            newest = p.locator("#consent-history li").first
            assert [newest.get_attribute(f"data-{a}") for a in ("kind", "granted", "source", "actor")] == [
                "telemetry", "false", "console", "agent1"]

            body = httpx.get(f"{base}/api/customers/{customer_id}/consent", headers=admin, timeout=10).json()
            assert body["consent"] == {"telemetry": False, "proactive": body["consent"]["proactive"], "marketing": True}
            assert [(e["kind"], e["granted"], e["source"], e["actor"]) for e in body["history"][-2:]] == [
                ("marketing", True, "api", "super1"), ("telemetry", False, "console", "agent1")]
            assert axe(p, "console-consent-panel") == []
            w.assert_clean()
        finally:
            browser.close()
