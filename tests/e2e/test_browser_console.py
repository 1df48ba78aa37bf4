"""The agent console and the widget together in Debian's Chromium: a conversation arrives by push (no
polling), the agent claims it with a shortcut, typing shows on both sides, a canned response fills in the
customer's name, the customer's photo reaches the ticket and the console, a reload keeps the conversation,
the agent resolves it with a shortcut, search finds it closed; layouts at 1280, 1920 and tablet width,
axe-core on every page, no console errors."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import uuid


from tests.e2e.browser_kit import DESKTOP, PHONE, TABLET, WIDE, axe, png, shot, watch
from tests.e2e.conftest import ROOT, Stack

AGENT, PASSWORD = "lena", "lena-console-password"


def sign_in(page, username: str, password: str, shown: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-form button[type=submit]")
    page.locator("#who").filter(has_text=shown).wait_for(timeout=15_000)
    page.locator("#live", has_text="live").wait_for(timeout=15_000)


def say(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#input", text)
    page.press("#input", "Enter")


def api_paths(requests, since: float) -> list[str]:  # type: ignore[no-untyped-def]
    return [urllib.parse.urlsplit(url).path + ("?" + urllib.parse.urlsplit(url).query if urllib.parse.urlsplit(url).query else "")
            for t, _m, url in requests if t >= since and "/api/" in url]


def no_overflow(page, selector: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Cells or buttons whose content is cut off (wider than their box)."""
    return page.evaluate("""(sel) => Array.from(document.querySelectorAll(sel))
        .filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 1).map(e => e.textContent.slice(0, 30))""", selector)


