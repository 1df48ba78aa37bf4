"""Against the real Mosquitto with the project's config: per-device authorisation, and the worker as a real
process (a fault becomes one ticket; kill -9 in the middle of a stream loses and duplicates nothing)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from crm_store.db import session_scope
from crm_store.enums import ApplianceCategory
from crm_store.models import DeviceMessage, Ticket, utcnow
from device_hooks.broker import WORKER_USER
from device_hooks.simulator import Connection, SimDevice, payload, pump
from tests.device_hooks.conftest import Broker, Fleet

ROOT = pathlib.Path(__file__).resolve().parents[2]


def paho_client(port: int, username: str, password: str) -> tuple[mqtt.Client, int]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{username}-{time.time_ns()}")
    client.username_pw_set(username, password)
    result: dict[str, int] = {}
    connected = threading.Event()

    def on_connect(_c, _u, _f, reason_code, _p):  # type: ignore[no-untyped-def]
        result["rc"] = reason_code.value
        connected.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert connected.wait(5), "no CONNACK from the broker"
    return client, result["rc"]


def test_a_device_can_publish_only_as_itself(fleet: Fleet, request: pytest.FixtureRequest):
    _, serial_a, token_a = fleet.device("FR50")
    _, serial_b, _token_b = fleet.device("FR50")
    broker: Broker = request.getfixturevalue("broker")  # it reads the password file when it starts
    received: list[str] = []
    got = threading.Event()
    watcher, rc = paho_client(broker.service_port, WORKER_USER, broker.worker_password)
    assert paho_client(broker.port, WORKER_USER, broker.worker_password)[1] != 0  # not on the devices' listener
    assert paho_client(broker.service_port, serial_a, token_a)[1] != 0  # nor a device on the services' one
    assert rc == 0

    def on_message(_c, _u, msg):  # type: ignore[no-untyped-def]
        received.append(msg.topic)
        if msg.topic.endswith("/status"):
            got.set()

    watcher.on_message = on_message
    watcher.subscribe("devices/#", qos=1)
    time.sleep(0.3)
    device_a, rc = paho_client(broker.port, serial_a, token_a)
    assert rc == 0
    body = json.dumps({"ts": utcnow().isoformat(), "seq": 1, "readings": {"compartment_temp_c": 4.0}})
    device_a.publish(f"devices/{serial_b}/telemetry", body, qos=1).wait_for_publish(5)  # as B: refused
    device_a.publish(f"devices/{serial_b}/fault", body, qos=1).wait_for_publish(5)  # as B: refused
    device_a.publish(f"devices/{serial_a}/telemetry", body, qos=1).wait_for_publish(5)  # as itself: fine
    device_a.publish(f"devices/{serial_a}/status", json.dumps({"ts": utcnow().isoformat(), "seq": 2, "online": True}),
                     qos=1).wait_for_publish(5)
    assert got.wait(5)
    assert received == [f"devices/{serial_a}/telemetry", f"devices/{serial_a}/status"]
    _, rc = paho_client(broker.port, serial_b, token_a)  # B's name with A's secret
    assert rc != 0
    _, rc = paho_client(broker.port, serial_a, "")  # no secret
    assert rc != 0
    for client in (watcher, device_a):
        client.loop_stop()
        client.disconnect()


def start_worker(db_url: str, broker: Broker, log: pathlib.Path, *, client_id: str | None = None,
                 **extra: str) -> subprocess.Popen[bytes]:
    """``python -m device_hooks.worker`` on the broker's service listener; returns once it has connected."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), DATABASE_URL=db_url, MQTT_HOST="127.0.0.1",
               MQTT_PORT=str(broker.service_port), MQTT_WORKER_PASSWORD=broker.worker_password,
               MQTT_CLIENT_ID=client_id or f"worker-{broker.port}", RASA_URL="http://127.0.0.1:9", RASA_TOKEN="unused",
               **extra)
    before = log.read_text().count("connected to mqtt") if log.exists() else 0
    proc = subprocess.Popen([sys.executable, "-m", "device_hooks.worker"], cwd=ROOT, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        if log.read_text().count("connected to mqtt") > before:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail("worker did not connect:\n" + log.read_text()[-2000:])


def stored(db_url: str, device_ids: list[int]) -> int:
    with session_scope(db_url) as session:
        return session.scalar(select(func.count(DeviceMessage.id)).where(DeviceMessage.device_id.in_(device_ids))) or 0


def publish_stream(broker: Broker, devices: list[SimDevice], count: int, fault_at: int) -> None:
    conns = [Connection(d, window=200) for d in devices]
    for c in conns:
        c.open("127.0.0.1", broker.port)
    for i in range(count):
        conn = conns[i % len(conns)]
        if i == fault_at:
            conn.publish("fault", payload(conn.device, utcnow(), code="E09", state="raised"))
        conn.publish("telemetry", payload(conn.device, utcnow(), readings={"compartment_temp_c": 4.0}))
        if i % 500 == 0:
            pump(conns, 0.01)  # a steady stream, not one burst, so the kill lands mid-stream
    for c in conns:
        c.settle()
        c.close()


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(db_url: str, broker_fleet, tmp_path: pathlib.Path):
    broker, devices, device_ids = broker_fleet
    log = tmp_path / "worker.log"
    worker = start_worker(db_url, broker, log)
    count = 20_000
    publisher = threading.Thread(target=publish_stream, args=(broker, devices, count, 7_000))
    publisher.start()
    deadline = time.time() + 60
    while stored(db_url, device_ids) < 3_000 and time.time() < deadline:
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGKILL)  # mid-stream, with batches unacknowledged
    worker.wait()
    at_kill = stored(db_url, device_ids)
    assert 0 < at_kill < count + 1, "the kill should land in the middle of the stream"
    time.sleep(0.5)
    worker = start_worker(db_url, broker, log)
    publisher.join(120)
    deadline = time.time() + 90
    while stored(db_url, device_ids) < count + 1 and time.time() < deadline:
        time.sleep(0.2)
    worker.send_signal(signal.SIGTERM)
    worker.wait(20)
    assert stored(db_url, device_ids) == count + 1  # every telemetry message and the fault, once
    with session_scope(db_url) as session:
        tickets = session.scalars(select(Ticket).where(Ticket.device_id.in_(device_ids), Ticket.fault_code == "E09")).all()
    assert len(tickets) == 1


