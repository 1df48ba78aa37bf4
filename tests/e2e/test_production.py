"""What only the production topology has: two Rasa servers sharing socket.io rooms through Redis,
HAProxy's sticky routing that the socket.io polling transport needs, and devices over TLS only."""

from __future__ import annotations

import pathlib
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


def test_devices_reach_the_production_stack_over_tls_only(stack: Stack, tmp_path):  # type: ignore[no-untyped-def]
    """Issue 15: a device's token crosses the network only encrypted. HTTP: HAProxy's HTTPS frontend (the
    project's CA) takes device ingestion, its plain frontend refuses it with 403; MQTT: the broker has no plain
    device listener, its TLS one verifies against the CA and still wants the device's token."""
    import json
    import socket
    import ssl
    import time
    import urllib.error

    from crm_store.enums import ApplianceCategory
    from device_hooks.pki import ensure_pki
    from device_hooks.simulator import Connection, SimDevice
    from tests.e2e.conftest import wait_until
    from tests.e2e.test_device_flows import query

    serial, token = sorted(json.loads((stack.work / "device_tokens.json").read_text()).items())[-1]
    stored = "SELECT count(*) FROM device_messages m JOIN devices d ON d.id = m.device_id WHERE d.serial = ?"
    before = query(stack, stored, serial)[0][0]

    def post(base: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
        body = json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seq": time.time_ns() // 1000,
                           "online": True, "firmware": "2.4.1"}).encode()
        req = urllib.request.Request(f"{base}/api/ingest/devices/{serial}/status", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=15, context=context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    status, body = post(stack.web_url)
    assert status == 403 and json.loads(body)["reason"] == "tls_required"
    other_ca = ssl.create_default_context(cafile=str(ensure_pki(tmp_path / "other").files.ca_cert))
    try:
        post(stack.web_tls_url, other_ca)
        raise AssertionError("a client trusting another CA was served")
    except urllib.error.URLError as err:
        assert "certificate verify failed" in str(err.reason)
    assert query(stack, stored, serial)[0][0] == before  # neither reached the worker
    assert post(*stack.device_web())[0] == 202
    wait_until(lambda: query(stack, stored, serial)[0][0] == before + 1, 30, "the HTTPS status stored")

    # MQTT: nothing listens on the plain device port; plain MQTT to the TLS port gets no session.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", stack.mqtt_port), timeout=5).close()
    device = SimDevice(serial, token, ApplianceCategory.FRIDGE)
    with pytest.raises(ConnectionError):
        Connection(device).open("127.0.0.1", stack.mqtt_tls_port, timeout=10)
    port, tls = stack.device_mqtt()
    conn = Connection(device, tls=tls)
    conn.open("127.0.0.1", port)
    conn.close()
    # The broker's own config (its -c argument; it may sit under /tmp, see device_hooks.broker.usable_directory):
    # the one plain listener is the services', on loopback, with their password file.
    argv = pathlib.Path(f"/proc/{stack.pids()['broker']}/cmdline").read_bytes().split(b"\0")
    conf = pathlib.Path(argv[argv.index(b"-c") + 1].decode()).read_text()
    listeners = conf.split("\nlistener ")[1:]
    plain = [b for b in listeners if "certfile" not in b]
    assert len(listeners) == 2 and len(plain) == 1
    assert plain[0].split("\n", 1)[0].endswith(" 127.0.0.1") and "passwd-services" in plain[0]
    assert f"{stack.mqtt_tls_port} 127.0.0.1\n" in [b.split("\n", 1)[0] + "\n" for b in listeners]
