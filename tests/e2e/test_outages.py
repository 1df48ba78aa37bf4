"""Outages of a shared dependency on the production topology, through the real processes (issue 14): the
stack's own Mosquitto killed with -9 while ten devices stream telemetry, and the stack's CRM database
refusing connections for ~12 s (``ALLOW_CONNECTIONS false`` + ``pg_terminate_backend``; the shared PostgreSQL
server and the tracker database stay up). After each, the workers, web replicas, action and Rasa servers are
the same processes as before; a device fault yields one ticket and one proactive message in the owner's open
web chat. Measured times go to the test's output and to ``test-artifacts/outages.json``.

Bounded: one simulator of 10 devices (one reading per device per second) for at most 90 s per test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import ARTIFACTS, ROOT, Stack, wait_until
from tests.e2e.test_chaos import PresenceHeartbeat
from tests.e2e.test_device_flows import admin, free_warning_code, query, simulator, verify_as, wait_for_bot
from tests.e2e.test_handoff_flow import SioCustomer

pytestmark = pytest.mark.production_only

WORKERS = ("worker-1", "worker-2")
WEBS = ("web-1", "web-2")
# Processes that must ride out an outage of the broker or of the CRM database without being restarted.
SURVIVORS = ("haproxy", *WORKERS, "actions-1", "actions-2", "rasa-1", "rasa-2", *WEBS)
OUTAGE_SECONDS = 12.0
PUSH_BOUND_SECONDS = 60.0  # fault published -> the bot's message in the owner's chat, after the outage
CRM_UNAVAILABLE = "can't reach our customer records"  # actions.base.CRM_UNAVAILABLE


def record(name: str, figures: dict[str, Any]) -> None:
    """Prints the test's measurements and keeps them in test-artifacts/outages.json (one key per test)."""
    print(f"{name}: {json.dumps(figures)}")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "outages.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[name] = {**figures, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    path.write_text(json.dumps(results, indent=1))


def owner_with_open_chat(stack: Stack) -> tuple[str, str, str, int]:
    """(serial, e-mail, order number, customer id) of a customer who takes proactive messages at any hour
    and has no open ticket (each test leaves one, so the next test gets another customer)."""
    rows = query(stack, """
        SELECT d.serial, c.email, p.order_number, c.id FROM devices d JOIN customers c ON c.id = d.customer_id
        JOIN purchases p ON p.device_id = d.id
        WHERE c.consent_proactive AND c.quiet_hours_start IS NULL AND c.id > 20
          AND c.id NOT IN (SELECT customer_id FROM tickets WHERE open_dedup_key IS NOT NULL AND customer_id IS NOT NULL)
        ORDER BY c.id DESC LIMIT 1""")
    assert rows, "no customer left without an open ticket"
    serial, email, order, customer_id = rows[0]
    return str(serial), str(email), str(order), int(customer_id)


def streaming_devices(stack: Stack, n: int, *, besides: str) -> list[str]:
    """``n`` devices whose telemetry is stored (owner's consent, or no owner), not the fault's device."""
    rows = query(stack, """
        SELECT d.serial FROM devices d JOIN product_models m ON m.id = d.model_id
        LEFT JOIN customers c ON c.id = d.customer_id
        WHERE m.category <> 'cold_chain_logger' AND (c.id IS NULL OR c.consent_telemetry) AND d.serial <> ?
        ORDER BY d.id DESC LIMIT ?""", besides, n)
    assert len(rows) == n
    return [str(r[0]) for r in rows]


def stored_since(stack: Stack, serials: list[str], since: dt.datetime, until: dt.datetime | None = None) -> int:
    """Rows the workers stored for these devices with a device timestamp from ``since`` on (before ``until``)."""
    marks = ",".join("?" * len(serials))
    until = until or dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)
    return int(query(stack, f"SELECT count(*) FROM device_messages m JOIN devices d ON d.id = m.device_id "
                            f"WHERE d.serial IN ({marks}) AND m.ts >= ? AND m.ts < ?", *serials, since, until)[0][0])