def test_console_and_widget_round_trip(stack: Stack, browser):
    subprocess.run([str(ROOT / ".venv-app" / "bin" / "python"), "-m", "web_service.manage", "ensure-user", "--username", AGENT,
                    "--role", "agent", "--full-name", "Lena Berg", "--password-env", "PW"],
                   cwd=ROOT, env=dict(stack.env, PW=PASSWORD), check=True)
    _, token = stack.api("POST", "/api/auth/token", body={"username": "admin", "password": stack.env["ADMIN_PASSWORD"]})
    admin = token["access_token"]
    welcome = f"Welcome {uuid.uuid4().hex[:6]}"
    status, _ = stack.api("POST", "/api/console/canned", admin,
                          {"title": welcome, "body": "Hello {first_name}, this is {agent_name} about {ticket}."})
    assert status == 201
    _, lena = stack.api("POST", "/api/auth/token", body={"username": AGENT, "password": PASSWORD})
    assert stack.api("POST", "/api/console/canned", lena["access_token"], {"title": "x", "body": "y"})[0] == 403  # supervisors only

    customer = watch(browser.new_context(viewport=PHONE).new_page())
    agent = watch(browser.new_context(viewport=DESKTOP).new_page())
    agent.page.goto(f"{stack.web_url}/console")
    sign_in(agent.page, AGENT, PASSWORD, "Lena")

    c = customer.page
    c.goto(f"{stack.web_url}/chat")
    customer.wait_greeting()
    for text, answer in (("link my account", "what e-mail address"), ("anna.schmidt@example.com", "order numbers"),
                         ("ORD-2021-000101", "I've found your account")):
        say(c, text)
        c.locator("li.msg.bot", has_text=answer).wait_for(timeout=60_000)
    # Idle console: over 6 s nothing but the one push connection (no periodic requests).
    idle_from = time.monotonic()
    agent.page.wait_for_timeout(6_000)  # a measurement window, not a wait for something
    assert api_paths(agent.requests, idle_from) == []
    assert [p for p in api_paths(agent.requests, 0) if p.startswith("/api/console/stream")] == ["/api/console/stream"]

    pushed_from = time.monotonic()
    say(c, "I want to talk to a person")
    c.locator("li.msg.bot", has_text="bringing in a person from our service team").wait_for(timeout=60_000)
    session_id = json.loads(c.evaluate("localStorage.getItem('appliance-care-chat')"))["sessionId"]
    a = agent.page
    row = a.locator(f'#queue tr[data-conversation="{session_id}"]')
    row.wait_for(timeout=15_000)  # arrived by push
    assert a.evaluate("C.notified") >= 1  # sound/title/desktop notification raised
    assert "Anna Schmidt" in row.inner_text()
    assert all(not p.startswith("/api/console/stream") for p in api_paths(agent.requests, pushed_from))

    # Keyboard: j selects the first conversation... select ours by click, then c claims it.
    row.click()
    a.locator("#conv-title", has_text="Anna Schmidt").wait_for(timeout=15_000)
    a.keyboard.press("c")
    a.locator("#reply:not([disabled])").wait_for(timeout=15_000)
    c.locator("li.msg.system", has_text="Lena from our service team joined").wait_for(timeout=15_000)

    # Customer typing shows in the console; the agent's typing shows in the widget.
    c.type("#input", "one moment", delay=30)
    a.locator("#customer-typing", has_text="Customer is typing").wait_for(timeout=10_000)
    c.fill("#input", "")
    a.locator("#reply").type("Hel", delay=30)
    c.locator("#typing", has_text="Lena is typing").wait_for(timeout=10_000)
    a.fill("#reply", "")

    # A canned response fills in the customer's name, the agent and the ticket.
    ticket = a.evaluate("C.detail.ticket")
    assert ticket
    a.select_option("#canned", label=welcome)
    assert a.input_value("#reply") == f"Hello Anna, this is Lena about {ticket}."
    a.press("#reply", "Enter")
    bubble = c.locator("li.msg.agent", has_text=f"Hello Anna, this is Lena about {ticket}.")
    bubble.wait_for(timeout=30_000)
    assert bubble.locator(".avatar").inner_text() == "L" and "Lena" in bubble.locator(".who").inner_text()

    # The customer's message reaches the console's transcript by push.
    say(c, "My fridge is warm since yesterday")
    a.locator("#transcript li.customer", has_text="My fridge is warm since yesterday").wait_for(timeout=15_000)

    # Photos: refused files get a clear message; a PNG reaches the ticket and the console.
    c.set_input_files("#photo", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    c.locator("#notice", has_text="Only JPEG, PNG or WebP").wait_for(timeout=5_000)
    c.set_input_files("#photo", files=[{"name": "fake.png", "mimeType": "image/png", "buffer": b"not an image at all"}])
    c.locator("#notice", has_text="Only JPEG, PNG or WebP").wait_for(timeout=5_000)
    c.set_input_files("#photo", files=[{"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": b"\xff\xd8\xff" + b"0" * (5 * 1024 * 1024)}])
    c.locator("#notice", has_text="larger than 5 MB").wait_for(timeout=5_000)
    c.set_input_files("#photo", files=[{"name": "fridge.png", "mimeType": "image/png", "buffer": png()}])
    c.locator("li.msg.user", has_text=f"Photo sent: fridge.png (added to ticket {ticket})").wait_for(timeout=10_000)
    photo = a.locator("#photos figure img")
    photo.wait_for(timeout=15_000)
    a.wait_for_function("() => { const i = document.querySelector('#photos img'); return i && i.naturalWidth === 4; }", timeout=10_000)
    _, detail = stack.api("GET", f"/api/tickets/{ticket}", lena["access_token"])
    assert any("Photo from the chat: fridge.png" in (e.get("body") or "") for e in detail["events"])

    # A reload keeps the open conversation (URL state).
    assert f"conversation={a.evaluate('C.selected')}" in a.url
    a.reload()
    a.locator("#conv-title", has_text="Anna Schmidt").wait_for(timeout=15_000)
    a.locator("#transcript li.customer", has_text="My fridge is warm").wait_for(timeout=15_000)

    # Layout at 1280 px: nothing in the queue is cut off, "Hand back to bot" stays on one line, the chart fits its card.
    assert no_overflow(a, "#queue td, #queue th") == []
    assert a.locator("#handback").bounding_box()["height"] < 40
    for device in a.locator(".device").all():
        if device.locator(".chart-canvas canvas").count():
            inner, outer = device.locator(".chart-canvas canvas").bounding_box(), device.bounding_box()
            assert inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1
    shot(a, "console-1280")
    assert axe(a, "console-1280") == []
    shot(c, "widget-agent-phone")
    assert axe(c, "widget-agent-phone") == []

    for size, name in ((WIDE, "console-1920"), (TABLET, "console-tablet")):
        a.set_viewport_size(size)
        a.wait_for_timeout(200)  # the layout settles on resize
        assert a.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert no_overflow(a, "#queue td, #queue th") == []
        shot(a, name)

    # Shortcuts: ? opens the help, e resolves; the customer sees the agent leave.
    a.set_viewport_size(DESKTOP)
    a.locator("body").click(position={"x": 5, "y": 790})
    a.keyboard.press("?")
    a.locator("#help[open]").wait_for(timeout=5_000)
    a.keyboard.press("Escape")
    a.keyboard.press("e")
    c.locator("li.msg.system", has_text="Lena left the conversation").wait_for(timeout=30_000)
    c.locator("li.msg.bot", has_text="How would you rate the help you got today").wait_for(timeout=60_000)
    c.locator(".buttons button:not([disabled])", has_text="5").last.click()  # "left" lines don't make it stale
    c.locator("li.msg.bot", has_text="Anything you'd like to add?").wait_for(timeout=60_000)

    # Search finds the closed conversation by the customer's name and by its ticket number.
    for query in ("Anna Schmidt", ticket):
        a.fill("#search", query)
        a.press("#search", "Enter")
        a.locator(f'#queue tr[data-conversation="{session_id}"]').wait_for(timeout=15_000)
        assert "resolved" in a.locator(f'#queue tr[data-conversation="{session_id}"]').inner_text()
    a.click('.tab[data-view="closed"]')
    a.locator(f'#queue tr[data-conversation="{session_id}"]').wait_for(timeout=15_000)
    agent.assert_clean()
    customer.assert_clean(expected=("status of 415",))  # the fake PNG the server refused


def test_supervisor_manages_canned_responses(stack: Stack, browser):
    page = watch(browser.new_context(viewport=DESKTOP).new_page())
    p = page.page
    p.goto(f"{stack.web_url}/console?view=supervisor")
    sign_in(p, "admin", stack.env["ADMIN_PASSWORD"], "admin")
    p.locator(".kpi").first.wait_for(timeout=15_000)
    title = f"Follow-up {uuid.uuid4().hex[:6]}"
    p.fill("#canned-title", title)
    p.fill("#canned-body", "Hi {first_name}, any news about {ticket}?")
    p.click("#canned-form button[type=submit]")
    item = p.locator(f'#canned-list li:has(input[value="{title}"])')
    item.wait_for(timeout=10_000)
    p.fill("#canned-title", title)
    p.fill("#canned-body", "again")
    p.click("#canned-form button[type=submit]")
    p.locator("#canned-error", has_text="exists").wait_for(timeout=10_000)
    shot(p, "console-supervisor")
    assert axe(p, "console-supervisor") == []
    item.locator("button", has_text="Delete").click()
    item.wait_for(state="detached", timeout=10_000)
    page.assert_clean(expected=("status of 409",))  # the duplicate title the server refused
