"""Issue 16 end to end: the issue's numbered cases from bench/dialogue_suite.yml played over Rasa's REST channel
against the real processes (Rasa, action server, web service), each checked in the replies and in the CRM
(tickets, their device and text, handoffs queued); and case 9, what the customer sees of an agent."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from bench.dialogue_suite import Customers, load_suite, run_conversation
from tests.e2e.conftest import Stack

CASES = [c for c in load_suite() if c.get("case")]


@pytest.fixture(scope="module")
def customers(stack: Stack) -> Customers:
    return Customers(stack.database_url)


@pytest.mark.parametrize("conversation", CASES, ids=[c["id"] for c in CASES])
def test_issue_case(stack: Stack, customers: Customers, conversation: dict[str, Any]):
    outcome = run_conversation(conversation, stack.rasa_url, stack.database_url, customers,
                               rest_token=stack.env.get("REST_CHANNEL_TOKEN", ""))
    assert outcome.passed, (outcome.failures, outcome.transcript)


def test_case9_the_customer_sees_a_name_never_a_role_or_user_name_and_the_agent_a_readable_summary(stack: Stack):
    sender = f"e2e-agent-{uuid.uuid4().hex[:8]}"
    stack.say(sender, "hello")
    assert any("bringing in a person" in r.get("text", "") for r in stack.say(sender, "I want to talk to a person"))
    status, token = stack.api("POST", "/api/auth/token", body={"username": "admin", "password": stack.env["ADMIN_PASSWORD"]})
    token = token["access_token"]
    deadline, handoff = time.time() + 20, None
    while handoff is None and time.time() < deadline:
        handoff = next((h for h in stack.api("GET", "/api/handoffs", token)[1] if h["conversation_id"] == sender), None)
        time.sleep(0.2) if handoff is None else None
    assert handoff is not None
    assert "request_human" not in handoff["summary"] and "asking for a person" in handoff["summary"]
    hid = handoff["id"]
    assert stack.api("POST", f"/api/handoffs/{hid}/claim", token)[0] == 200
    status, sent = stack.api("POST", f"/api/handoffs/{hid}/messages", token, {"body": "Hello, how can I help?"})
    assert status == 201 and sent["delivered"] is True, sent
    status, detail = stack.api("GET", f"/api/handoffs/{hid}", token)
    lines = [(t["from"], t["text"]) for t in detail["transcript"]]
    # The admin account's full name is "Administrator": a role, not a name to show a customer.
    assert ("bot", "A person from our service team has joined the chat.") in lines
    assert ("agent", "Service team: Hello, how can I help?") in lines
    assert stack.api("POST", f"/api/handoffs/{hid}/handback", token, {})[0] == 200
    status, detail = stack.api("GET", f"/api/handoffs/{hid}", token)
    texts = [t["text"] for t in detail["transcript"]]
    assert any(t.startswith("Our team has handed you back to me") for t in texts)
    assert not any("Administrator" in t or "admin" in t.split() for t in texts)
