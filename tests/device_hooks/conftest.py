"""Device-side fixtures: a migrated database (SQLite and PostgreSQL) with the catalogue and rules, a fleet
builder, message builders, and the project's own Mosquitto on a free port."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from crm_store.db import session_scope
from crm_store.demo_data import seed_catalogue
from crm_store.models import Customer, Device, ProductModel, utcnow
from device_hooks.broker import BRIDGE_USER, WORKER_USER, issue_credential, write_config
from device_hooks.pipeline import RawMessage
from tests.conftest import migrated_database

_n = itertools.count(1)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database per module and backend, with product models, fault catalogues and rules."""
    with migrated_database(request.param, tmp_path_factory) as url:
        with session_scope(url) as session:
            seed_catalogue(session)
        yield url


@dataclass
class Fleet:
    url: str

    def device(self, model_code: str = "FR50", *, owner: bool = True, **customer: object) -> tuple[int, str, str]:
        """A new device (with an owner unless told otherwise) and its credential: (id, serial, token)."""
        n = next(_n)
        with session_scope(self.url) as session:
            model = session.scalar(select(ProductModel).where(ProductModel.code == model_code))
            person = None
            if owner:
                values: dict[str, object] = {"full_name": f"Device Owner{n}", "email": f"owner{n}-{time.time_ns()}@example.com",
                                             "customer_since": dt.date(2023, 1, 1)}
                values.update(customer)
                person = Customer(**values)
                session.add(person)
            device = Device(serial=f"{model_code}-{time.time_ns() % 10**8:08d}{n}", model=model, owner=person)
            session.add(device)
            session.flush()
            token = issue_credential(session, device)
            return device.id, device.serial, token


@pytest.fixture
def fleet(db_url: str) -> Fleet:
    return Fleet(db_url)


_seq = itertools.count(1)


def message(serial: str, kind: str = "telemetry", *, ts: dt.datetime | None = None, seq: int | None = None,
            **body: object) -> RawMessage:
    ts = ts or utcnow()
    payload = {"ts": ts.isoformat(), "seq": next(_seq) if seq is None else seq, **body}
    return RawMessage(f"devices/{serial}/{kind}", json.dumps(payload).encode(), utcnow())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    port: int
    worker_password: str
    bridge_password: str


@pytest.fixture
def broker(db_url: str, tmp_path: pathlib.Path) -> Iterator[Broker]:
    """Mosquitto with the project's generated config (password file + ACL from the CRM) on a free port."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(mosquitto):
        pytest.fail("mosquitto is not installed (scripts/setup.sh installs it)")
    port = free_port()
    passwords = {WORKER_USER: "worker-secret-" + str(port), BRIDGE_USER: "bridge-secret-" + str(port)}
    with session_scope(db_url) as session:
        conf = write_config(session, tmp_path / "mosquitto", port=port, service_passwords=passwords)
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("mosquitto did not start: " + (proc.stdout.read().decode() if proc.stdout else ""))
    yield Broker(port, passwords[WORKER_USER], passwords[BRIDGE_USER])
    proc.terminate()
    proc.wait(timeout=10)
