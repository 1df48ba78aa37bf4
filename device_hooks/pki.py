"""The private certificate authority of the devices' TLS endpoints, and the server certificate they verify.

``python -m device_hooks.pki [--dir var/pki] [--host 127.0.0.1 --host localhost]`` (``make setup`` and
``scripts/run_stack.py`` run it) makes or refreshes, in D:

    ca.crt       the CA certificate: what devices (and the simulator: ``--ca-file``) trust; 0644
    ca.key       the CA's private key; 0600
    server.crt   the broker's and HAProxy's certificate, signed by the CA, for every ``--host``; 0644
    server.key   its private key; 0600
    server.pem   server.crt followed by server.key, the one file HAProxy's ``crt`` wants; 0600

Idempotent: a CA that is still valid for longer than ``RENEW_BEFORE`` and matches its key is reused (so the
devices keep trusting it); the server certificate is renewed when it is missing, no longer matches its key or
the CA, expires within ``RENEW_BEFORE`` or does not name every host. Keys are ECDSA P-256 (the cryptography
library). A new CA is logged as a warning: devices must be given the new ca.crt. Files are replaced
atomically, so a broker reading them meanwhile sees the old or the new one, never half of one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import ipaddress
import logging
import os
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger(__name__)

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
CA_DAYS = 3650
SERVER_DAYS = 397  # what public CAs may issue at most; renewed automatically anyway
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class PkiFiles:
    """Paths of one PKI folder (see the module docstring for each file's content and mode)."""

    directory: pathlib.Path

    @property
    def ca_cert(self) -> pathlib.Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> pathlib.Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> pathlib.Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> pathlib.Path:
        return self.directory / "server.key"

    @property
    def server_pem(self) -> pathlib.Path:
        return self.directory / "server.pem"


@dataclass(frozen=True)
class PkiResult:
    files: PkiFiles
    new_ca: bool  # a CA was made (devices must get the new ca.crt)
    new_server_cert: bool


def ensure_pki(directory: pathlib.Path, hosts: Sequence[str] = DEFAULT_HOSTS, *,
               now: dt.datetime | None = None) -> PkiResult:
    """Makes or refreshes the CA and the server certificate in ``directory`` (created 0700 if missing).

    ``hosts``: IP addresses and DNS names the server certificate names (subjectAltName); at least one.
    ``now``: the time to judge validity against (UTC; tests move it forward). Raises ValueError for no hosts.
    """
    if not hosts:
        raise ValueError("the server certificate needs at least one host name or address")
    now = now or dt.datetime.now(dt.timezone.utc)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Two launchers starting at once (make run beside a benchmark) must not each write half a CA.
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure(PkiFiles(directory), hosts, now)


def _ensure(files: PkiFiles, hosts: Sequence[str], now: dt.datetime) -> PkiResult:
    directory = files.directory
    ca = _load_valid_ca(files, now)
    new_ca = ca is None
    if ca is None:
        ca = _make_ca(now)
        _write_key(files.ca_key, ca[1])
        _write(files.ca_cert, ca[0].public_bytes(serialization.Encoding.PEM), 0o644)
        logger.warning("made a new device CA in %s: devices must be given its ca.crt", directory)
    renew = new_ca or not _server_cert_ok(files, ca[0], hosts, now)
    if renew:
        cert, key = _make_server_cert(ca, hosts, now)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        _write_key(files.server_key, key)
        _write(files.server_cert, cert_pem, 0o644)
        _write(files.server_pem, cert_pem + _key_pem(key), 0o600)
        logger.info("issued the server certificate for %s, valid until %s", ", ".join(hosts),
                    cert.not_valid_after_utc.date())
    return PkiResult(files, new_ca, renew)


def _load_valid_ca(files: PkiFiles, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The existing CA, if its files parse, match, say CA and stay valid beyond RENEW_BEFORE; else None."""
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return None
    if not is_ca or cert.not_valid_before_utc > now or cert.not_valid_after_utc - RENEW_BEFORE <= now:
        return None
    return cert, key


def _server_cert_ok(files: PkiFiles, ca: x509.Certificate, hosts: Sequence[str], now: dt.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
        pem = files.server_pem.read_bytes()
    except (OSError, ValueError):
        return False
    if key.public_key() != cert.public_key() or _key_pem(key) not in pem:  # type: ignore[arg-type]
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_before_utc > now or cert.not_valid_after_utc - RENEW_BEFORE <= now:
        return False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(_general_names(hosts)) <= set(names)


def _make_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Appliance care"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"Appliance care device CA {now:%Y-%m-%d}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            # path_length 0: this CA signs server certificates only, never another CA.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _make_server_cert(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], hosts: Sequence[str],
                      now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + dt.timedelta(days=SERVER_DAYS), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(_general_names(hosts)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _general_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_key(path: pathlib.Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write(path, _key_pem(key), 0o600)


def _write(path: pathlib.Path, data: bytes, mode: int) -> None:
    # Created with its final mode (a key is never readable by others, not even for an instant), then renamed
    # over the old file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)  # the umask may have narrowed a certificate's 0644
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default="var/pki", help="the PKI folder (default var/pki)")
    parser.add_argument("--host", action="append", help="a name or address of the server (repeatable; "
                                                        f"default {' '.join(DEFAULT_HOSTS)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = ensure_pki(pathlib.Path(args.dir), args.host or DEFAULT_HOSTS)
    print(result.files.ca_cert)


if __name__ == "__main__":
    main()
