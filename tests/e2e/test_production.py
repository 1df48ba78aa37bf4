"""What only the production topology has: two Rasa servers sharing socket.io rooms through Redis, and
HAProxy's sticky routing that the socket.io polling transport needs."""

from __future__ import annotations

import urllib.request

import pytest

from tests.e2e.conftest import Stack
from tests.e2e.test_handoff_flow import SioCustomer


pytestmark = pytest.mark.production_only


def test_a_message_sent_through_one_rasa_server_reaches_a_socket_held_by_the_other(stack: Stack):
    rasa_a, rasa_b = stack.rasa_instances
    customer = SioCustomer(stack, url=rasa_a)
    try:
        customer.say("hello")
        customer.wait_for("Hi! I'm the service assistant")
        # An external event for this conversation through Rasa B's HTTP API, as the notifier and the agent
        # console send them: Rasa B has no socket for it; the Redis manager hands it to Rasa A.
        req = stack.rasa_request(f"/conversations/{customer.session_id}/trigger_intent?output_channel=latest",
                                 base=rasa_b, body={"name": "ask_capabilities"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
        customer.wait_for("open a repair ticket when something is wrong", 30)
        assert customer.silent_for(2)  # delivered once, not once per server
    finally:
        customer.close()


def test_the_polling_transport_stays_on_one_rasa_server_through_the_load_balancer(stack: Stack):
    # Without the sticky cookie, HAProxy's round robin would send every other long-poll to the server
    # that does not know the engine.io session, and the connection would fail.
    customer = SioCustomer(stack, transport="polling")
    try:
        for _ in range(3):
            customer.say("what can you do?")
            customer.wait_for("open a repair ticket when something is wrong", 60)
    finally:
        customer.close()


def test_an_anonymous_rest_post_is_refused_and_only_the_trusted_back_end_is_served(stack: Stack):
    """Production's REST channel requires REST_CHANNEL_TOKEN (bot/credentials.rest.yml): a POST without it, or
    with another token, gets 401 on the load balancer and on each Rasa server, and reaches no conversation."""
    import json
    import urllib.error
    import uuid

    from tests.e2e.test_chat_guard import _tracker_events

    sender = f"e2e-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"sender": sender, "message": "what devices do I have?"}).encode()
    for base in (stack.rasa_url, *stack.rasa_instances):
        for auth in ({}, {"Authorization": "Bearer " + "0" * 64}, {"Authorization": "Basic " + stack.env["REST_CHANNEL_TOKEN"]}):
            req = urllib.request.Request(f"{base}/webhooks/rest/webhook", data=body,
                                         headers={"Content-Type": "application/json", **auth})
            try:
                urllib.request.urlopen(req, timeout=30)
                raise AssertionError(f"an anonymous REST post was served by {base}")
            except urllib.error.HTTPError as err:
                assert err.code == 401 and err.headers["WWW-Authenticate"] == "Bearer"
    _status, events = _tracker_events(stack, sender)
    assert not [e for e in events if e["event"] == "user"]
    # The trusted back end (stack.say sends the token) is served as before.
    assert stack.say(sender, "hello")[0]["text"].startswith("Hi! I'm the service assistant")
