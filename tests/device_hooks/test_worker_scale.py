"""Two workers sharing the stream on PostgreSQL, under injected faults: one worker killed with -9, the
broker restarted twice, the database refusing connections. Each run streams telemetry of several fridges
with fault episodes (a compartment that warms up and stays warm, a compressor fault code) and checks that
every published QoS 1 message is stored once (the device's (ts, seq) is the message's identity: a
redelivery is an ``ON CONFLICT DO NOTHING``) and that each episode opened exactly one ticket."""

from __future__ import annotations

import datetime as dt
import pathlib
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from crm_store.db import session_scope
from crm_store.demo_data import seed_catalogue
from crm_store.enums import ApplianceCategory
from crm_store.models import DeviceMessage, Ticket, utcnow
from device_hooks.simulator import Connection, SimDevice, payload, pump
from tests.conftest import migrated_database
from tests.device_hooks.conftest import Broker, Fleet
from tests.device_hooks.test_broker import start_worker, stored
from tests.device_hooks.test_worker_faults import wait_until

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PostgreSQL only: locking and concurrent commits are what these tests are about."""
    with migrated_database("postgresql", tmp_path_factory) as url:
        with session_scope(url) as session:
            seed_catalogue(session)
        yield url


class Stream:
    """``count`` telemetry messages round-robin over the devices, published from a thread. Each device
    has its own clock (one second per message, starting three hours ago); the episode devices' fridges
    warm up above 8 °C at 40 % of the stream and stay warm (fault E01 once held 15 minutes), and report
    compressor fault E09 at 50 %."""

    def __init__(self, broker: Broker, devices: list[SimDevice], episodes: int, count: int) -> None:
        self.broker, self.devices, self.episodes, self.count = broker, devices, episodes, count
        self.published = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            conns = [Connection(d, window=500, reconnect=True) for d in self.devices]
            for c in conns:
                c.open("127.0.0.1", self.broker.port)
            base = utcnow() - dt.timedelta(hours=3)
            sent: Counter[str] = Counter()
            per_device = self.count // len(conns)
            for i in range(self.count):
                d = i % len(conns)
                conn = conns[d]
                n = sent[conn.device.serial]
                sent[conn.device.serial] += 1
                ts = base + dt.timedelta(seconds=n)
                warm = d < self.episodes and n >= per_device * 0.4
                conn.publish("telemetry", payload(conn.device, ts, readings={"compartment_temp_c": 10.5 if warm else 4.0}))
                if d < self.episodes and n == per_device // 2:
                    conn.publish("fault", payload(conn.device, ts + dt.timedelta(milliseconds=500), code="E09", state="raised"))
                    self.published += 1
                self.published += 1
                if i % 400 == 0:
                    pump(conns, 0.02)  # a steady stream over several seconds, so that faults land mid-stream
            for c in conns:
                c.settle(timeout=120)
                assert c.acked >= c.published, f"{c.device.serial}: {c.published - c.acked} publishes not acknowledged"
                c.close()
        except BaseException as err:  # noqa: BLE001 - reported by join()
            self.error = err

    def progress(self, db_url: str, device_ids: list[int], target: int) -> bool:
        """For wait_until: stored at least ``target``; raises the publisher's error if it failed."""
        if self.error:
            raise self.error
        return stored(db_url, device_ids) >= target

    def join(self) -> None:
        self.thread.join(180)
        assert not self.thread.is_alive(), "the publisher did not finish"
        if self.error:
            raise self.error