@pytest.fixture
def broker_fleet(db_url: str, fleet: Fleet, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Five fridges with credentials, then the broker (which reads the password file at start)."""
    made = [fleet.device("FR50") for _ in range(5)]
    broker = request.getfixturevalue("broker")
    devices = [SimDevice(serial, token, ApplianceCategory.FRIDGE) for _id, serial, token in made]
    return broker, devices, [device_id for device_id, _s, _t in made]


def test_the_broker_refuses_packets_over_its_limit_and_passes_smaller_oversize_ones_for_counting(
        fleet: Fleet, request: pytest.FixtureRequest):
    """max_packet_size in the generated config: a 100 KB publish is refused by Mosquitto (MQTT 5: "packet too
    large", the device is disconnected) and never reaches the worker's subscription; a 60 KB one (over the
    contract's 16 KiB, under the broker's 64 KiB) is delivered, so the worker refuses it as too_large and counts it."""
    from device_hooks.validation import MAX_PACKET_BYTES, MAX_PAYLOAD_BYTES

    _, serial, token = fleet.device("FR50")
    broker: Broker = request.getfixturevalue("broker")
    assert f"max_packet_size {MAX_PACKET_BYTES}\n" in broker.conf.read_text()
    sizes: list[int] = []
    got = threading.Event()
    watcher, rc = paho_client(broker.service_port, WORKER_USER, broker.worker_password)
    assert rc == 0

    def on_message(_c, _u, msg):  # type: ignore[no-untyped-def]
        sizes.append(len(msg.payload))
        got.set()

    watcher.on_message = on_message
    watcher.subscribe("devices/#", qos=1)
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=serial, protocol=mqtt.MQTTv5)
    device.username_pw_set(serial, token)
    reasons: list[str] = []
    gone = threading.Event()

    def on_disconnect(_c, _u, _f, reason_code, _p):  # type: ignore[no-untyped-def]
        reasons.append(str(reason_code))
        gone.set()

    device.on_disconnect = on_disconnect
    device.connect("127.0.0.1", broker.port)
    device.loop_start()
    device.publish(f"devices/{serial}/telemetry", b"A" * 100_000, qos=1)
    assert gone.wait(10) and reasons == ["Packet too large"]
    device.loop_stop()
    device2, rc = paho_client(broker.port, serial, token)
    assert rc == 0
    device2.publish(f"devices/{serial}/telemetry", b"B" * 60_000, qos=1).wait_for_publish(10)
    assert got.wait(10)
    assert sizes == [60_000] and MAX_PAYLOAD_BYTES < 60_000 < MAX_PACKET_BYTES
    for client in (watcher, device2):
        client.loop_stop()
        client.disconnect()
