"""Faults injected into the real worker on SQLite and PostgreSQL: a commit that fails in the middle of a
batch, consent revoked and a device transferred while the worker runs, a device signing in with the
worker's client id, and a processor that dies."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import pathlib
import signal
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import event, select
from sqlalchemy.exc import DBAPIError

from crm_store.db import session_scope
from crm_store.enums import ApplianceCategory
from crm_store.models import Device, IngestCounter, ProactiveMessage, Ticket, utcnow
from device_hooks.pipeline import BatchResult, Pipeline, RawMessage
from device_hooks.settings import DeviceSettings
from device_hooks.simulator import Connection, SimDevice, payload
from device_hooks.worker import Worker
from tests.device_hooks.conftest import Broker, Fleet, message
from tests.device_hooks.test_broker import start_worker, stored


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> float:
    """Polls ``condition`` until it is true; returns the seconds it took. Fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def counter(url: str, name: str) -> int:
    with session_scope(url) as session:
        return int(session.scalar(select(IngestCounter.value).where(IngestCounter.name == name)) or 0)


def co_alarm(serial: str) -> list[RawMessage]:
    """A boiler's carbon-monoxide readings above 50 ppm for 75 s (the rule's hold time is 60 s)."""
    start = utcnow() - dt.timedelta(minutes=10)
    return [message(serial, ts=start + dt.timedelta(seconds=15 * i), readings={"co_ppm": 120.0, "pressure_bar": 1.5})
            for i in range(6)]


def test_a_batch_whose_commit_fails_is_retried_with_its_fault(db_url: str, fleet: Fleet):
    device_id, serial, _ = fleet.device("BL30")
    pipeline = Pipeline(db_url)
    injected: list[str] = []

    def fail_once(_conn, _cursor, statement: str, params, _context, _many):  # type: ignore[no-untyped-def]
        # A real database error in the middle of the batch: after the rules were evaluated, the ticket's
        # INSERT goes to a table that does not exist. The whole transaction rolls back.
        if not injected and statement.lstrip().upper().startswith("INSERT INTO TICKETS"):
            injected.append(statement)
            return statement.replace("tickets", "tickets_injected_failure", 1), params
        return statement, params

    event.listen(pipeline.engine, "before_cursor_execute", fail_once, retval=True)
    try:
        batch = co_alarm(serial)
        with pytest.raises(DBAPIError):
            pipeline.process(batch)
        assert injected
        retried = pipeline.process(batch)  # what the worker does: the same batch, unacknowledged, again
    finally:
        event.remove(pipeline.engine, "before_cursor_execute", fail_once)
    assert retried.accepted == 6 and len(retried.tickets_opened) == 1
    with session_scope(db_url) as session:
        [ticket] = session.scalars(select(Ticket).where(Ticket.device_id == device_id))
        assert ticket.fault_code == "E99" and ticket.priority.value == "urgent"


def test_revoked_consent_and_a_transferred_device_take_effect_while_the_worker_runs(
        db_url: str, fleet: Fleet, request: pytest.FixtureRequest, tmp_path: pathlib.Path):
    device_id, serial, token = fleet.device("WM80")
    _other_device, _other_serial, _ = fleet.device("WM80")  # its owner will receive the device
    broker: Broker = request.getfixturevalue("broker")
    worker = start_worker(db_url, broker, tmp_path / "worker.log")
    conn = Connection(SimDevice(serial, token, ApplianceCategory.WASHING_MACHINE))
    conn.open("127.0.0.1", broker.port)
    try:
        conn.publish("telemetry", payload(conn.device, utcnow(), readings={"drum_rpm": 800.0}))
        wait_until(lambda: stored(db_url, [device_id]) == 1, 10, "the first reading")
        refused_before = counter(db_url, "rejected:no_consent")
        with session_scope(db_url) as session:
            device = session.get(Device, device_id)
            device.owner.consent_telemetry = False
            first_owner = device.customer_id
        revoked = time.monotonic()
        conn.publish("telemetry", payload(conn.device, utcnow(), readings={"drum_rpm": 810.0}))
        wait_until(lambda: counter(db_url, "rejected:no_consent") > refused_before, 5, "no_consent")
        assert time.monotonic() - revoked < 5 and stored(db_url, [device_id]) == 1

        with session_scope(db_url) as session:
            new_owner = session.scalar(select(Device.customer_id).where(Device.id == _other_device))
            session.get(Device, device_id).customer_id = new_owner
        conn.publish("fault", payload(conn.device, utcnow(), code="E21", state="raised"))
        wait_until(lambda: tickets(db_url, device_id), 10, "the fault's ticket")
        with session_scope(db_url) as session:
            [ticket] = session.scalars(select(Ticket).where(Ticket.device_id == device_id))
            outbox = session.scalars(select(ProactiveMessage).where(ProactiveMessage.ticket_id == ticket.id)).all()
            assert ticket.customer_id == new_owner != first_owner
            assert outbox and {m.customer_id for m in outbox} == {new_owner}
    finally:
        conn.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)