@pytest.fixture
def streamed(fleet: Fleet, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Six fridges with credentials, then the broker (it reads the password file when it starts)."""
    made = [fleet.device("FR50") for _ in range(6)]
    broker = request.getfixturevalue("broker")
    return broker, [SimDevice(s, t, ApplianceCategory.FRIDGE) for _i, s, t in made], [i for i, _s, _t in made]


def check_outcome(db_url: str, device_ids: list[int], published: int, episodes: int) -> None:
    """Every message stored once; per episode device one E01 and one E09 ticket; nothing else."""
    deadline = time.monotonic() + 120
    while stored(db_url, device_ids) < published and time.monotonic() < deadline:
        time.sleep(0.2)
    with session_scope(db_url) as session:
        rows = session.execute(select(DeviceMessage.device_id, DeviceMessage.ts).where(DeviceMessage.device_id.in_(device_ids))
                               .order_by(DeviceMessage.device_id, DeviceMessage.ts)).all()
    gaps = [(d, prev, ts) for (d, ts), (pd, prev) in zip(rows[1:], rows[:-1]) if d == pd and ts - prev > dt.timedelta(seconds=1)]
    assert len(rows) == published, f"{published - len(rows)} lost; gaps (device, after, before): {gaps[:10]}"
    with session_scope(db_url) as session:
        rows = session.execute(select(Ticket.device_id, Ticket.fault_code, func.count())
                               .where(Ticket.device_id.in_(device_ids)).group_by(Ticket.device_id, Ticket.fault_code)).all()
    assert sorted((d, code, n) for d, code, n in rows) == sorted(
        [(d, "E01", 1) for d in device_ids[:episodes]] + [(d, "E09", 1) for d in device_ids[:episodes]])


def stop(*workers: subprocess.Popen[bytes]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(30)


def processed(log: pathlib.Path) -> list[int]:
    return [int(line.rsplit("after ", 1)[1].split()[0]) for line in log.read_text().splitlines() if "stopped after" in line]


def test_two_workers_share_the_stream_and_a_killed_one_loses_and_duplicates_nothing(db_url: str, streamed, tmp_path: pathlib.Path):
    broker, devices, device_ids = streamed
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start_worker(db_url, broker, log_a, client_id="worker-a", MQTT_SHARE_GROUP="crm-workers")
    b = start_worker(db_url, broker, log_b, client_id="worker-b", MQTT_SHARE_GROUP="crm-workers")
    stream = Stream(broker, devices, episodes=4, count=24_000).start()
    try:
        wait_until(lambda: stream.progress(db_url, device_ids, 6_000), 60, "a quarter of the stream")
        b.send_signal(signal.SIGKILL)  # mid-stream, its batches unacknowledged
        b.wait()
        assert stored(db_url, device_ids) < 24_000, "the kill should land in the middle of the stream"
        b = start_worker(db_url, broker, log_b, client_id="worker-b", MQTT_SHARE_GROUP="crm-workers")  # a supervisor restarts it; its session resumes
        stream.join()
        check_outcome(db_url, device_ids, stream.published, episodes=4)
    finally:
        stop(a, b)
    assert processed(log_a)[-1] > 0 and processed(log_b)[-1] > 0  # both workers took part
    assert "subscription: crm-workers" in log_a.read_text() and "subscription: crm-workers" in log_b.read_text()


@pytest.mark.parametrize("share_group", [
    "",
    pytest.param("crm-workers", marks=pytest.mark.xfail(strict=True, reason=(
        "Mosquitto 2.0.11 does not bring back the messages queued for a shared subscription's session over a "
        "restart (measured: ~7,500 of 20,000 lost, one contiguous block); with a plain subscription nothing is "
        "lost. Strict: this starts failing, i.e. passing, once the broker keeps them."))),
])
def test_the_worker_reconnects_by_itself_after_broker_restarts_and_loses_nothing(db_url: str, streamed, tmp_path: pathlib.Path,
                                                                                  share_group: str):
    broker, devices, device_ids = streamed
    log = tmp_path / "worker.log"
    worker = start_worker(db_url, broker, log, MQTT_SHARE_GROUP=share_group)
    stream = Stream(broker, devices, episodes=2, count=20_000).start()
    try:
        for threshold in (4_000, 10_000):
            wait_until(lambda t=threshold: stream.progress(db_url, device_ids, t), 60, f"{threshold} messages stored")
            connections = log.read_text().count("connected to mqtt")
            broker.stop()  # a broker restart: Mosquitto saves its sessions and queued messages (persistence on)
            wait_until(lambda: "connection lost" in log.read_text().split("connected to mqtt")[-1], 10, "the worker noticing")
            broker.start()  # same ports
            # paho's back-off restarts from 1 s after every good connection, so the second restart is as quick.
            took = wait_until(lambda c=connections: log.read_text().count("connected to mqtt") > c, 10, "the worker reconnecting")
            assert took < 6
        stream.join()
        check_outcome(db_url, device_ids, stream.published, episodes=2)
    finally:
        stop(worker)


def test_a_database_outage_is_retried_and_loses_and_duplicates_nothing(db_url: str, streamed, tmp_path: pathlib.Path):
    broker, devices, device_ids = streamed
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start_worker(db_url, broker, log_a, client_id="worker-a", MQTT_SHARE_GROUP="crm-workers")
    b = start_worker(db_url, broker, log_b, client_id="worker-b", MQTT_SHARE_GROUP="crm-workers")
    name = make_url(db_url).database
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    stream = Stream(broker, devices, episodes=3, count=20_000).start()
    try:
        wait_until(lambda: stream.progress(db_url, device_ids, 5_000), 60, "a quarter of the stream")
        with admin.connect() as conn:  # the database goes away: open sessions killed, new ones refused
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        try:
            wait_until(lambda: "storing a batch" in log_a.read_text() + log_b.read_text(), 20, "a failed commit")
            outage_started = time.monotonic()
            while time.monotonic() - outage_started < 2:  # a short outage: the workers keep retrying
                assert a.poll() is None and b.poll() is None
                time.sleep(0.1)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        stream.join()
        check_outcome(db_url, device_ids, stream.published, episodes=3)
    finally:
        stop(a, b)
        admin.dispose()


def test_a_batch_stuck_behind_a_lock_times_out_is_retried_and_stored(db_url: str, fleet: Fleet, request: pytest.FixtureRequest,
                                                                      tmp_path: pathlib.Path):
    device_id, serial, token = fleet.device("FR50")
    broker: Broker = request.getfixturevalue("broker")
    log = tmp_path / "worker.log"
    worker = start_worker(db_url, broker, log, DB_STATEMENT_TIMEOUT_MS="1000")
    conn = Connection(SimDevice(serial, token, ApplianceCategory.FRIDGE))
    blocker = create_engine(db_url).connect()
    try:
        # Another session (a stuck one) holds the device's row: the worker's batch must not wait for ever.
        blocker.execute(text("SELECT id FROM devices WHERE id = :id FOR UPDATE"), {"id": device_id})
        conn.open("127.0.0.1", broker.port)
        conn.publish("fault", payload(conn.device, utcnow(), code="E09", state="raised"))
        conn.settle()
        wait_until(lambda: "statement timeout" in log.read_text(), 20, "the timed-out batch logged")
        assert worker.poll() is None
        blocker.rollback()  # the stuck session goes away
        wait_until(lambda: stored(db_url, [device_id]) == 1, 20, "the retried batch stored")
        with session_scope(db_url) as session:
            assert session.scalar(select(func.count(Ticket.id)).where(Ticket.device_id == device_id)) == 1
    finally:
        blocker.close()
        conn.close()
        stop(worker)
