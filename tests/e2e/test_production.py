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
