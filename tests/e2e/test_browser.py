"""The web chat page in headless Chromium: open it, chat, see the assistant's answers."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from tests.e2e.browser_kit import watch
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


def test_customer_chats_in_the_browser(stack: Stack, page):
    watched = watch(page)
    page.goto(f"{stack.web_url}/chat")
    bot = page.locator("li.msg.bot")
    watched.wait_greeting()  # the page greets on its own, in the tab that holds the conversation's lock
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


def test_the_greeting_waits_for_the_tab_lock(stack: Stack, page):
    """The tab that writes the bot's replies holds a Web Lock; when the lock is granted after Rasa confirmed the
    session (a busy browser), the page still greets once it holds it (it used to stay silent for good)."""
    page.add_init_script("""(() => {
      const request = navigator.locks.request.bind(navigator.locks);
      navigator.locks.request = (name, cb) => new Promise((resolve) => setTimeout(() => resolve(request(name, cb)), 3000));
    })()""")
    watched = watch(page)
    page.goto(f"{stack.web_url}/chat")
    first = watched.wait_greeting()
    assert first.locator(".text").inner_text().startswith("Hi! I'm the service assistant")
    assert any('"session_confirm"' in f for f in watched.frames)
    assert sum('"/greet"' in f for f in watched.frames if f.startswith(">")) == 1  # greeted once
