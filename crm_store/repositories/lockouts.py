"""Attempt counting, back-off and lock-out for staff sign-in and chat verification.

Each attempt is reserved before its secret is checked (``reserve_attempt``): one atomic upsert on
``(scope, key_hash)`` (``INSERT … ON CONFLICT DO UPDATE … WHERE not locked … RETURNING`` on SQLite and
PostgreSQL) counts it and, at ``policy.max_failures``, sets the lock in the same transaction. Attempts racing
from many conversations, replicas or action servers are therefore checked at most ``max_failures`` times:
a check-then-count order let every racer through before the first failure was counted. The lock lasts
``policy.base_lock``, doubling with each further attempt after it ends (one attempt per lock), up to
``policy.max_lock``. Only a success for the same key (``clear_failures``) or staff (``lift_lockout``) resets it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from crm_store.models import AuthFailure, utcnow

SIGN_IN = "sign_in"  # key: the user name
SIGN_IN_CLIENT = "sign_in_client"  # key: the client address
VERIFY_IDENTITY = "verify_identity"  # key: the e-mail address a chat tried
VERIFY_CLIENT = "verify_client"  # key: the chat's client (address, or conversation when unknown)


@dataclass(frozen=True)
class LockoutPolicy:
    """``max_failures`` within ``window`` lock the key for ``base_lock``, doubling per further failure."""

    max_failures: int = 5
    window: dt.timedelta = dt.timedelta(minutes=15)
    base_lock: dt.timedelta = dt.timedelta(minutes=1)
    max_lock: dt.timedelta = dt.timedelta(hours=24)

    def lock_for(self, failures: int) -> dt.timedelta | None:
        if failures < self.max_failures:
            return None
        return min(self.base_lock * (2 ** min(failures - self.max_failures, 20)), self.max_lock)


def key_hash(scope: str, key: str) -> str:
    """SHA-256 of ``scope:key`` with the key trimmed and lower-cased (64 hex characters)."""
    return hashlib.sha256(f"{scope}:{key.strip().lower()}".encode()).hexdigest()


def locked_until(session: Session, *, scope: str, key: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """When the key's lock ends, or None when it is not locked now."""
    until = session.scalar(
        select(AuthFailure.locked_until).where(AuthFailure.scope == scope, AuthFailure.key_hash == key_hash(scope, key))
    )
    return until if until is not None and until > (now or utcnow()) else None


def reserve_attempt(
    session: Session, *, scope: str, key: str, policy: LockoutPolicy = LockoutPolicy(), now: dt.datetime | None = None
) -> dt.datetime | None:
    """Counts one attempt before it is checked; returns the end of the lock that refuses it (None: check it).

    The attempt that reaches ``policy.max_failures`` sets the lock and is still checked; a success then clears
    it (``clear_failures``). Commit before checking, so that racers wait on this row's lock only briefly.
    An attempt ``policy.window`` after the first one of an unlocked key starts the count again.
    """
    now = now or utcnow()
    values = {"scope": scope, "key_hash": key_hash(scope, key), "failures": 1, "first_failure_at": now,
              "last_failure_at": now, "locked_until": None}
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stale = (AuthFailure.first_failure_at < now - policy.window) & AuthFailure.locked_until.is_(None)
    stmt = insert(AuthFailure).values(**values).on_conflict_do_update(
        index_elements=["scope", "key_hash"],
        set_={
            "failures": case((stale, 1), else_=AuthFailure.failures + 1),
            "first_failure_at": case((stale, now), else_=AuthFailure.first_failure_at),
            "last_failure_at": now,
        },
        # A locked key is not counted further: a refused attempt neither checks nor lengthens the lock.
        where=AuthFailure.locked_until.is_(None) | (AuthFailure.locked_until <= now),
    ).returning(AuthFailure.id, AuthFailure.failures)
    row = session.execute(stmt).one_or_none()
    if row is None:
        return locked_until(session, scope=scope, key=key, now=now) or now
    row_id, attempts = row
    lock = policy.lock_for(attempts)
    if lock is not None:
        # Set in the same transaction (the row stays locked meanwhile): an expired lock gives way to the next
        # one, so one attempt per lock period gets through. Below the limit the key has no lock to clear.
        session.execute(update(AuthFailure).where(AuthFailure.id == row_id).values(locked_until=now + lock))
    return None


def reserve_attempts(session: Session, keys: list[tuple[str, str, LockoutPolicy]]) -> dt.datetime | None:
    """``reserve_attempt`` for each ``(scope, key, policy)`` in order (e.g. a user name, then the client
    address); at the first refusal the attempts already reserved are given back, as the attempt never happens.
    Returns the end of the refusing lock, or None: every key let the attempt through."""
    reserved: list[tuple[str, str, LockoutPolicy]] = []
    for scope, key, policy in keys:
        until = reserve_attempt(session, scope=scope, key=key, policy=policy)
        if until is not None:
            for done_scope, done_key, done_policy in reserved:
                release_attempt(session, scope=done_scope, key=done_key, policy=done_policy)
            return until
        reserved.append((scope, key, policy))
    return None


def release_attempt(session: Session, *, scope: str, key: str, policy: LockoutPolicy = LockoutPolicy()) -> None:
    """A reserved attempt succeeded on a key that a success does not clear (a shared client address): it is
    not counted, and a lock it alone caused is lifted."""
    session.execute(
        update(AuthFailure)
        .where(AuthFailure.scope == scope, AuthFailure.key_hash == key_hash(scope, key), AuthFailure.failures > 0)
        .values(failures=AuthFailure.failures - 1,
                locked_until=case((AuthFailure.failures - 1 < policy.max_failures, None), else_=AuthFailure.locked_until))
    )


def clear_failures(session: Session, *, scope: str, key: str) -> None:
    """A success: the key's failures and lock are forgotten."""
    session.execute(delete(AuthFailure).where(AuthFailure.scope == scope, AuthFailure.key_hash == key_hash(scope, key)))


def list_lockouts(session: Session, *, now: dt.datetime | None = None) -> list[AuthFailure]:
    """Keys locked now, longest lock first."""
    stmt = select(AuthFailure).where(AuthFailure.locked_until > (now or utcnow())).order_by(AuthFailure.locked_until.desc())
    return list(session.scalars(stmt))


def lift_lockout(session: Session, *, lockout_id: int | None = None, scope: str | None = None, key: str | None = None) -> int:
    """Staff lift a lock (by id, or by scope and key); returns how many were lifted (0 or 1)."""
    stmt = delete(AuthFailure)
    if lockout_id is not None:
        stmt = stmt.where(AuthFailure.id == lockout_id)
    elif scope is not None and key is not None:
        stmt = stmt.where(AuthFailure.scope == scope, AuthFailure.key_hash == key_hash(scope, key))
    else:
        raise ValueError("lift_lockout needs a lockout_id, or a scope and a key")
    return int(session.execute(stmt).rowcount or 0)
