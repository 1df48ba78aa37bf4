"""A burst of devices posting over HTTP while chat-side traffic runs, on the SQLite default (issue 14).

Real processes: the web service under uvicorn, an action server writing to the same SQLite file, a mosquitto
of its own, and a Rasa that accepts connections but never answers (so every /health waits on it). Used by
``tests/web_service/test_event_loop.py`` (behaviour: every device answered 202, nothing 5xx, no freeze) and
by ``bench/bench_device_burst.py`` (the latency target, 1 s per request, measured and written to a file).
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from crm_store.db import get_engine, session_scope
from crm_store.demo_data import generate
from crm_store.enums import UserRole
from crm_store.models import Customer, Device
from crm_store.repositories.users import create_user
from device_hooks.broker import issue_credential
from tests.live import action_server, mosquitto, silent_port, web_service

DEVICES = 20
ACTIONS_TOKEN = "actions-test-token"
# One result: (kind of call, HTTP status or 599 for a transport error, seconds from the start barrier's release).
Result = tuple[str, int, float]


@dataclass
class Live:
    web: str
    actions: str
    db_path: pathlib.Path
    tokens: dict[str, str]
    customer_ids: list[int]
    staff: dict[str, str]


@contextmanager
def burst_stack(url: str, work: pathlib.Path) -> Iterator[Live]:
    """The processes above on the migrated, empty SQLite database ``url``, with 40 demo customers, an agent and
    a credential for each of the first ``DEVICES`` devices; stopped when the block ends."""
    with session_scope(url) as s:
        generate(s, customers=40)
        create_user(s, username="agent1", password="agent-password-123", role=UserRole.AGENT)
        devices = s.scalars(select(Device).order_by(Device.id).limit(DEVICES)).all()
        tokens = {d.serial: issue_credential(s, d) for d in devices}
        customer_ids = list(s.scalars(select(Customer.id).order_by(Customer.id).limit(10)))
    get_engine(url).dispose()
    assert len(tokens) == DEVICES
    db_path = pathlib.Path(url.removeprefix("sqlite:///"))
    with mosquitto(work) as mqtt_port, silent_port() as hung_rasa, \
            action_server({"DATABASE_URL": url, "ACTION_SERVER_TOKEN": ACTIONS_TOKEN}, work) as actions:
        env = {"DATABASE_URL": url, "SECRET_KEY": "k" * 40, "MQTT_HOST": "127.0.0.1", "MQTT_PORT": str(mqtt_port),
               "MQTT_BRIDGE_PASSWORD": "", "RASA_URL": f"http://127.0.0.1:{hung_rasa}",
               "ACTION_ENDPOINT_URL": f"{actions}/webhook", "REDIS_URL": "redis://127.0.0.1:6379/0",
               "HEALTH_TIMEOUT_SECONDS": "1"}
        with web_service(env, work) as web:
            resp = httpx.post(f"{web}/api/auth/token", json={"username": "agent1", "password": "agent-password-123"})
            staff = {"Authorization": f"Bearer {resp.json()['access_token']}"}
            yield Live(web, actions, db_path, tokens, customer_ids, staff)


def status_body(seq: int) -> bytes:
    return json.dumps({"ts": dt.datetime.now(dt.timezone.utc).isoformat(), "seq": seq, "online": True,
                       "firmware": "2.4.1", "rssi": -55}).encode()


def session_start_call(sender: str, customer_id: int) -> dict[str, Any]:
    """What Rasa posts to the action server at the start of a conversation."""
    return {
        "next_action": "action_session_start", "sender_id": sender, "version": "3.6.21",
        "domain": {"session_config": {"carry_over_slots_to_new_session": True}},
        "tracker": {"sender_id": sender, "slots": {"customer_id": float(customer_id)}, "latest_message": {},
                    "events": [], "paused": False, "followup_action": None, "active_loop": {},
                    "latest_action_name": None},
    }


def _all_at_once(jobs: list[tuple[str, Callable[[], httpx.Response]]]) -> list[Result]:
    """Runs every job on a thread of its own, released together by a barrier; one result per job."""
    results: list[Result] = []
    lock = threading.Lock()
    start = threading.Barrier(len(jobs))

    def run(kind: str, call: Callable[[], httpx.Response]) -> None:
        start.wait(timeout=30)
        started = time.perf_counter()
        try:
            result = (kind, call().status_code, time.perf_counter() - started)
        except httpx.HTTPError as exc:  # a timeout or a dropped connection is a failure like a 5xx
            result = (f"{kind} ({exc.__class__.__name__})", 599, time.perf_counter() - started)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def burst(live: Live, seq: int) -> list[Result]:
    """One burst: every device posts its status (``seq``) while 3 /health calls, 6 CRM reads and 4 action-server
    writes (session starts) run, all released at once; 33 results."""
    with httpx.Client(timeout=30) as client:
        jobs = [(f"device {serial}", lambda serial=serial, token=token: client.post(
                    f"{live.web}/api/ingest/devices/{serial}/status", content=status_body(seq),
                    headers={"Authorization": f"Bearer {token}"}))
                for serial, token in live.tokens.items()]
        jobs += [("health", lambda: client.get(f"{live.web}/health")) for _ in range(3)]
        jobs += [("customer read", lambda cid=cid: client.get(f"{live.web}/api/customers/{cid}", headers=live.staff))
                 for cid in live.customer_ids[:6]]
        jobs += [("action write", lambda i=i: client.post(
                    f"{live.actions}/webhook", json=session_start_call(f"burst-{seq}-{i}", live.customer_ids[i]),
                    headers={"Authorization": f"Bearer {ACTIONS_TOKEN}"}))
                 for i in range(4)]
        return _all_at_once(jobs)


def static_burst(live: Live, count: int) -> list[Result]:
    """``count`` simultaneous GETs of the chat page (no database, no broker): what this host and client take
    to answer that many requests at once, the same-run floor for a burst's latencies."""
    with httpx.Client(timeout=30) as client:
        return _all_at_once([("chat page", lambda: client.get(f"{live.web}/chat")) for _ in range(count)])
