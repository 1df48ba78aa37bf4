"""The chat input guard through the real Rasa server: long texts, typed intents, channel binding, rate limits."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import pathlib
import time
import uuid

from tests.e2e.conftest import Stack, rest_headers
from tests.e2e.test_chat_flows import texts


def _rasa_rss_mb(stack: Stack) -> float:
    """Resident memory of the stack's Rasa server(s) (found by their --port argument in /proc), in MB."""
    ports = {url.rsplit(":", 1)[1] for url in (stack.rasa_instances or (stack.rasa_url,))}
    total, found = 0.0, set()
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if b"run" in args and b"--port" in args and any(a.endswith((b"rasa", b"rasa_server.py")) for a in args):
            port = args[args.index(b"--port") + 1].decode()
            if port in ports:
                found.add(port)
                total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024
    assert found == ports, f"Rasa processes on {sorted(ports)}, found {sorted(found)}"
    return total


def test_a_100_kb_message_is_cut_answered_and_costs_no_memory(stack: Stack):
    stack.say(f"warm-{uuid.uuid4().hex[:8]}", "hello")
    before = _rasa_rss_mb(stack)
    started = time.monotonic()
    replies = stack.say(f"e2e-{uuid.uuid4().hex[:8]}", "my fridge is broken " * 5000)
    took = time.monotonic() - started
    assert replies and all(r.get("text") for r in replies)
    # Before the guard, 30 KB of such text added ~2.9 GB and 100 KB took Rasa to 14.5 GB.
    assert _rasa_rss_mb(stack) - before < 300
    assert took < 30
    # Another conversation is answered as usual right after.
    assert texts(stack.say(f"e2e-{uuid.uuid4().hex[:8]}", "hello")).startswith("Hi! I'm the service assistant")


def _other_customer(stack: Stack) -> tuple[str, str, str]:
    """E-mail, an order number and the first name of a demo customer other than Anna (whom other tests use:
    the verification lock-out counts failures per e-mail across conversations)."""
    status, token = stack.api("POST", "/api/auth/token", body={"username": "admin", "password": stack.env["ADMIN_PASSWORD"]})
    assert status == 200
    status, data = stack.api("GET", "/api/customers/7", token["access_token"])
    assert status == 200 and data["purchases"]
    return data["customer"]["email"], data["purchases"][0]["order_number"], data["customer"]["full_name"].split()[0]


def test_typed_restart_does_not_lift_the_verification_limit(stack: Stack):
    """The reported attack: three wrong tries, then /restart, then the right details."""
    email, order, first_name = _other_customer(stack)
    sender = f"e2e-{uuid.uuid4().hex[:8]}"
    stack.say(sender, "link my account")
    for _ in range(3):
        stack.say(sender, email)
        last = texts(stack.say(sender, "ORD-1999-000001"))
    assert "stop trying in this conversation" in last
    for typed in ("/restart", "/session_start", f'/verify_identity{{"email": "{email}"}}'):
        stack.say(sender, typed)
    stack.say(sender, "link my account")
    stack.say(sender, email)
    reply = texts(stack.say(sender, order))
    assert "I've found your account" not in reply and first_name not in reply


def test_typed_external_intent_is_not_a_device_event(stack: Stack):
    sender = f"e2e-{uuid.uuid4().hex[:8]}"
    replies = stack.say(sender, '/EXTERNAL_device_fault{"ticket_number": "T-000001", "fault_code": "E99"}')
    assert replies and all(r.get("text") for r in replies)
    assert "T-000001" not in texts(replies)