def tickets(url: str, device_id: int) -> list[Ticket]:
    with session_scope(url) as session:
        return list(session.scalars(select(Ticket).where(Ticket.device_id == device_id)))


def test_a_device_signing_in_with_the_workers_client_id_takes_nothing_over(
        db_url: str, fleet: Fleet, request: pytest.FixtureRequest, tmp_path: pathlib.Path):
    device_id, serial, token = fleet.device("FR50")
    intruder_id, intruder_serial, intruder_token = fleet.device("FR50")
    broker: Broker = request.getfixturevalue("broker")
    log = tmp_path / "worker.log"
    client_id = f"worker-{broker.port}"
    worker = start_worker(db_url, broker, log, client_id=client_id)
    # The intruder: a real device's credentials, the worker's client id, a clean session (which would
    # wipe the worker's persistent session and disconnect it if the broker let it have that id).
    intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    intruder.username_pw_set(intruder_serial, intruder_token)
    connected = threading.Event()
    intruder.on_connect = lambda *_a: connected.set()
    intruder.connect("127.0.0.1", broker.port)
    intruder.loop_start()
    conn = Connection(SimDevice(serial, token, ApplianceCategory.FRIDGE))
    try:
        assert connected.wait(5)
        intruder.subscribe("devices/#", qos=1)  # and it may not read other devices' messages either
        conn.open("127.0.0.1", broker.port)
        for i in range(20):
            conn.publish("telemetry", payload(conn.device, utcnow() + dt.timedelta(milliseconds=i),
                                              readings={"compartment_temp_c": 4.0}))
        conn.settle()
        wait_until(lambda: stored(db_url, [device_id]) == 20, 15, "all 20 messages stored")
        assert "connection lost" not in log.read_text()
        assert stored(db_url, [intruder_id]) == 0
    finally:
        conn.close()
        intruder.loop_stop()
        intruder.disconnect()
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)


class FailsOnce(Pipeline):
    """A pipeline whose processing raises once with an error that is not the database's (a bug)."""

    failed = False

    def process(self, batch: list[RawMessage], *, now: dt.datetime | None = None) -> BatchResult:
        if not self.failed and len(batch) > 1:
            self.failed = True
            raise RuntimeError("injected processor failure")
        return super().process(batch, now=now)


def test_a_dying_processor_is_logged_and_the_worker_reconnects_and_stores_everything(
        db_url: str, fleet: Fleet, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture):
    made = [fleet.device("FR50") for _ in range(3)]
    broker: Broker = request.getfixturevalue("broker")
    settings = DeviceSettings(database_url=db_url, mqtt_port=broker.service_port,
                              mqtt_worker_password=broker.worker_password, mqtt_client_id=f"inproc-{broker.port}",
                              rasa_url="http://127.0.0.1:9", batch_wait_ms=50, _env_file=None)
    worker = Worker(settings, FailsOnce(db_url))
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_until_complete, args=(worker.run(),), daemon=True)
    caplog.set_level(logging.INFO, logger="device_hooks.worker")
    runner.start()
    conns = [Connection(SimDevice(s, t, ApplianceCategory.FRIDGE)) for _i, s, t in made]
    try:
        wait_until(lambda: worker.session is not None and worker.session.connected.is_set(), 10, "the worker's connection")
        for c in conns:
            c.open("127.0.0.1", broker.port)
        base = utcnow() - dt.timedelta(minutes=5)
        for i in range(300):
            c = conns[i % 3]
            c.publish("telemetry", payload(c.device, base + dt.timedelta(milliseconds=i), readings={"compartment_temp_c": 4.0}))
        for c in conns:
            c.settle()
        wait_until(lambda: stored(db_url, [d for d, _s, _t in made]) == 300, 30, "all 300 messages stored")
        assert worker.restarts == 1
        text = caplog.text
        assert "injected processor failure" in text and "the batch processor died" in text
        assert text.count("connected to mqtt") >= 2  # a new session after the failure
    finally:
        for c in conns:
            c.close()
        loop.call_soon_threadsafe(worker.stopping.set)
        runner.join(30)
    assert not runner.is_alive()
