"""Revoking device accounts at the running broker, at once.

The project's own Mosquitto (started by ``make run``) reads its password file at start and again on
SIGHUP. ``revoke_at_broker(serials)`` removes those devices' lines from the password file of the local
Mosquitto that listens on ``MQTT_PORT`` (found through its ``-c`` config file) and sends it SIGHUP, so a
revoked device's next connection is refused. The CRM marks the credentials revoked as well, so a broker
configuration written later (``device_hooks.broker config``) leaves them out too. A broker configured
elsewhere (``MQTT_HOST``) must be told by its operators; this reports ``"no local broker"``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pathlib
import re
import signal

logger = logging.getLogger(__name__)


def _local_brokers(port: int) -> list[tuple[int, pathlib.Path]]:
    """(pid, password file) of each local Mosquitto whose configuration listens on ``port``."""
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"mosquitto") or b"-c" not in argv:
            continue
        try:
            conf = pathlib.Path(argv[argv.index(b"-c") + 1].decode())
            text = conf.read_text()
        except (IndexError, OSError, UnicodeDecodeError):
            continue
        listens = re.search(rf"^listener\s+{port}\b", text, re.MULTILINE)
        passwd = re.search(r"^password_file\s+(\S+)", text, re.MULTILINE)
        if listens and passwd:
            found.append((int(proc.name), pathlib.Path(passwd.group(1))))
    return found


def remove_accounts(passwd: pathlib.Path, users: set[str]) -> int:
    """Removes ``users``' lines from a Mosquitto password file (owner and mode kept); returns lines removed."""
    with open(passwd.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two erasures at once must not lose each other's removals
        lines = passwd.read_text().splitlines()
        kept = [line for line in lines if line.split(":", 1)[0] not in users]
        if len(kept) == len(lines):
            return 0
        st = passwd.stat()
        tmp = passwd.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(kept) + "\n")
        if os.geteuid() == 0:
            os.chown(tmp, st.st_uid, st.st_gid)  # Mosquitto runs as its own user and must still read it
        os.replace(tmp, passwd)
        return len(lines) - len(kept)


def revoke_at_broker(serials: list[str], *, port: int) -> str:
    """Removes the devices' broker accounts and makes the local broker on ``port`` re-read them; says what it did."""
    brokers = _local_brokers(port)
    if not brokers:
        logger.warning("no local broker on port %d: revoke the %d device account(s) at the configured broker",
                       port, len(serials))
        return "no local broker"
    removed = 0
    for pid, passwd in brokers:
        removed += remove_accounts(passwd, set(serials))
        os.kill(pid, signal.SIGHUP)
    logger.info("revoked %d device account(s) at the broker (%d line(s) removed)", len(serials), removed)
    return "reloaded"


def broker_revoker(port: int):  # type: ignore[no-untyped-def]
    """``revoke_at_broker`` bound to a port: the ``broker_revoke`` hook of crm_store's erasure."""
    return lambda serials: revoke_at_broker(serials, port=port)
