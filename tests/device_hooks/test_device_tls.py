"""Devices over TLS against the real Mosquitto 2.0 with the project's generated config and the CA of
device_hooks.pki: a device that trusts the CA signs in with its token and its message is stored by the real
worker; plain MQTT on the TLS port, a client that trusts another CA, a wrong host name and a wrong token are
refused; the production config has no plain device listener at all."""

from __future__ import annotations

import pathlib
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator

import pytest

from crm_store.db import session_scope
from crm_store.enums import ApplianceCategory
from crm_store.models import utcnow
from device_hooks.broker import BRIDGE_USER, WORKER_USER, TlsListener, write_config
from device_hooks.pki import PkiFiles, ensure_pki
from device_hooks.settings import MqttTls
from device_hooks.simulator import Connection, SimDevice, payload
from tests.device_hooks.conftest import Broker, Fleet, free_port
from tests.device_hooks.test_broker import ROOT, paho_client, start_worker, stored
from tests.device_hooks.test_worker_faults import wait_until


def start_broker(db_url: str, directory: pathlib.Path, pki: PkiFiles, *, plain: bool) -> Broker:
    """The project's Mosquitto with a TLS device listener (and a plain one when ``plain``), on free ports."""
    port, service_port, tls_port = (free_port() if plain else None), free_port(), free_port()
    passwords = {WORKER_USER: f"worker-{tls_port}", BRIDGE_USER: f"bridge-{tls_port}"}
    with session_scope(db_url) as session:
        conf = write_config(session, directory, port=port, service_passwords=passwords, service_port=service_port,
                            tls=TlsListener(tls_port, pki))
    broker = Broker(port, passwords[WORKER_USER], passwords[BRIDGE_USER], service_port, conf, tls_port=tls_port)
    broker.start()
    return broker


@pytest.fixture
def pki(tmp_path: pathlib.Path) -> PkiFiles:
    return ensure_pki(tmp_path / "pki").files


@pytest.fixture
def tls_broker(db_url: str, fleet: Fleet, pki: PkiFiles, tmp_path: pathlib.Path) -> Iterator[Broker]:
    """Embedded topology: plain and TLS device listeners (fleet first: the broker reads the password file at start)."""
    broker = start_broker(db_url, tmp_path / "mosquitto", pki, plain=True)
    yield broker
    broker.stop()


def device(fleet: Fleet) -> tuple[int, SimDevice]:
    device_id, serial, token = fleet.device("FR50")
    return device_id, SimDevice(serial, token, ApplianceCategory.FRIDGE)


def test_a_device_trusting_the_ca_publishes_over_tls_and_the_worker_stores_it(db_url: str, fleet: Fleet, pki: PkiFiles,
                                                                                request: pytest.FixtureRequest,
                                                                                tmp_path: pathlib.Path):
    device_id, sim = device(fleet)
    broker: Broker = request.getfixturevalue("tls_broker")
    worker = start_worker(db_url, broker, tmp_path / "worker.log")
    conn = Connection(sim, tls=MqttTls(str(pki.ca_cert)))
    try:
        conn.open("127.0.0.1", broker.tls_port)  # type: ignore[arg-type]
        conn.publish("telemetry", payload(sim, utcnow(), readings={"compartment_temp_c": 4.0}))
        conn.settle()
        assert conn.acked == 1
        cipher = conn.client.socket().version()  # type: ignore[union-attr]
        assert cipher in ("TLSv1.2", "TLSv1.3")
        wait_until(lambda: stored(db_url, [device_id]) == 1, 15, "the message stored")
    finally:
        conn.close()
        worker.terminate()
        worker.wait(20)


def test_plain_mqtt_to_the_tls_port_another_ca_and_a_wrong_token_are_refused(
        fleet: Fleet, pki: PkiFiles, request: pytest.FixtureRequest, tmp_path: pathlib.Path):
    _, sim = device(fleet)
    broker: Broker = request.getfixturevalue("tls_broker")
    plain = Connection(sim)
    with pytest.raises(ConnectionError, match="closed the connection"):
        plain.open("127.0.0.1", broker.tls_port, timeout=10)  # type: ignore[arg-type]
    assert plain.refused is None and not plain.up  # no CONNACK at all: the broker saw no MQTT, only a bad handshake
    other = ensure_pki(tmp_path / "other-ca").files
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        Connection(sim, tls=MqttTls(str(other.ca_cert))).open("127.0.0.1", broker.tls_port)  # type: ignore[arg-type]
    # No CA file: the system's CAs do not know the project's CA either.
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        Connection(sim, tls=MqttTls("")).open("127.0.0.1", broker.tls_port)  # type: ignore[arg-type]
    # Over TLS a device still signs in with its token: a wrong one gets a refusing CONNACK.
    wrong = Connection(SimDevice(sim.serial, sim.token + "x", sim.category), tls=MqttTls(str(pki.ca_cert)))
    with pytest.raises(ConnectionError):
        wrong.open("127.0.0.1", broker.tls_port)  # type: ignore[arg-type]
    assert wrong.refused in ("Not authorized", "Bad user name or password") and not wrong.up
    # The right token and the CA, for the same broker: accepted (so the refusals above are the broker's).
    conn = Connection(sim, tls=MqttTls(str(pki.ca_cert)))
    conn.open("localhost", broker.tls_port)  # type: ignore[arg-type]
    conn.close()