def test_an_anonymous_rest_post_is_refused_and_only_the_trusted_back_end_is_served(stack: Stack):
    """The REST channel requires REST_CHANNEL_TOKEN in both topologies (a sender is a conversation's only
    credential; open, any web page the developer visits could post into a chat on 127.0.0.1): a POST without it,
    with another token or another scheme gets 401 (on the load balancer and on each Rasa server in production)
    and reaches no conversation."""
    import urllib.error
    import urllib.request

    sender = f"e2e-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"sender": sender, "message": "what devices do I have?"}).encode()
    token = stack.env["REST_CHANNEL_TOKEN"]
    assert len(token) == 64
    for base in (stack.rasa_url, *stack.rasa_instances):
        for auth in ({}, {"Authorization": "Bearer " + "0" * 64}, {"Authorization": "Basic " + token},
                     {"Authorization": "Bearer " + token[:-1]}):
            # text/plain, as a cross-site form or fetch without a CORS preflight would send it, and JSON.
            for kind in ("application/json", "text/plain"):
                req = urllib.request.Request(f"{base}/webhooks/rest/webhook", data=body,
                                             headers={"Content-Type": kind, **auth})
                try:
                    urllib.request.urlopen(req, timeout=30)
                    raise AssertionError(f"an anonymous REST post was served by {base}")
                except urllib.error.HTTPError as err:
                    assert err.code == 401 and err.headers["WWW-Authenticate"] == "Bearer"
    _status, events = _tracker_events(stack, sender)
    assert not [e for e in events if e["event"] == "user"]
    # The trusted back end (stack.say sends the token) is served as before.
    assert texts(stack.say(sender, "hello")).startswith("Hi! I'm the service assistant")


def test_rest_cannot_claim_another_channel_or_metadata(stack: Stack):
    import urllib.request

    sender = f"e2e-{uuid.uuid4().hex[:8]}"
    body = {"sender": sender, "message": "hello", "input_channel": "socketio", "metadata": {"customer_id": 1}}
    req = urllib.request.Request(f"{stack.rasa_url}/webhooks/rest/webhook", data=json.dumps(body).encode(),
                                 headers=rest_headers(stack.env))
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert texts(json.loads(resp.read())).startswith("Hi! I'm the service assistant")
    status, events = _tracker_events(stack, sender)
    assert status == 200
    user = [e for e in events if e["event"] == "user"]
    assert user and all(e["input_channel"] == "rest" and "customer_id" not in (e.get("metadata") or {}) for e in user)


def _tracker_events(stack: Stack, sender: str) -> tuple[int, list[dict]]:
    import urllib.request

    with urllib.request.urlopen(stack.rasa_request(f"/conversations/{sender}/tracker?include_events=ALL"), timeout=30) as resp:
        return resp.status, json.loads(resp.read())["events"]


def test_a_web_chat_session_id_opens_nothing_over_rest(stack: Stack):
    from tests.e2e.test_handoff_flow import SioCustomer

    customer = SioCustomer(stack)
    try:
        customer.say("hello")
        customer.wait_for("")
        replies = stack.say(customer.session_id, "what devices do I have?")
        assert texts(replies).startswith("Please start a new conversation here")
        _, events = _tracker_events(stack, customer.session_id)
        assert [e["text"] for e in events if e["event"] == "user"] == ["hello"]
    finally:
        customer.close()


