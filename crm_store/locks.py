"""Singleton jobs across replicas: at most one process runs a named job at a time.

``try_singleton(session, name)`` takes a transaction-scoped lock named ``name`` without waiting and says
whether it got it. On PostgreSQL it is ``pg_try_advisory_xact_lock``: every replica on the same database
competes for it, and PostgreSQL itself releases it when the session's transaction ends (commit, rollback
or a dropped connection), so a crashed replica never keeps it. On SQLite (one host, and every write
transaction already serialised by ``BEGIN IMMEDIATE``) a process-local lock stands in, released by the
same transaction end.

Use it at the start of a job's unit of work::

    with session_scope(url) as session:
        if not try_singleton(session, "handoff-sweep"):
            return  # another replica is running this job right now
        ...  # the job's conditional updates; the lock goes with the commit
"""

from __future__ import annotations

import hashlib
import threading

from sqlalchemy import event, text
from sqlalchemy.orm import Session, SessionTransaction

_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (PostgreSQL advisory locks are keyed by bigint)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


def try_singleton(session: Session, name: str) -> bool:
    """True if this transaction now holds the job lock ``name`` (held until the transaction ends).

    Never waits: False means another transaction (in this or another process) holds it.
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": lock_key(name)}))
    with _local_guard:
        lock = _local_locks.setdefault(name, threading.Lock())
    if not lock.acquire(blocking=False):
        return False
    root = session.get_transaction() or session.begin()  # the root transaction, not a savepoint
    held = [True]

    def release(_session: Session, ended: SessionTransaction) -> None:
        # Listeners are not removed while they run; a spent one stays a no-op for the session's life.
        if held[0] and ended is root:
            held[0] = False
            lock.release()

    event.listen(session, "after_transaction_end", release)
    return True
