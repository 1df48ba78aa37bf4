"""Consent in the agent console, in Debian's Chromium, through the real processes: a verified customer asks
for a person; the agent opens the conversation, sees the customer's consent and its history, withdraws
telemetry consent with the keyboard; the API shows the change with source ``console`` and the agent as
actor; the device worker refuses the device's next telemetry as ``no_consent`` (nothing stored) within 5 s;
giving consent back stores telemetry again. axe-core finds nothing serious, the page logs no error."""

from __future__ import annotations

import subprocess
import time
from typing import Any


from tests.e2e.browser_kit import DESKTOP, axe, shot, watch
from tests.e2e.conftest import ROOT, Stack
from tests.e2e.test_device_flows import admin, query, verify_as
from tests.e2e.test_handoff_flow import SioCustomer, find_handoff
from tests.e2e.test_privacy_flow import device_client, pick_customer, publish, telemetry, wait_for

AGENT, PASSWORD, FULL_NAME = "petra", "petra-console-password", "Petra Nowak"
NO_CONSENT = "SELECT coalesce(sum(value), 0) FROM ingest_counters WHERE name LIKE '%no_consent%'"
STORED = "SELECT count(*) FROM device_messages m JOIN devices d ON d.id = m.device_id WHERE d.serial = ?"


def agent(stack: Stack) -> str:
    subprocess.run([str(ROOT / ".venv-app" / "bin" / "python"), "-m", "web_service.manage", "ensure-user", "--username", AGENT,
                    "--role", "agent", "--full-name", FULL_NAME, "--password-env", "PW"],
                   cwd=ROOT, env=dict(stack.env, PW=PASSWORD), check=True)
    status, body = stack.api("POST", "/api/auth/token", body={"username": AGENT, "password": PASSWORD})
    assert status == 200, body
    return str(body["access_token"])


def test_an_agent_withdraws_telemetry_consent_in_the_console_and_the_worker_obeys(stack: Stack, browser: Any):
    token, admin_token = agent(stack), admin(stack)
    person = pick_customer(stack, set())
    serial = person["serials"][0]
    device, rc = device_client(stack, serial, person["tokens"][serial])
    assert rc == 0, rc
    try:
        publish(device, serial, "telemetry", telemetry(1, person["category"]))
        wait_for(lambda: query(stack, STORED, serial)[0][0] >= 1, 30, "telemetry stored while consent is given")

        web = SioCustomer(stack)
        try:
            verify_as(web, person["email"], person["orders"][0])
            web.say("I want to talk to a person")
            handoff = find_handoff(stack, token, web.session_id)
        finally:
            web.close()

        watched = watch(browser.new_context(viewport=DESKTOP).new_page())
        page = watched.page
        page.goto(f"{stack.web_url}/console?conversation={handoff['id']}")
        page.fill("#username", AGENT)
        page.fill("#password", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.locator("#conv-title", has_text=person["name"]).wait_for(timeout=15_000)
        box = page.locator("#consent-telemetry")
        box.wait_for(timeout=15_000)
        assert box.is_checked() and box.is_enabled()
        assert page.locator("#consent-save").is_disabled()  # nothing staged yet
        assert page.get_by_label("Device telemetry").count() == 1  # the box has its accessible name

        # Keyboard only: Space stages the change, the save button takes it.
        box.focus()
        page.keyboard.press("Space")
        page.locator("#consent-status", has_text="1 unsaved consent change").wait_for(timeout=5_000)
        page.locator("#consent-save").focus()
        page.keyboard.press("Enter")
        page.locator("#consent-status", has_text="Consent saved: telemetry withdrawn").wait_for(timeout=15_000)
        saved_at = time.monotonic()
        row = page.locator("#consent-history li").first  # newest first
        assert [row.get_attribute(f"data-{a}") for a in ("kind", "granted", "source", "actor")] == [
            "telemetry", "false", "console", AGENT]
        assert "telemetry withdrawn" in row.inner_text() and f"by {AGENT}" in row.inner_text()
        assert not box.is_checked()

        # The API shows the change, recorded with source console and the agent who made it.
        status, consent = stack.api("GET", f"/api/customers/{person['id']}/consent", admin_token)
        assert status == 200 and consent["consent"]["telemetry"] is False
        last = consent["history"][-1]
        assert (last["kind"], last["granted"], last["source"], last["actor"]) == ("telemetry", False, "console", AGENT)

        # The worker refuses the device's next telemetry (consent is read per batch) within 5 s of the save.
        refused_before, stored_before = query(stack, NO_CONSENT)[0][0], query(stack, STORED, serial)[0][0]
        publish(device, serial, "telemetry", telemetry(2, person["category"]))
        wait_for(lambda: query(stack, NO_CONSENT)[0][0] > refused_before,
                 max(0.0, 5 - (time.monotonic() - saved_at)), "a no_consent refusal within 5 s of the console's change")
        assert query(stack, STORED, serial)[0][0] == stored_before, "telemetry stored after consent was withdrawn"

        assert axe(page, "console-consent") == []
        shot(page, "console-consent")

        # Consent given back in the console: telemetry is stored again; the history has both changes.
        box.check()
        page.locator("#consent-save").click()
        page.locator("#consent-status", has_text="Consent saved: telemetry given").wait_for(timeout=15_000)
        assert page.locator("#consent-history li[data-source=console]").count() == 2
        publish(device, serial, "telemetry", telemetry(3, person["category"]))
        wait_for(lambda: query(stack, STORED, serial)[0][0] > stored_before, 30, "telemetry stored again")
        watched.assert_clean()
    finally:
        device.loop_stop()
        device.disconnect()
    # The conversation leaves the queue (claimed and resolved), so that it does not wait for other tests' agents.
    assert stack.api("POST", f"/api/handoffs/{handoff['id']}/claim", token)[0] == 200
    assert stack.api("POST", f"/api/handoffs/{handoff['id']}/resolve", token, {"note": "consent test"})[0] == 200
