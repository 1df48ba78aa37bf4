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
from scripts.topology import free_port

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



@dataclass
class Broker:
    """The project's Mosquitto: devices on ``port`` (plain; None: none) and ``tls_port`` (TLS, when given), the
    worker and the bridge on ``service_port``."""

    port: int | None
    worker_password: str
    bridge_password: str
    service_port: int
    conf: pathlib.Path
    proc: subprocess.Popen[bytes] | None = None
    tls_port: int | None = None

    def start(self) -> None:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(mosquitto):
            pytest.fail("mosquitto is not installed (scripts/setup.sh installs it)")
        self.proc = subprocess.Popen([mosquitto, "-c", str(self.conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                for port in (self.port, self.service_port, self.tls_port):
                    if port is not None:
                        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.proc.kill()
        pytest.fail("mosquitto did not start: " + (self.proc.stdout.read().decode() if self.proc.stdout else ""))

    def kill(self) -> None:
        """kill -9: no chance to save anything beyond what persistence already wrote."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def broker(db_url: str, tmp_path: pathlib.Path) -> Iterator[Broker]:
    """Mosquitto with the project's generated config (password files + ACL from the CRM) on free ports."""
    port, service_port = free_port(), free_port()
    passwords = {WORKER_USER: "worker-secret-" + str(port), BRIDGE_USER: "bridge-secret-" + str(port)}
    with session_scope(db_url) as session:
        conf = write_config(session, tmp_path / "mosquitto", port=port, service_passwords=passwords,
                            service_port=service_port)
    broker = Broker(port, passwords[WORKER_USER], passwords[BRIDGE_USER], service_port, conf)
    broker.start()
    yield broker
    broker.stop()