class Stream:
    """``python -m device_hooks.simulator run --reconnect`` for these devices, one reading each per second;
    ``counts()`` waits for its end and returns what it published and the broker acknowledged."""

    def __init__(self, stack: Stack, serials: list[str], seconds: float) -> None:
        self.started = dt.datetime.now(dt.timezone.utc)
        serial_args = [a for s in serials for a in ("--serial", s)]
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv-app" / "bin" / "python"), "-m", "device_hooks.simulator", "--tokens-file",
             str(stack.work / "device_tokens.json"), *stack.simulator_args(), "run", *serial_args,
             "--interval", "1", "--duration", str(seconds), "--reconnect"],
            cwd=ROOT, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def running(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the simulator stopped early: {self.proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        return True

    def counts(self, timeout: float = 150) -> dict[str, int]:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err[-2000:]
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def publish_fault(stack: Stack, serial: str, code: str) -> None:
    """What the appliance sends for a fault without a telemetry rule (``simulator inject`` does the same, but
    reads the fleet from the CRM first, which a database outage rules out): one QoS 1 message on its fault
    topic, signed in with its own token; returns once the broker has acknowledged it."""
    from crm_store.enums import ApplianceCategory
    from crm_store.models import utcnow
    from device_hooks.simulator import Connection, SimDevice, payload

    token = json.loads((stack.work / "device_tokens.json").read_text())[serial]
    device = SimDevice(serial, token, ApplianceCategory.FRIDGE)  # the category matters only for readings
    port, tls = stack.device_mqtt()  # TLS: the production stack has no plain device listener
    conn = Connection(device, tls=tls)
    conn.open("127.0.0.1", port)
    conn.publish("fault", payload(device, utcnow(), code=code, state="raised", detail="reported by the appliance's self-test"))
    conn.settle(timeout=30)
    conn.close()
    assert conn.acked == conn.published == 1, "the broker did not acknowledge the fault"


def log_text(stack: Stack, name: str) -> str:
    path = stack.work / "log" / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def connections(stack: Stack, worker: str) -> int:
    """How often the worker has connected to the broker (device_hooks.worker logs each connection)."""
    return log_text(stack, worker).count("connected to mqtt://")


def health(stack: Stack, web: str, path: str = "/health") -> tuple[int, dict[str, Any]]:
    """One web replica's own /health (or /health/ready): status and body."""
    try:
        with urllib.request.urlopen(f"{stack.instance_url(web)}{path}", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def http(stack: Stack, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, str]:
    """A request through the load balancer: status and raw body (a 500's body need not be JSON)."""
    req = urllib.request.Request(f"{stack.web_url}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def pushed_ticket(customer: SioCustomer, code: str, timeout: float) -> str:
    """The bot's proactive message about fault ``code`` in this chat: its ticket number."""
    event = wait_for_bot(customer, r"T-\d{6}", timeout=timeout)
    assert code in event["text"], event["text"]
    return re.search(r"T-\d{6}", event["text"]).group(0)  # type: ignore[union-attr]


def one_ticket_told_once(stack: Stack, customer_id: int, code: str, number: str) -> None:
    assert query(stack, "SELECT number FROM tickets WHERE customer_id = ? AND fault_code = ?", customer_id, code) \
        == [(number,)]
    assert query(stack, "SELECT m.status, count(*) FROM proactive_messages m JOIN tickets t ON t.id = m.ticket_id "
                        "WHERE t.number = ? GROUP BY m.status", number) == [("sent", 1)]


@contextlib.contextmanager
def crm_database_outage(stack: Stack) -> Iterator[None]:
    """The stack's CRM database refuses new sessions and loses its open ones, as in a failover or restart;
    PostgreSQL itself (the tracker database, other tests' databases) stays up. Always ended on exit."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tests.conftest import PG_ADMIN_URL

    name = make_url(stack.database_url).database
    admin_engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin_engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        yield
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        admin_engine.dispose()


def unchanged(stack: Stack, before: dict[str, int], names: tuple[str, ...]) -> None:
    """These processes are the ones that ran before (no death, no restart by the supervisor)."""
    now = stack.pids()
    restarted = {n: (before[n], now.get(n)) for n in names if now.get(n) != before[n]}
    assert not restarted, f"restarted (old pid, new pid): {restarted}; supervisor: {''.join((stack.output or [])[-10:])}"


def settled(customer: SioCustomer, seconds: float = 3) -> None:
    """Reads what the bot still had to say (e.g. the device list after verification) until it is quiet."""
    while not customer.silent_for(seconds):
        pass


def test_after_a_broker_kill_9_the_workers_reconnect_by_themselves_and_a_fault_reaches_the_owner_once(stack: Stack):
    serial, email, order, customer_id = owner_with_open_chat(stack)
    code = free_warning_code(stack, serial)
    serials = streaming_devices(stack, 10, besides=serial)
    before = stack.pids()
    customer = SioCustomer(stack)
    heartbeat = None
    stream = None
    try:
        verify_as(customer, email, order)
        wait_for_bot(customer, "registered with us")  # the device list the verification was for
        settled(customer)
        heartbeat = PresenceHeartbeat(stack, customer)
        stream = Stream(stack, serials, seconds=75)
        wait_until(lambda: stream.running() and stored_since(stack, serials, stream.started) >= 2 * len(serials), 60,
                   "the stream is being stored")
        connected = {w: connections(stack, w) for w in WORKERS}

        old = stack.kill9("broker")
        killed = time.monotonic()
        stack.wait_restarted("broker", old, timeout=60)
        restarted = dt.datetime.now(dt.timezone.utc)
        # Each worker reconnects on its own (paho's back-off), with no restart of its process.
        wait_until(lambda: all(connections(stack, w) > connected[w] for w in WORKERS), 60,
                   "both workers have connected to the new broker")
        reconnected_after = time.monotonic() - killed
        assert "connection lost" in log_text(stack, "worker-1") and "connection lost" in log_text(stack, "worker-2")
        for web in WEBS:  # each replica's health check signs in to the broker again
            wait_until(lambda w=web: health(stack, w)[1]["checks"]["mqtt"]["status"] == "up", 30, f"{web} sees the broker")
        # The devices signed in again too, and what they publish now is stored.
        wait_until(lambda: stream.running() and stored_since(stack, serials, restarted) >= len(serials), 60,
                   "telemetry published after the restart is stored")

        sent = time.monotonic()
        simulator(stack, "inject", serial, code)
        number = pushed_ticket(customer, code, PUSH_BOUND_SECONDS)
        push_seconds = time.monotonic() - sent
        assert customer.silent_for(5), customer.received[-1]  # told once
        one_ticket_told_once(stack, customer_id, code, number)

        counts = stream.counts()
        stored = stored_since(stack, serials, stream.started)
        assert counts["acked_by_broker"] == counts["published"]
        assert stored <= counts["published"]  # no duplicates ((device, ts, seq) is unique anyway)
        # Nothing can be published while the broker is down, so only what it held at the kill may be lost
        # (see record() below): measured 2 and 3 of 740. More than 2 s of this stream would be a new leak.
        assert counts["published"] - stored <= 2 * len(serials), counts["published"] - stored
        unchanged(stack, before, SURVIVORS)
        record("broker_restart", {
            "broker_down_to_both_workers_reconnected_s": round(reconnected_after, 1),
            "fault_to_customer_message_s": round(push_seconds, 1),
            "stream_published": counts["published"], "stream_acked_by_broker": counts["acked_by_broker"],
            # Mosquitto 2.0 keeps what it acknowledged but had not yet delivered only as of its last autosave
            # (autosave_interval 60) and drops a shared subscription's queue over a restart: a kill -9 may
            # lose those few seconds of telemetry (see the README's worker section).
            "stream_stored": stored, "stream_lost_in_the_broker": counts["published"] - stored,
        })
        assert push_seconds < PUSH_BOUND_SECONDS
    finally:
        if heartbeat is not None:
            heartbeat.close()
        if stream is not None:
            stream.stop()
        customer.close()


def test_a_crm_database_outage_loses_no_telemetry_or_fault_and_the_chat_and_api_answer_sensibly(stack: Stack):
    serial, email, order, customer_id = owner_with_open_chat(stack)
    code = free_warning_code(stack, serial)
    serials = streaming_devices(stack, 10, besides=serial)
    token = admin(stack)  # signed in before the outage; a sign-in needs the database
    before = stack.pids()
    customer = SioCustomer(stack)
    heartbeat = None
    stream = None
    try:
        verify_as(customer, email, order)
        wait_for_bot(customer, "registered with us")  # the device list the verification was for
        settled(customer)
        heartbeat = PresenceHeartbeat(stack, customer)
        stream = Stream(stack, serials, seconds=60)
        wait_until(lambda: stream.running() and stored_since(stack, serials, stream.started) >= 2 * len(serials), 60,
                   "the stream is being stored")
        failed_commits = sum(log_text(stack, w).count("storing a batch") for w in WORKERS)

        with crm_database_outage(stack):
            began, outage_from = time.monotonic(), dt.datetime.now(dt.timezone.utc)
            # Readiness says not ready on each replica; liveness still answers, so nothing restarts the web
            # service and HAProxy (which checks /health) keeps both in rotation.
            for web in WEBS:
                status, body = health(stack, web, "/health/ready")
                assert status == 503 and body["ready"] is False and body["checks"]["database"]["status"] == "down", body
                status, body = health(stack, web)
                assert status == 200 and body["ready"] is False, body
            # The API: 503 (retry later), not a 500.
            status, text = http(stack, "GET", "/api/customers?limit=1", token=token)
            assert status == 503 and "retry later" in text, (status, text)
            status, text = http(stack, "POST", "/api/auth/token", {"username": "admin", "password": stack.env["ADMIN_PASSWORD"]})
            assert status == 503, (status, text)
            # A fault the device reports now: the broker takes it (acknowledged), the workers cannot store it yet.
            fault_sent = time.monotonic()
            publish_fault(stack, serial, code)
            # The verified customer asks for their devices: a helpful answer, not silence, not a question.
            customer.say("what devices do I have?")
            replies = [wait_for_bot(customer, ".", timeout=60)["text"]]
            while not customer.silent_for(3):
                replies.append(customer.received[-1])
            assert any(CRM_UNAVAILABLE in r for r in replies), replies
            assert not any("e-mail" in r for r in replies), replies  # it does not start verifying again
            # The workers keep the batch (unacknowledged) and retry it.
            wait_until(lambda: sum(log_text(stack, w).count("storing a batch") for w in WORKERS) > failed_commits, 30,
                       "a worker fails to store a batch and retries")
            assert time.monotonic() - began < OUTAGE_SECONDS + 60, "the outage checks took too long"
            wait_until(lambda: time.monotonic() - began >= OUTAGE_SECONDS, OUTAGE_SECONDS, "the outage has lasted")
        outage_seconds = time.monotonic() - began
        recovered, outage_to = time.monotonic(), dt.datetime.now(dt.timezone.utc)

        for web in WEBS:
            wait_until(lambda w=web: health(stack, w, "/health/ready")[0] == 200, 30, f"{web} is ready again")
        number = pushed_ticket(customer, code, PUSH_BOUND_SECONDS)
        after_recovery = time.monotonic() - recovered
        after_fault = time.monotonic() - fault_sent
        assert customer.silent_for(5), customer.received[-1]
        one_ticket_told_once(stack, customer_id, code, number)

        counts = stream.counts()
        assert counts["acked_by_broker"] == counts["published"]
        # Every acknowledged publish is stored once: the workers acknowledge only after their commit.
        wait_until(lambda: stored_since(stack, serials, stream.started) >= counts["acked_by_broker"], 60,
                   "everything the broker acknowledged is stored")
        stored = stored_since(stack, serials, stream.started)
        assert stored == counts["acked_by_broker"]
        # Among them the readings sent while the database was away (one per device per second).
        during = stored_since(stack, serials, outage_from, outage_to)
        assert during >= len(serials) * OUTAGE_SECONDS / 2, during
        # The chat works normally again.
        customer.say("what devices do I have?")
        wait_for_bot(customer, "registered with us", timeout=60)
        status, _text = http(stack, "GET", "/api/customers?limit=1", token=token)
        assert status == 200
        unchanged(stack, before, SURVIVORS)
        record("crm_database_outage", {
            "outage_s": round(outage_seconds, 1), "recovery_to_customer_message_s": round(after_recovery, 1),
            "fault_to_customer_message_s": round(after_fault, 1), "stream_published": counts["published"],
            "stream_acked_by_broker": counts["acked_by_broker"], "stream_stored": stored,
            "stream_sent_during_the_outage_and_stored": during,
        })
        assert after_recovery < PUSH_BOUND_SECONDS
    finally:
        if heartbeat is not None:
            heartbeat.close()
        if stream is not None:
            stream.stop()
        customer.close()
