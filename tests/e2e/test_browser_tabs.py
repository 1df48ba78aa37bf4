"""One conversation in several tabs of one browser (Debian's Chromium): tabs opened at the same moment, as a
browser restoring its tabs does, share one session, with or without a stored session the server refuses; quick
messages from two tabs are each stored once and every tab comes to show exactly the stored transcript."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.browser_kit import watch
from tests.e2e.conftest import Stack

STORE = "appliance-care-chat"
SHOWN_IDS = "() => [...document.querySelectorAll('li.msg')].map((li) => li.dataset.id)"
STORED = f"() => JSON.parse(localStorage.getItem('{STORE}') || '{{\"transcript\": []}}')"
SHOWS_THE_STORE = f"() => JSON.stringify(({STORED})().transcript.map((e) => e.id)) === JSON.stringify(({SHOWN_IDS})())"
# A session the server never issued: its key is refused, and the stored transcript is not this browser's any more.
REFUSED = {"sessionId": "0" * 32, "sessionKey": "not-a-key", "agent": None,
           "transcript": [{"id": "old1", "who": "bot", "text": "an old conversation", "at": "2026-01-01T00:00:00Z"}]}


def open_together(stack: Stack, ctx: Any, n: int, stored: dict[str, Any] | None) -> list[Any]:
    """Opens n chat tabs in one script turn (window.open from a page of the product's origin), with the browser's
    store set first."""
    opener = ctx.new_page()
    opener.goto(f"{stack.web_url}/static/chat.css")
    opener.evaluate("([key, value]) => value ? localStorage.setItem(key, value) : localStorage.removeItem(key)",
                    [STORE, json.dumps(stored) if stored else None])
    with ctx.expect_page() as first:
        opener.evaluate(f"() => {{ for (let i = 0; i < {n}; i++) window.open('{stack.web_url}/chat', '_blank'); }}")
    tabs = [first.value] + [p for p in ctx.pages if p not in (opener, first.value)]
    deadline = time.monotonic() + 10
    while len(tabs) < n and time.monotonic() < deadline:
        opener.wait_for_timeout(50)
        tabs = [first.value] + [p for p in ctx.pages if p not in (opener, first.value)]
    assert len(tabs) == n
    opener.close()
    return [watch(p) for p in tabs]


def answered(tab: Any, question: str) -> None:
    """Waits until the bot's answer follows the question in this tab."""
    after = "xpath=following-sibling::li[contains(concat(' ', @class, ' '), ' bot ')]"
    tab.page.locator("li.msg.user", has_text=question).last.locator(after).first.wait_for(timeout=60_000)


@pytest.mark.parametrize("stored", [None, REFUSED], ids=["first-visit", "refused-session"])
def test_tabs_opened_together_share_one_conversation(stack: Stack, browser, stored):
    ctx = browser.new_context()
    tabs = open_together(stack, ctx, 3, stored)
    greeted = f"() => {{ const s = ({STORED})(); return s.sessionId !== '{REFUSED['sessionId']}' && s.transcript.some((e) => e.who === 'bot' && e.id !== 'old1'); }}"
    for tab in tabs:
        tab.wait_greeting()
        tab.page.wait_for_function(greeted, timeout=60_000)
        tab.page.wait_for_function(SHOWS_THE_STORE, timeout=10_000)
    for i, tab in enumerate(tabs):
        tab.page.fill("#input", f"what can you do? (tab {i})")
        tab.page.press("#input", "Enter")
        # Each tab's question is answered, and the answer reaches every tab (one session for all of them).
        for other in tabs:
            answered(other, f"what can you do? (tab {i})")
    for tab in tabs:
        tab.page.wait_for_function(SHOWS_THE_STORE, timeout=10_000)
    transcript = tabs[0].page.evaluate(STORED)["transcript"]
    assert "old1" not in [e["id"] for e in transcript]  # a refused session's transcript is gone
    greeting = transcript[0]
    assert greeting["who"] == "bot" and [e["text"] for e in transcript].count(greeting["text"]) == 1  # greeted once
    assert [e["text"] for e in transcript if e["who"] == "user"] == [f"what can you do? (tab {i})" for i in range(3)]
    for tab in tabs:
        tab.assert_clean()


def test_quick_messages_from_two_tabs_are_each_stored_and_shown_once(stack: Stack, browser):
    ctx = browser.new_context()
    first = watch(ctx.new_page())
    first.page.goto(f"{stack.web_url}/chat")
    first.wait_greeting()
    second = watch(ctx.new_page())
    second.page.goto(f"{stack.web_url}/chat")
    second.page.wait_for_function(SHOWS_THE_STORE, timeout=10_000)
    # Both tabs write the store at once: the second its questions, the first its questions and every reply. Past
    # the chat guard's 20 messages a minute the replies are its refusals, which come back at once.
    sent = [f"quick {i}" for i in range(30)]
    for i, text in enumerate(sent):
        (first if i % 4 == 0 else second).page.evaluate(
            "(t) => { document.getElementById('input').value = t; document.getElementById('composer').requestSubmit(); }", text)
        first.page.wait_for_timeout(40)

    def settled() -> bool:
        texts = [e["text"] for e in first.page.evaluate(STORED)["transcript"]]
        return all(texts.count(t) == 1 for t in sent) and all(t.page.evaluate(SHOWS_THE_STORE) for t in (first, second))

    deadline = time.monotonic() + 90
    while not settled():
        assert time.monotonic() < deadline, "a message was lost or doubled, or a tab does not show the store"
        first.page.wait_for_timeout(250)
    shown = first.page.evaluate(SHOWN_IDS)
    assert len(shown) == len(set(shown))
    first.assert_clean()
    second.assert_clean()
