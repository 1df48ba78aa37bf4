"""The devices' CA and server certificate (device_hooks.pki): made once, reused while valid, renewed when due,
keys readable by their owner only; checked with OpenSSL's own verifier as a device's TLS stack would."""

from __future__ import annotations

import datetime as dt
import pathlib
import stat
import subprocess
import sys

from cryptography import x509

from device_hooks.pki import CA_DAYS, SERVER_DAYS, ensure_pki
from tests.device_hooks.test_broker import ROOT

NOW = dt.datetime.now(dt.timezone.utc)


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: pathlib.Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_setup_makes_a_ca_and_a_server_certificate_for_loopback_with_private_keys(tmp_path: pathlib.Path):
    pki = tmp_path / "pki"
    out = subprocess.run([sys.executable, "-m", "device_hooks.pki", "--dir", str(pki)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == str(pki / "ca.crt")
    assert mode(pki) == 0o700
    assert {p.name: mode(p) for p in pki.iterdir() if p.name != ".lock"} == {
        "ca.crt": 0o644, "ca.key": 0o600, "server.crt": 0o644, "server.key": 0o600, "server.pem": 0o600}
    # OpenSSL accepts the chain for a TLS server at both names; the PEM is the certificate then its key.
    for host in ("-verify_ip", "127.0.0.1"), ("-verify_hostname", "localhost"):
        result = subprocess.run(["openssl", "verify", "-purpose", "sslserver", *host, "-CAfile", str(pki / "ca.crt"),
                                 str(pki / "server.crt")], capture_output=True, text=True)
        assert result.returncode == 0 and ": OK" in result.stdout, result.stdout + result.stderr
    wrong = subprocess.run(["openssl", "verify", "-verify_hostname", "broker.example", "-CAfile", str(pki / "ca.crt"),
                            str(pki / "server.crt")], capture_output=True, text=True)
    assert wrong.returncode != 0
    pem = (pki / "server.pem").read_bytes()
    assert pem.startswith((pki / "server.crt").read_bytes()) and pem.endswith((pki / "server.key").read_bytes())
    ca = cert(pki / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


def test_a_second_run_reuses_everything(tmp_path: pathlib.Path):
    first = ensure_pki(tmp_path / "pki")
    before = {p.name: p.read_bytes() for p in (tmp_path / "pki").iterdir()}
    second = ensure_pki(tmp_path / "pki")
    assert (first.new_ca, first.new_server_cert) == (True, True)
    assert (second.new_ca, second.new_server_cert) == (False, False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "pki").iterdir()} == before


def test_an_expiring_server_certificate_is_renewed_under_the_same_ca(tmp_path: pathlib.Path):
    pki = tmp_path / "pki"
    ensure_pki(pki, now=NOW)
    ca_before, server_before = (pki / "ca.crt").read_bytes(), cert(pki / "server.crt")
    assert not ensure_pki(pki, now=NOW + dt.timedelta(days=SERVER_DAYS - 31)).new_server_cert
    later = ensure_pki(pki, now=NOW + dt.timedelta(days=SERVER_DAYS - 29))
    assert (later.new_ca, later.new_server_cert) == (False, True)
    assert (pki / "ca.crt").read_bytes() == ca_before
    renewed = cert(pki / "server.crt")
    assert renewed.serial_number != server_before.serial_number
    assert renewed.not_valid_after_utc > server_before.not_valid_after_utc
    renewed.verify_directly_issued_by(cert(pki / "ca.crt"))


def test_an_expiring_ca_is_replaced_and_the_server_certificate_with_it(tmp_path: pathlib.Path):
    pki = tmp_path / "pki"
    ensure_pki(pki, now=NOW)
    old_ca = cert(pki / "ca.crt")
    result = ensure_pki(pki, now=NOW + dt.timedelta(days=CA_DAYS - 10))
    assert (result.new_ca, result.new_server_cert) == (True, True)
    new_ca = cert(pki / "ca.crt")
    assert new_ca.public_key() != old_ca.public_key()
    cert(pki / "server.crt").verify_directly_issued_by(new_ca)


def test_a_damaged_key_a_foreign_certificate_or_a_new_host_renews_the_server_certificate(tmp_path: pathlib.Path):
    pki = tmp_path / "pki"
    ensure_pki(pki)
    (pki / "server.key").write_text("not a key")
    assert ensure_pki(pki).new_server_cert
    # A server certificate of another CA (someone copied in the wrong file) is not served.
    other = ensure_pki(tmp_path / "other").files
    (pki / "server.crt").write_bytes(other.server_cert.read_bytes())
    (pki / "server.key").write_bytes(other.server_key.read_bytes())
    (pki / "server.pem").write_bytes(other.server_pem.read_bytes())
    assert ensure_pki(pki).new_server_cert
    cert(pki / "server.crt").verify_directly_issued_by(cert(pki / "ca.crt"))
    result = ensure_pki(pki, ["127.0.0.1", "localhost", "broker.internal"])
    assert (result.new_ca, result.new_server_cert) == (False, True)
    names = cert(pki / "server.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.internal" in names.get_values_for_type(x509.DNSName)
