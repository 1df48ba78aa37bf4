"""The customer's chat widget in Debian's Chromium at phone (390×844) and desktop (1280×800) sizes: typing
indicator, timestamps in the customer's zone, safe Markdown, multi-line composer, stale quick replies,
touch targets, speaker labels, focus, right-to-left text, two tabs of one conversation, unread title,
the socket.io client, axe-core, and no console errors."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.browser_kit import DESKTOP, PHONE, axe, shot, watch
from tests.e2e.conftest import Stack


SHOWN_IDS = "() => [...document.querySelectorAll('li.msg')].map((li) => li.dataset.id)"
SHOWS_THE_STORE = """() => {
    const stored = JSON.parse(localStorage.getItem('appliance-care-chat')).transcript.map((e) => e.id);
    return JSON.stringify(stored) === JSON.stringify((%s)()); }""" % SHOWN_IDS


TYPING_SHOWN = """() => { window.typingShown = [];
    const el = document.getElementById('typing'), text = document.getElementById('typing-text');
    new MutationObserver(() => { if (!el.hidden) window.typingShown.push(text.textContent); })
        .observe(el, { attributes: true, attributeFilter: ['hidden'] }); }"""


def say(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#input", text)
    page.press("#input", "Enter")


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_widget(stack: Stack, browser, size):
    tz = "Asia/Tokyo"
    ctx = browser.new_context(viewport=size, timezone_id=tz, locale="en-GB")
    first = watch(ctx.new_page())
    page = first.page
    page.goto(f"{stack.web_url}/chat")
    first.wait_greeting()
    # The maintained socket.io client speaks Engine.IO v4 to Rasa; the composer has the focus.
    assert page.evaluate("typeof io === 'function' && typeof io.Manager === 'function'")
    assert any("/socket.io/" in url and "EIO=4" in url for _, _, url in first.requests)
    assert page.evaluate("document.activeElement.id") == "input"

    # Typing indicator: shown while the bot works, gone with its answer. A fast answer can hide it before a
    # poll would see it, so an observer records every text it was shown with.
    page.evaluate(TYPING_SHOWN)
    say(page, "what can you do?")
    page.locator("li.msg.bot", has_text="open a repair ticket when something is wrong").wait_for(timeout=60_000)
    assert page.evaluate("window.typingShown") == ["Assistant is typing…"]
    page.locator("#typing").wait_for(state="hidden", timeout=5_000)

    # Time stamps in the customer's zone (the browser's), not the server's.
    stamp = page.locator("li.msg.user time").last
    at = dt.datetime.fromisoformat(stamp.get_attribute("datetime").replace("Z", "+00:00")).astimezone(ZoneInfo(tz))
    assert stamp.inner_text() == at.strftime("%H:%M")

    # Speaker labels for screen readers, announcements in a live region.
    assert page.locator("li.msg.bot .who").last.inner_text() == "Assistant"
    assert page.locator("li.msg.user .who").last.inner_text() == "You"
    assert page.locator("#announcer").get_attribute("aria-live") == "polite"
    assert page.locator("#announcer").inner_text().startswith("Assistant said:")

    # Quick replies: at least 44 px tall; clicking one makes the older ones stale.
    buttons = page.locator(".buttons").last.locator("button")
    box = buttons.first.bounding_box()
    assert box and box["height"] >= 44 and box["width"] >= 44
    page.locator(".buttons button", has_text="My devices").last.click()
    page.locator("li.msg.bot", has_text="what e-mail address did you use").wait_for(timeout=60_000)
    stale = page.locator(".buttons").first.locator("button")
    assert all(stale.nth(i).is_disabled() for i in range(stale.count()))

    # Multi-line composer: Shift+Enter is a new line, Enter sends.
    page.fill("#input", "line one")
    page.press("#input", "Shift+Enter")
    page.type("#input", "line two")
    assert page.input_value("#input") == "line one\nline two"
    page.fill("#input", "")

    # Safe Markdown: formatting and links render, scripts and javascript: links do not.
    html = page.evaluate("ChatRender.markdown('**bold** [site](https://example.com) [bad](javascript:alert(1)) <img src=x onerror=alert(1)>')")
    assert "<strong>bold</strong>" in html and 'href="https://example.com"' in html and 'target="_blank"' in html
    assert "javascript:" not in html and "<img" not in html and "&lt;img" in html  # raw HTML shown as text
    listed = page.evaluate("ChatRender.markdown('I can:\\n- a\\n- b\\nWhat next?')")
    assert "<li>b</li>" in listed and "<p>What next?</p>" in listed  # the line after a list is not swallowed by it

    # Right-to-left text is laid out right to left.
    say(page, "مرحبا، غسالتي لا تعمل")
    rtl = page.locator("li.msg.user .text").last
    rtl.wait_for()
    assert rtl.evaluate("e => getComputedStyle(e).direction") == "rtl"

    # A second tab shows the whole conversation, questions included, and its messages reach the first tab.
    second = watch(ctx.new_page())
    second.page.goto(f"{stack.web_url}/chat")
    second.page.locator("li.msg.user", has_text="what can you do?").wait_for(timeout=10_000)
    second.page.locator("li.msg.bot", has_text="open a repair ticket when something is wrong").wait_for(timeout=10_000)
    # The first tab is in the background now: a new message counts as unread in its title.
    page.evaluate("""() => { Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
                      document.dispatchEvent(new Event('visibilitychange')); }""")
    say(second.page, "hello")
    # The bot's answer is the bubble after "hello" in each tab (not the n-th bubble: the first tab may already
    # show the answer when its bubbles are counted).
    answer = "xpath=following-sibling::li[contains(concat(' ', @class, ' '), ' bot ')]"
    for tab in (page, second.page):
        tab.locator("li.msg.user", has_text="hello").last.locator(answer).first.wait_for(timeout=60_000)
    page.wait_for_function("document.title.startsWith('(')", timeout=10_000)
    assert re.match(r"^\(\d+\) New message", page.title())
    # Each tab comes to show exactly the stored transcript: every entry once, in order (a duplicate or a missed
    # entry never matches, and the wait times out).
    for tab in (page, second.page):
        tab.wait_for_function(SHOWS_THE_STORE, timeout=10_000)
    shown = page.evaluate(SHOWN_IDS)
    assert len(shown) == len(set(shown)) >= 8
    said = page.evaluate("JSON.parse(localStorage.getItem('appliance-care-chat')).transcript.map((e) => e.text)")
    assert said.count("hello") == 1  # the second tab's question was stored once, not once per tab

    # The composer stays on screen (dynamic viewport units), and the page passes axe-core.
    composer = page.locator("#composer").bounding_box()
    assert composer and composer["y"] + composer["height"] <= size["height"] + 1
    name = "phone" if size is PHONE else "desktop"
    shot(page, f"widget-{name}")
    assert axe(page, f"widget-{name}") == []
    first.assert_clean()
    second.assert_clean()
