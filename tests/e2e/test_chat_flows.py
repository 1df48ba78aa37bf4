"""End to end through real processes: Rasa, the action server and the web service, over the REST channel."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid

import pytest

from actions.transcript import bot_tried
from tests.e2e.conftest import Stack


def texts(replies: list[dict]) -> str:
    return "\n".join(r.get("text", "") for r in replies)


def test_verify_see_devices_open_ticket_once_and_read_status(stack: Stack):
    sender = f"e2e-{uuid.uuid4().hex[:8]}"
    assert texts(stack.say(sender, "hello")).startswith("Hi! I'm the service assistant")
    assert "e-mail address" in texts(stack.say(sender, "what devices do I have?"))
    assert "order numbers" in texts(stack.say(sender, "anna.schmidt@example.com"))
    reply = texts(stack.say(sender, "ORD-2021-000101"))
    assert "Thank you, Anna, I've found your account." in reply
    assert "You have 3 appliances registered with us" in reply and "WM80-23000102" in reply

    reply = texts(stack.say(sender, "my washing machine won't drain"))
    number = re.search(r"I've opened ticket (T-\d{6})", reply).group(1)
    assert "clean the pump filter" in reply
    reply = texts(stack.say(sender, "the washer still won't drain!!"))
    assert f"You already have ticket {number} open for this" in reply

    reply = texts(stack.say(sender, f"what's the status of ticket {number}?"))
    assert reply.startswith(f"Ticket {number} (Drain pump blocked (WashPro 8)) is open.")

    # CRM side effects, read back through the authenticated API.
    status, token = stack.api("POST", "/api/auth/token", body={"username": "admin", "password": stack.env["ADMIN_PASSWORD"]})
    assert status == 200
    token = token["access_token"]
    status, tickets = stack.api("GET", "/api/tickets?customer_id=1&only_open=true", token)
    for_washer = [t for t in tickets if t["title"].startswith("Drain pump blocked")]
    assert [t["number"] for t in for_washer] == [number]
    status, detail = stack.api("GET", f"/api/tickets/{number}", token)
    assert detail["source"] == "chat" and detail["fault_code"] == "E21"
    assert [e["kind"] for e in detail["events"]] == ["created", "customer_contact"]

    # Each answer that completed a form came from the form's own call to the action server: Rasa ran no closing
    # action after it (action_resume_request, action_open_ticket) and listened.
    with urllib.request.urlopen(stack.rasa_request(f"/conversations/{sender}/tracker"), timeout=10) as resp:
        events = json.load(resp)["events"]
    turns = actions_per_turn(events)
    assert turns["ORD-2021-000101"] == ["verify_form"]
    assert turns["my washing machine won't drain"] == turns["the washer still won't drain!!"] == ["problem_form"]
    assert turns[f"what's the status of ticket {number}?"] == ["verify_form"]
    # What an agent would read of it in a handoff's summary, from the tracker as Rasa stored it.
    assert bot_tried(events)[1:] == [
        "greeted the customer", "asked for details to verify the customer", "answered a request about devices or tickets",
        "collected the problem report", "opened or updated a ticket", "collected the problem report",
        "opened or updated a ticket", "asked for details to verify the customer",
        "answered a request about devices or tickets"]

    # The same chat is now known: greeted by name, loyalty acknowledged.
    assert texts(stack.say(sender, "hi")).startswith("Hi Anna, welcome back! Thank you for being a Gold member")


def actions_per_turn(events: list[dict]) -> dict[str, list[str]]:
    """Each customer message's text and the actions Rasa ran for it (action_listen and slot extraction aside)."""
    turns: dict[str, list[str]] = {}
    current: list[str] | None = None
    for event in events:
        if event["event"] == "user":
            current = turns.setdefault(event["text"], [])
        elif event["event"] == "action" and current is not None and event["name"] not in (
                "action_listen", "action_extract_slots"):
            current.append(event["name"])
    return turns


def test_wrong_details_never_reveal_an_account_and_lock_after_three_tries(stack: Stack):
    sender = f"e2e-{uuid.uuid4().hex[:8]}"
    stack.say(sender, "link my account")
    answers = []
    for email in ("anna.schmidt@example.com", "nobody.at.all@example.com", "anna.schmidt@example.com"):
        stack.say(sender, email)
        answers.append(texts(stack.say(sender, "ORD-1999-000001")))
    assert "don't match an account" in answers[0] and "(2 tries left)" in answers[0]
    assert answers[1].replace("1 try left", "X") == answers[0].replace("2 tries left", "X")
    assert "stop trying in this conversation" in answers[2]
    assert "verified customer" in texts(stack.say(sender, "show me my devices"))


@pytest.mark.parametrize("message", [
    "asdkjh qwpoeiru zmxncb",
    "what's the weather like in Rome tomorrow?",
    "😀🔥💥",
    "یخچال من خراب شده است",
    "ثلاجتي لا تبرد",
    "我的洗衣机坏了",
    "word " * 4000,
])
def test_any_message_gets_a_reply_never_silence_or_a_crash(stack: Stack, message: str):
    replies = stack.say(f"e2e-{uuid.uuid4().hex[:8]}", message)
    assert replies and all(r.get("text") for r in replies)


def test_rasa_http_api_and_action_server_require_their_tokens(stack: Stack):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{stack.rasa_url}/conversations/someone/tracker", timeout=10)
    assert err.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as err:  # the secret itself is no token: it never travels
        urllib.request.urlopen(f"{stack.rasa_url}/conversations/someone/tracker?token={stack.env['RASA_TOKEN']}", timeout=10)
    assert err.value.code == 401
    with urllib.request.urlopen(stack.rasa_request("/conversations/someone/tracker"), timeout=10) as ok:
        assert ok.status == 200
    req = urllib.request.Request(f"{stack.actions_url}/webhook", data=b'{"next_action": "action_greet"}',
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401
