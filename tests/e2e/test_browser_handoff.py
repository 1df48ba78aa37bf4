"""Two browser pages at once in headless Chromium: a customer in the web chat and an agent in the console
doing the whole round trip (escalate, claim, reply, resolve, CSAT), then the supervisor view."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from tests.e2e.browser_kit import watch
from tests.e2e.conftest import ARTIFACTS, ROOT, Stack
from tests.e2e.test_browser import CHROMIUM

AGENT, PASSWORD = "lena", "lena-console-password"


@pytest.fixture
def browser(tmp_path: pathlib.Path):
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is missing: `make test` installs it (scripts/setup.sh --browser)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                                           "--disable-component-update", "--disable-sync"])
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-form button[type=submit]")
    page.locator("#who").filter(has_text=username if username == "admin" else "Lena").wait_for(timeout=15_000)
    assert page.locator("#login").is_hidden()


def test_customer_and_agent_pages_round_trip(stack: Stack, browser):
    subprocess.run([str(ROOT / ".venv-app" / "bin" / "python"), "-m", "web_service.manage", "ensure-user", "--username", AGENT,
                    "--role", "agent", "--full-name", "Lena Berg", "--password-env", "PW"],
                   cwd=ROOT, env=dict(stack.env, PW=PASSWORD), check=True)
    watched = watch(browser.new_context(viewport={"width": 700, "height": 900}).new_page())
    customer = watched.page
    agent = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()

    customer.goto(f"{stack.web_url}/chat")
    watched.wait_greeting()
    for text, answer in (("link my account", "what e-mail address"), ("anna.schmidt@example.com", "order numbers"),
                         ("ORD-2021-000101", "I've found your account")):
        customer.fill("#input", text)
        customer.press("#input", "Enter")
        customer.locator("li.msg.bot", has_text=answer).wait_for(timeout=30_000)
    customer.fill("#input", "I want to talk to a person")
    customer.press("#input", "Enter")
    customer.locator("li.msg.bot", has_text="bringing in a person from our service team").wait_for(timeout=30_000)
    session_id = json.loads(customer.evaluate("localStorage.getItem('appliance-care-chat')"))["sessionId"]

    agent.goto(f"{stack.web_url}/console")
    sign_in(agent, AGENT, PASSWORD)
    row = agent.locator(f'#queue tr[data-conversation="{session_id}"]')
    row.wait_for(timeout=15_000)
    assert "customer asked for a person" in row.inner_text() and "Anna Schmidt" in row.inner_text()
    row.locator("button.claim").click()
    # Customer 360 from the handoff packet and the CRM: devices, purchases, tickets.
    agent.locator("#devices .device", has_text="WM80-23000102").wait_for(timeout=15_000)
    agent.locator("#purchases li", has_text="ORD-2021-000101").wait_for(timeout=15_000)
    agent.locator("#transcript li.customer", has_text="I want to talk to a person").wait_for(timeout=15_000)
    agent.fill("#reply", "Hello, this is Lena from the service team. How can I help?")
    agent.press("#reply", "Enter")
    customer.locator("li.msg.agent", has_text="Hello, this is Lena from the service team.").wait_for(timeout=30_000)
    agent.locator("#transcript li.agent", has_text="Lena: Hello, this is Lena").wait_for(timeout=15_000)

    # The bot is paused: the customer's answer reaches the agent's live transcript, not the bot.
    customer.fill("#input", "My fridge is warm since yesterday")
    customer.press("#input", "Enter")
    agent.locator("#transcript li.customer", has_text="My fridge is warm since yesterday").wait_for(timeout=15_000)
    agent.fill("#note", "Check the door seal first")
    agent.press("#note", "Enter")
    agent.locator("#transcript li.note", has_text="Check the door seal first").wait_for(timeout=15_000)
    ARTIFACTS.mkdir(exist_ok=True)
    agent.screenshot(path=str(ARTIFACTS / "handoff-agent-console.png"), full_page=True)

    agent.click("#resolve")
    customer.locator("li.msg.bot", has_text="How would you rate the help you got today").wait_for(timeout=30_000)
    customer.locator(".buttons button", has_text="5").last.click()
    customer.locator("li.msg.bot", has_text="Anything you'd like to add?").wait_for(timeout=30_000)
    customer.locator(".buttons button", has_text="No comment").last.click()
    customer.locator("li.msg.bot", has_text="Thank you for your rating!").wait_for(timeout=30_000)
    customer.screenshot(path=str(ARTIFACTS / "handoff-customer-chat.png"), full_page=True)

    # The supervisor view shows the rating and the rates.
    agent.click("#logout")
    sign_in(agent, "admin", stack.env["ADMIN_PASSWORD"])
    agent.click("#tab-supervisor")
    agent.locator(".kpi", has_text="CSAT average").wait_for(timeout=15_000)
    assert "/ 5" in agent.locator(".kpi", has_text="CSAT average").inner_text()
    assert agent.locator("#chart-csat rect").count() == 5
    # Routing skills are edited here too: Lena now takes fridge and boiler conversations in German and English.
    lena = agent.locator('#agents tr[data-user="lena"]')
    lena.locator(".skill-categories").fill("fridge, boiler")
    lena.locator(".skill-languages").fill("de, en")
    lena.locator(".save-skills").click()
    lena.locator(".save-skills", has_text="Saved").wait_for(timeout=10_000)
    status, token = stack.api("POST", "/api/auth/token", body={"username": AGENT, "password": PASSWORD})
    assert stack.api("GET", "/api/console/me", token["access_token"])[1]["skills"] == {
        "categories": ["boiler", "fridge"], "languages": ["de", "en"]}
    agent.screenshot(path=str(ARTIFACTS / "handoff-supervisor.png"), full_page=True)