def test_a_certificate_for_another_host_name_is_refused(db_url: str, fleet: Fleet, tmp_path: pathlib.Path):
    _, sim = device(fleet)
    pki = ensure_pki(tmp_path / "pki-localhost", ["localhost"]).files  # names localhost, not 127.0.0.1
    broker = start_broker(db_url, tmp_path / "mosquitto", pki, plain=False)
    try:
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
            Connection(sim, tls=MqttTls(str(pki.ca_cert))).open("127.0.0.1", broker.tls_port)  # type: ignore[arg-type]
        conn = Connection(sim, tls=MqttTls(str(pki.ca_cert)))
        conn.open("localhost", broker.tls_port)  # type: ignore[arg-type]
        conn.close()
    finally:
        broker.stop()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_the_tls_listener_speaks_tls_1_2_and_1_3(version: ssl.TLSVersion, fleet: Fleet, pki: PkiFiles,
                                                   request: pytest.FixtureRequest):
    broker: Broker = request.getfixturevalue("tls_broker")
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw:  # type: ignore[arg-type]
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == version.name.replace("v1_", "v1.")


def test_the_production_config_has_no_plain_device_listener(db_url: str, fleet: Fleet, pki: PkiFiles,
                                                             tmp_path: pathlib.Path):
    _, sim = device(fleet)
    broker = start_broker(db_url, tmp_path / "mosquitto", pki, plain=False)
    try:
        text = broker.conf.read_text()
        blocks = re.split(r"\n(?=listener )", text)[1:]
        listeners = {b.split("\n", 1)[0]: b for b in blocks}
        assert set(listeners) == {f"listener {broker.tls_port} 127.0.0.1", f"listener {broker.service_port} 127.0.0.1"}
        device_block = listeners[f"listener {broker.tls_port} 127.0.0.1"]
        assert "certfile" in device_block and "tls_version tlsv1.2" in device_block
        assert f"password_file {broker.conf.parent}/passwd\n" in device_block
        # The only plain listener is the services' on loopback: a device cannot sign in there ...
        service_block = listeners[f"listener {broker.service_port} 127.0.0.1"]
        assert "certfile" not in service_block and "passwd-services" in service_block
        assert paho_client(broker.service_port, sim.serial, sim.token)[1] != 0
        # ... plain MQTT to the device port fails, TLS with the CA works.
        with pytest.raises(ConnectionError):
            Connection(sim).open("127.0.0.1", broker.tls_port, timeout=10)  # type: ignore[arg-type]
        conn = Connection(sim, tls=MqttTls(str(pki.ca_cert)))
        conn.open("127.0.0.1", broker.tls_port)  # type: ignore[arg-type]
        conn.close()
    finally:
        broker.stop()


def test_the_simulator_command_publishes_over_tls(db_url: str, fleet: Fleet, pki: PkiFiles, request: pytest.FixtureRequest,
                                                  tmp_path: pathlib.Path):
    """``python -m device_hooks.simulator --tls`` takes the CA and the TLS port from the stack's environment
    (MQTT_CA_FILE, MQTT_DEVICE_TLS_PORT), as ``make run`` sets them."""
    import json
    import os

    device_id, sim = device(fleet)
    broker: Broker = request.getfixturevalue("tls_broker")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({sim.serial: sim.token}))
    worker = start_worker(db_url, broker, tmp_path / "worker.log")
    env = dict(os.environ, PYTHONPATH=str(ROOT), DATABASE_URL=db_url, MQTT_HOST="127.0.0.1", MQTT_PORT=str(broker.port),
               MQTT_DEVICE_TLS_PORT=str(broker.tls_port), MQTT_CA_FILE=str(pki.ca_cert))
    try:
        cmd = [sys.executable, "-m", "device_hooks.simulator", "--tokens-file", str(tokens), "--tls", "run", "--serial",
               sim.serial, "--interval", "0.2", "--duration", "0.5"]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
        wait_until(lambda: stored(db_url, [device_id]) >= 2, 15, "the status and readings stored")
        # With a CA that did not sign the broker's certificate the simulator fails rather than falling back.
        other = ensure_pki(tmp_path / "other-ca").files
        failed = subprocess.run([*cmd[:5], "--ca-file", str(other.ca_cert), *cmd[5:]], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert failed.returncode != 0 and "certificate verify failed" in failed.stderr
    finally:
        worker.terminate()
        worker.wait(20)
