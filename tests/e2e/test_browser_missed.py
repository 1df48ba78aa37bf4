"""Bot messages the web chat's socket missed (Debian's Chromium, both topologies). A socket.io emit is at most once:
one sent while the page was closed, or lost on its way while the socket stayed up (as while Redis restarts), is
shown once the page asks the web service for what it missed (``POST /chat/missed``), and only once."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any


from tests.e2e.browser_kit import watch
from tests.e2e.conftest import Stack

STORE = "appliance-care-chat"
STORED = f"() => JSON.parse(localStorage.getItem('{STORE}') || '{{\"transcript\": []}}')"
ANSWER = "open a repair ticket when something is wrong"  # in the bot's answer to ask_capabilities


def entries_with(page: Any, text: str) -> list[dict[str, Any]]:
    return [e for e in page.evaluate(STORED)["transcript"] if text in (e.get("text") or "")]


def test_a_message_sent_while_the_page_was_closed_is_shown_when_it_opens_again(stack: Stack, browser):
    ctx = browser.new_context()
    first = watch(ctx.new_page())
    first.page.goto(f"{stack.web_url}/chat")
    first.wait_greeting()
    session_id = first.page.evaluate(STORED)["sessionId"]
    first.page.close()  # the browser keeps the conversation in its store; no socket is in the session's room now
    req = stack.rasa_request(f"/conversations/{session_id}/trigger_intent?output_channel=socketio",
                             body={"name": "ask_capabilities"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200
        said = [e.get("text") or "" for e in json.loads(resp.read())["tracker"]["events"] if e["event"] == "bot"]
    assert any(ANSWER in t for t in said)  # the bot said it (to nobody: the emit reached no socket)

    again = watch(ctx.new_page())
    again.page.goto(f"{stack.web_url}/chat")
    again.page.locator("li.msg.bot", has_text=ANSWER).wait_for(timeout=30_000)
    assert again.page.evaluate(STORED)["sessionId"] == session_id  # the same conversation, resumed with its key
    shown = entries_with(again.page, ANSWER)
    assert len(shown) == 1 and isinstance(shown[0]["ts"], float)
    assert again.page.locator("li.msg.bot", has_text=ANSWER).count() == 1
    again.assert_clean()
    ctx.close()


def test_a_message_lost_on_a_live_socket_is_shown_once_by_the_next_catch_up(stack: Stack, browser):
    """The socket stays connected, but the answer's frame never reaches the page (dropped here, as a Redis restart
    drops a publish) and the bot's next answer arrives live: the page's periodic catch-up shows the lost one before
    it, without live quick replies, and the catch-ups after it do not show it again."""
    ctx = browser.new_context()
    page = ctx.new_page()
    dropped: list[str] = []

    def relay(ws: Any) -> None:
        server = ws.connect_to_server()
        ws.on_message(lambda message: server.send(message))

        def to_page(message: Any) -> None:
            if isinstance(message, str) and '"bot_uttered"' in message and ANSWER in message:
                dropped.append(message)
                return
            ws.send(message)

        server.on_message(to_page)

    page.route_web_socket("**/socket.io/**", relay)
    # Catch-ups fail until the bot's next answer has arrived live, so the lost one is caught up after it.
    held = {"on": True}
    page.route("**/chat/missed", lambda route: route.abort() if held["on"] else route.continue_())
    watched = watch(page)
    page.goto(f"{stack.web_url}/chat")
    watched.wait_greeting()
    page.fill("#input", "what can you do?")
    page.press("#input", "Enter")
    deadline = time.monotonic() + 60
    while not dropped and time.monotonic() < deadline:
        page.wait_for_timeout(100)  # the answer's frame, held back from the page
    assert dropped
    # The customer goes on; the bot's next answer arrives live, before the next catch-up.
    replies = page.locator("li.msg.bot").count()
    page.fill("#input", "hello")
    page.press("#input", "Enter")
    page.wait_for_function(f"() => document.querySelectorAll('li.msg.bot').length > {replies}", timeout=60_000)
    assert not entries_with(page, ANSWER)
    held["on"] = False
    page.locator("li.msg.bot", has_text=ANSWER).wait_for(timeout=60_000)  # within one 20 s catch-up of the answer
    caught = entries_with(page, ANSWER)[0]
    assert len(dropped) == 1 and json.loads(dropped[0][2:])[1]["ts"] == caught["ts"]
    # In its place: before the later answer, and its quick replies are not the live ones.
    stored = page.evaluate(STORED)["transcript"]
    later = [e for e in stored if e.get("ts", 0) > caught["ts"]]
    assert later and stored.index(caught) < stored.index(later[0])
    assert page.locator(f'.buttons[data-for="{caught["id"]}"] button').count() >= 1
    assert page.evaluate(f"""() => [...document.querySelectorAll('.buttons[data-for="{caught["id"]}"] button')]
                             .every((b) => b.disabled)""")
    # The next catch-up returns the same message again (it is inside the trailing window): still shown once.
    since = page.evaluate(STORED)["since"]
    page.wait_for_function(f"() => ({STORED})().since > {since}", timeout=45_000)
    assert len(entries_with(page, ANSWER)) == 1 and page.locator("li.msg.bot", has_text=ANSWER).count() == 1
    pieces = [(e["ts"], e["part"]) for e in page.evaluate(STORED)["transcript"] if e["who"] in ("bot", "agent")]
    assert len(pieces) == len(set(pieces)) >= 2  # the greeting and the answer, each piece once
    watched.assert_clean(expected=("net::ERR_FAILED",))  # the held catch-ups
    ctx.close()
