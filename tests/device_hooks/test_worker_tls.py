"""The worker over TLS with paho's own ``tls_set``: MQTT_TLS with a CA file verifies the broker, and a
broker that wants client certificates gets the worker's from MQTT_CERT_FILE / MQTT_KEY_FILE."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest

from crm_store.enums import ApplianceCategory
from crm_store.models import utcnow
from device_hooks.broker import usable_directory
from device_hooks.simulator import Connection, SimDevice, payload
from tests.device_hooks.conftest import Broker, Fleet, free_port
from tests.device_hooks.test_broker import ROOT, stored
from tests.device_hooks.test_worker_faults import wait_until


def openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: pathlib.Path) -> None:
    """A CA, a broker certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca", "-keyout", "ca.key",
            "-out", "ca.crt", cwd=directory)
    for name, extra in (("server", ["-addext", "subjectAltName=IP:127.0.0.1"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", *extra, cwd=directory)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
                "-copy_extensions", "copy", "-out", f"{name}.crt", cwd=directory)
    for path in directory.iterdir():
        path.chmod(0o644)


@pytest.fixture
def tls_broker(broker: Broker) -> Broker:
    """The project's broker config plus a TLS service listener that requires a client certificate."""
    pki = usable_directory(broker.conf.parent / "pki")
    pki.mkdir(exist_ok=True)
    make_pki(pki)
    if os.geteuid() == 0:  # Mosquitto, started as root, reads its key as its own user
        for path in [pki, *pki.iterdir()]:
            shutil.chown(path, "mosquitto", "mosquitto")
    tls_port = free_port()
    with open(broker.conf, "a") as conf:
        conf.write(f"\nlistener {tls_port} 127.0.0.1\nallow_anonymous false\npassword_file {broker.conf.parent}/passwd-services\n"
                   f"acl_file {broker.conf.parent}/acl\ncafile {pki}/ca.crt\ncertfile {pki}/server.crt\n"
                   f"keyfile {pki}/server.key\nrequire_certificate true\n")
    broker.stop()
    broker.start()
    broker.tls_port, broker.pki = tls_port, pki  # type: ignore[attr-defined]
    return broker


def test_the_worker_connects_over_tls_with_a_client_certificate(db_url: str, fleet: Fleet, request: pytest.FixtureRequest,
                                                                  tmp_path: pathlib.Path):
    device_id, serial, token = fleet.device("FR50")
    broker: Broker = request.getfixturevalue("tls_broker")
    pki = broker.pki  # type: ignore[attr-defined]
    log = tmp_path / "worker.log"
    base = dict(os.environ, PYTHONPATH=str(ROOT), DATABASE_URL=db_url, MQTT_HOST="127.0.0.1",
                MQTT_PORT=str(broker.tls_port), MQTT_WORKER_PASSWORD=broker.worker_password,  # type: ignore[attr-defined]
                MQTT_CLIENT_ID=f"tls-{broker.port}", RASA_URL="http://127.0.0.1:9", MQTT_TLS="true",
                MQTT_CA_FILE=str(pki / "ca.crt"))
    # Without its certificate the broker refuses the worker (the TLS handshake fails): it keeps retrying.
    refused = subprocess.Popen([sys.executable, "-m", "device_hooks.worker"], cwd=ROOT, env=base,
                               stdout=open(tmp_path / "refused.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "connection lost" in (tmp_path / "refused.log").read_text(), 20, "the refused handshake logged")
        assert "connected to mqtt" not in (tmp_path / "refused.log").read_text() and refused.poll() is None
    finally:
        refused.send_signal(signal.SIGTERM)
        refused.wait(20)
    worker = subprocess.Popen([sys.executable, "-m", "device_hooks.worker"], cwd=ROOT,
                              env=dict(base, MQTT_CERT_FILE=str(pki / "client.crt"), MQTT_KEY_FILE=str(pki / "client.key")),
                              stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    conn = Connection(SimDevice(serial, token, ApplianceCategory.FRIDGE))
    try:
        wait_until(lambda: "connected to mqtt" in log.read_text(), 20, "the TLS connection")
        conn.open("127.0.0.1", broker.port)
        conn.publish("telemetry", payload(conn.device, utcnow(), readings={"compartment_temp_c": 4.0}))
        conn.settle()
        wait_until(lambda: stored(db_url, [device_id]) == 1, 10, "the message stored")
    finally:
        conn.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