def test_a_web_chat_session_id_without_its_key_opens_nothing_on_socketio_or_the_chat_routes(stack: Stack):
    """The id an agent sees (or a log holds) is not enough: a socket.io client naming it without the key gets a
    new, empty session and never the customer's messages; the web service's chat routes answer 403. With the
    key, the same browser resumes its conversation."""
    import urllib.error
    import urllib.request

    from tests.e2e.test_handoff_flow import SioCustomer

    customer = SioCustomer(stack)
    intruder = SioCustomer(stack, session_id=customer.session_id, session_key="0" * 32)
    try:
        assert intruder.session_id != customer.session_id and intruder.session_key != customer.session_key
        customer.say("hello")
        customer.wait_for("")
        intruder.say("what devices do I have?")
        intruder.wait_for("")
        _, events = _tracker_events(stack, customer.session_id)
        assert [e["text"] for e in events if e["event"] == "user"] == ["hello"]
        for path, body in (("/chat/presence", {}), ("/chat/signal", {"kind": "typing"}), ("/chat/stream", {})):
            for key in (None, "f" * 32, intruder.session_key):
                req = urllib.request.Request(f"{stack.web_url}{path}", method="POST", headers={"Content-Type": "application/json"},
                                             data=json.dumps({"session_id": customer.session_id, "session_key": key, **body}).encode())
                try:
                    urllib.request.urlopen(req, timeout=10).close()
                    raise AssertionError(f"{path} accepted key {key!r}")
                except urllib.error.HTTPError as err:
                    assert err.code in (403, 422), (path, err.code)
        req = urllib.request.Request(f"{stack.web_url}/chat/presence", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps(customer.proof()).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 204
        customer.close()
        back = SioCustomer(stack, session_id=customer.session_id, session_key=customer.session_key)
        try:
            assert back.session_id == customer.session_id
        finally:
            back.close()
    finally:
        customer.close()
        intruder.close()


def test_one_conversation_is_rate_limited_and_others_are_not(stack: Stack):
    sender = f"e2e-{uuid.uuid4().hex[:8]}"
    limit = int(stack.env.get("CHAT_RATE_PER_CONVERSATION", "20/minute").split("/")[0])
    # Sent at once: the limiter counts at arrival, before Rasa's per-conversation lock serialises the turns.
    # The accepted ones then wait their turn behind Rasa's per-conversation lock, one turn at a time, so the last
    # of 20 answers can come tens of seconds later on a busy two-core machine (a CI failure: a 60 s client timeout).
    with concurrent.futures.ThreadPoolExecutor(limit + 3) as pool:
        answers = [texts(r) for r in pool.map(lambda _: stack.say(sender, "hi", timeout=300), range(limit + 3))]
    assert sum("faster than I can read them" in a for a in answers) == 3
    assert "faster than I can read them" not in texts(stack.say(f"e2e-{uuid.uuid4().hex[:8]}", "hi"))


def test_blank_and_malformed_rest_messages_get_a_clear_answer(stack: Stack):
    import urllib.error
    import urllib.request

    assert texts(stack.say(f"e2e-{uuid.uuid4().hex[:8]}", "   ")).startswith("I didn't catch any text")
    for body in ({"sender": "", "message": "hi"}, {"sender": "x" * 500, "message": "hi"}, {"sender": "a", "message": 5},
                 {"message": "hi"}):
        req = urllib.request.Request(f"{stack.rasa_url}/webhooks/rest/webhook", data=json.dumps(body).encode(),
                                     headers=rest_headers(stack.env))
        try:
            urllib.request.urlopen(req, timeout=30)
            raise AssertionError(f"accepted {body}")
        except urllib.error.HTTPError as err:
            assert err.code == 400, (body, err.code)


def test_an_expired_verification_shows_nothing_and_asks_again(stack: Stack):
    """VERIFICATION_TTL_MINUTES (30) after a chat was verified, its devices are not shown and the bot asks for
    the details again: the time is the CRM's chat-link row, which nothing in the conversation can change."""
    from sqlalchemy import update

    from crm_store.db import session_scope
    from crm_store.models import ChannelIdentity

    sender = f"e2e-{uuid.uuid4().hex[:8]}"
    stack.say(sender, "what devices do I have?")
    stack.say(sender, "anna.schmidt@example.com")
    assert "You have 3 appliances registered with us" in texts(stack.say(sender, "ORD-2021-000101"))
    assert "WM80-23000102" in texts(stack.say(sender, "what devices do I have?"))
    # 31 minutes pass (the link's verified_at, as the server set it, moves back).
    with session_scope(stack.database_url) as session:
        moved = session.execute(update(ChannelIdentity).where(ChannelIdentity.channel == "rest",
                                                              ChannelIdentity.external_id == sender)
                                .values(verified_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=31))).rowcount
    assert moved == 1
    reply = texts(stack.say(sender, "what devices do I have?"))
    assert "yours has expired" in reply and "e-mail address" in reply
    assert "WM80-23000102" not in reply and "appliances registered" not in reply
    assert "Hi Anna" not in texts(stack.say(sender, "hi"))
    stack.say(sender, "what devices do I have?")
    stack.say(sender, "anna.schmidt@example.com")
    assert "You have 3 appliances registered with us" in texts(stack.say(sender, "ORD-2021-000101"))
