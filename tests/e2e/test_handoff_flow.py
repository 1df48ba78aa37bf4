"""Escalation end to end through real processes: a socket.io customer asks for a person, an agent answers
through the console API, hands back, the bot resumes and stores the CSAT rating; Messenger's signed webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import FB_APP_SECRET, ROOT, FakeGraphApi, Stack

AGENT, AGENT_PASSWORD = "maria", "maria-console-password"


class SioCustomer:
    """A web-chat customer on Rasa's socket.io channel (tests/e2e/sio_customer.py in a process of its own)."""

    def __init__(self, stack: Stack, url: str | None = None, session_id: str | None = None,
                 transport: str = "websocket", session_key: str | None = None) -> None:
        """Connects to ``url`` (default: the stack's Rasa address, its load balancer in production), as a
        new visitor or, with ``session_id`` and its ``session_key``, as a returning one. ``session_id`` and
        ``session_key`` are then the session the server confirmed (a new one when the key was not valid)."""
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv-rasa" / "bin" / "python"), str(ROOT / "tests" / "e2e" / "sio_customer.py"),
             url or stack.rasa_url, session_id or "-", session_key or "-", transport],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.received: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        confirm = self.next(30)
        assert confirm["event"] == "session_confirm", confirm
        self.session_id, self.session_key = confirm["session_id"], confirm.get("session_key")

    def proof(self) -> dict[str, str | None]:
        """The session id with its key, as the chat page sends them to the web service's chat routes."""
        return {"session_id": self.session_id, "session_key": self.session_key}

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                self.events.put({"event": "log", "text": line})

    def next(self, timeout: float) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.time()))
            if event["event"] != "log":
                return event

    def say(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def wait_for(self, fragment: str, timeout: float = 60) -> str:
        """The first bot message containing ``fragment``."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                event = self.next(deadline - time.time())
            except queue.Empty:
                break
            self.received.append(event.get("text") or "")
            if fragment in (event.get("text") or ""):
                return event["text"]
        raise AssertionError(f"no bot message with {fragment!r}; got {self.received[-5:]}")

    def silent_for(self, seconds: float) -> bool:
        try:
            event = self.next(seconds)
        except queue.Empty:
            return True
        self.received.append(event.get("text") or "")
        return False

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def agent_token(stack: Stack) -> str:
    env = dict(stack.env, AGENT_PW=AGENT_PASSWORD)
    subprocess.run([str(ROOT / ".venv-app" / "bin" / "python"), "-m", "web_service.manage", "ensure-user", "--username",
                    AGENT, "--role", "agent", "--full-name", "Maria Lopez", "--password-env", "AGENT_PW"],
                   cwd=ROOT, env=env, check=True)
    status, body = stack.api("POST", "/api/auth/token", body={"username": AGENT, "password": AGENT_PASSWORD})
    assert status == 200
    return str(body["access_token"])


@pytest.fixture
def customer(stack: Stack) -> Iterator[SioCustomer]:
    c = SioCustomer(stack)
    yield c
    c.close()


def find_handoff(stack: Stack, token: str, conversation_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, items = stack.api("GET", "/api/handoffs", token)
        assert status == 200
        for item in items:
            if item["conversation_id"] == conversation_id:
                return item
        time.sleep(0.5)
    raise AssertionError(f"no handoff for {conversation_id}")


def test_socketio_customer_to_agent_and_back_to_the_bot_with_csat(stack: Stack, customer: SioCustomer, agent_token: str):
    customer.say("/greet")
    customer.wait_for("Hi! I'm the service assistant")
    customer.say("I want to talk to a person")
    text = customer.wait_for("bringing in a person from our service team")
    assert "number 1 in the queue" in text or "in the queue" in text

    # Paused: the bot stays silent, the message is recorded for the agent.
    customer.say("my boiler makes a loud bang when it starts")
    assert customer.silent_for(4), customer.received[-1]

    handoff = find_handoff(stack, agent_token, customer.session_id)
    assert handoff["status"] == "queued" and handoff["reason"] == "customer_request" and handoff["channel"] == "socketio"
    hid = handoff["id"]
    status, detail = stack.api("GET", f"/api/handoffs/{hid}", agent_token)
    assert detail["transcript_live"] is True and detail["bot_paused"] is True
    assert [t["text"] for t in detail["transcript"] if t["from"] == "customer"][-1] == "my boiler makes a loud bang when it starts"
    assert detail["packet"]["transcript"][-1]["text"] == "I want to talk to a person"

    status, _ = stack.api("POST", f"/api/handoffs/{hid}/claim", agent_token)
    assert status == 200
    status, sent = stack.api("POST", f"/api/handoffs/{hid}/messages", agent_token, {"body": "Hi, Maria here. Is the boiler off now?"})
    assert status == 201 and sent["delivered"] is True, sent
    assert customer.wait_for("Maria: Hi, Maria here.", 30) == "Maria: Hi, Maria here. Is the boiler off now?"
    status, detail = stack.api("GET", f"/api/handoffs/{hid}", agent_token)
    assert any(t["from"] == "agent" and t["author"] == AGENT for t in detail["transcript"])
    assert detail["first_response_at"] is not None

    status, closed = stack.api("POST", f"/api/handoffs/{hid}/resolve", agent_token, {"note": "boiler switched off"})
    assert status == 200 and closed["bot_resumed"] is True and closed["handoff"]["bot_resumed_at"], closed
    assert stack.api("POST", f"/api/handoffs/{hid}/handback", agent_token, {})[0] == 409  # done: nothing to repeat
    customer.wait_for("has marked your request as solved", 30)
    customer.wait_for("How would you rate the help you got today", 30)
    customer.say("4")
    customer.wait_for("Anything you'd like to add?")
    customer.say("quick and friendly")
    customer.wait_for("Thank you for your rating!")

    from crm_store.db import session_scope
    from crm_store.models import CsatRating, Handoff

    with session_scope(stack.database_url) as s:
        rating = s.query(CsatRating).filter(CsatRating.conversation_id == customer.session_id).one()
        ticket_id = s.get(Handoff, hid).ticket_id
        assert (rating.score, rating.comment, rating.ticket_id) == (4, "quick and friendly", ticket_id)

    # The bot is back in charge.
    customer.say("what can you do?")
    customer.wait_for("open a repair ticket when something is wrong")


def _signed(body: bytes, secret: str) -> str:
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def _messenger(stack: Stack, psid: str, text: str, secret: str | None) -> tuple[int, str]:
    body = json.dumps({"object": "page", "entry": [{"id": "page-1", "time": int(time.time() * 1000), "messaging": [
        {"sender": {"id": psid}, "recipient": {"id": "page-1"}, "timestamp": int(time.time() * 1000),
         "message": {"mid": f"mid.{uuid.uuid4().hex}", "text": text}}]}]}).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Hub-Signature"] = _signed(body, secret)
    req = urllib.request.Request(f"{stack.rasa_url}/webhooks/facebook/webhook", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _tracker_user_texts(stack: Stack, sender: str) -> list[str]:
    with urllib.request.urlopen(stack.rasa_request(f"/conversations/{sender}/tracker"), timeout=10) as resp:
        return [e["text"] for e in json.loads(resp.read())["events"] if e["event"] == "user"]


def test_messenger_accepts_only_signed_webhooks_and_agent_replies_reach_messenger(
    stack: Stack, fake_graph: FakeGraphApi, agent_token: str
):
    genuine, forged = f"psid-{uuid.uuid4().hex[:8]}", f"psid-{uuid.uuid4().hex[:8]}"
    assert _messenger(stack, genuine, "hello", FB_APP_SECRET) == (200, "success")
    assert any(t.startswith("Hi! I'm the service assistant") for t in fake_graph.texts_to(genuine))
    assert _tracker_user_texts(stack, genuine) == ["hello"]

    for secret in ("not-the-app-secret", None):
        assert _messenger(stack, forged, "hello", secret) == (403, "not validated")
    assert fake_graph.texts_to(forged) == [] and _tracker_user_texts(stack, forged) == []

    # A Messenger customer asks for a person; the agent's reply goes out through the same channel.
    assert _messenger(stack, genuine, "connect me to an agent", FB_APP_SECRET)[0] == 200
    assert any("bringing in a person" in t for t in fake_graph.texts_to(genuine))
    handoff = find_handoff(stack, agent_token, genuine)
    assert handoff["channel"] == "facebook"
    stack.api("POST", f"/api/handoffs/{handoff['id']}/claim", agent_token)
    status, sent = stack.api("POST", f"/api/handoffs/{handoff['id']}/messages", agent_token, {"body": "Hello from Maria"})
    assert status == 201 and sent["delivered"] is True
    assert fake_graph.texts_to(genuine)[-1] == "Maria: Hello from Maria"
    status, closed = stack.api("POST", f"/api/handoffs/{handoff['id']}/handback", agent_token, {})
    assert closed["bot_resumed"] is True
    assert fake_graph.texts_to(genuine)[-1].startswith("How would you rate the help you got today")


def test_console_routes_refuse_anonymous_calls_on_the_running_service(stack: Stack):
    assert stack.api("GET", "/api/handoffs")[0] == 401
    assert stack.api("POST", "/api/handoffs/1/messages", body={"body": "x"})[0] == 401
    assert os.environ.get("BOT_MODEL")  # the stack ran the trained model
