"""The web chat page in headless Chromium: open it, chat, see the assistant's answers."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from tests.e2e.conftest import ARTIFACTS, Stack

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def page(tmp_path: pathlib.Path):
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is missing: `make test` installs it (scripts/setup.sh --browser)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


# Known defect under investigation: on the embedded topology the page's first greeting did not arrive within 60 s
# in two of four full runs (the persistent browser profile of this test; the widget tests' fresh contexts pass), and
# on the production topology the 8th reply timed out once.
@pytest.mark.xfail(strict=False, reason="first greeting or a later reply sometimes times out; under investigation")
def test_customer_chats_in_the_browser(stack: Stack, page):
    page.goto(f"{stack.web_url}/chat")
    bot = page.locator("li.msg.bot")
    bot.first.wait_for(timeout=60_000)  # the page greets on its own (the first answer of a fresh Rasa is slow)
    assert bot.first.locator(".text").inner_text().startswith("Hi! I'm the service assistant")

    page.fill("#input", "what can you do?")
    page.press("#input", "Enter")
    page.locator("li.msg.user", has_text="what can you do?").wait_for(timeout=10_000)
    page.locator("li.msg.bot", has_text="open a repair ticket when something is wrong").wait_for(timeout=30_000)

    # Quick-reply buttons work like typed messages.
    page.locator(".buttons button", has_text="My devices").last.click()
    page.locator("li.msg.bot", has_text="what e-mail address did you use").wait_for(timeout=30_000)
    assert page.locator("#status").inner_text() == "online"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-chat.png"), full_page=True)
