"""Retention: personal and bulky data deleted when older than its kind's period.

``python -m crm_store.retention [--force]`` runs it once (``make retention``); the web service runs it every
``RETENTION_INTERVAL_MINUTES`` (default 60) in each replica, and a lease row in ``job_leases`` (taken by a
conditional UPDATE) lets only one replica run it per interval, on SQLite and PostgreSQL alike. The same
pass also finishes erasure requests that are due or whose runner died.

Periods (days; 0 keeps that kind forever), environment ``RETENTION_<KIND>_DAYS``:

=========================  =======  ==============================================================
raw telemetry               90      ``device_messages`` by ``received_at`` (tickets and rule states stay)
dead letters                30      ``dead_letters`` by ``received_at``
chat trackers               180     Rasa tracker-store conversations whose last event is older
handoff transcripts         365     packet and messages of handoffs closed before (the handoff row stays)
photos                      365     ``attachments`` (photos sent in the chat) by ``created_at``, as transcripts;
                                    the ticket events that announced them become "[expired]"
auth failures               30      ``auth_failures`` (sign-in and chat verification failures) by
                                    ``last_failure_at``, only once their lock has ended
audit records               730     ``access_audit`` rows and finished ``erasure_requests``
=========================  =======  ==============================================================
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_store.db import DEFAULT_DATABASE_URL, session_scope
from crm_store.models import (
    AccessAudit, Attachment, AuthFailure, DeadLetter, DeadLetterTally, DeviceMessage, ErasureRequest, Handoff,
    HandoffMessage, JobLease, utcnow,
)
from crm_store.repositories.console import delete_attachments
from crm_store.tracker_store import TrackerStore, tracker_store_url

logger = logging.getLogger(__name__)
JOB = "retention"
BATCH = 5000  # rows per DELETE: short write transactions, so the device worker is never held up for long
PHOTO_BATCH = 100  # photos per DELETE: up to 5 MB each


class RetentionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RETENTION_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore")

    raw_telemetry_days: int = 90
    dead_letters_days: int = 30
    chat_trackers_days: int = 180
    handoff_transcripts_days: int = 365
    photos_days: int = 365
    # A key's count is what makes a returning guesser's locks grow (they double per attempt after a lock): kept
    # 30 days after the last failure, a guesser who pauses for less resumes where they stopped. Older rows hold
    # a hashed e-mail address or user name for no purpose.
    auth_failures_days: int = 30
    audit_days: int = 730
    interval_minutes: float = 60.0


def take_lease(url: str, *, holder: str, period: dt.timedelta, now: dt.datetime | None = None) -> bool:
    """True for exactly one caller per ``period`` across processes and replicas (conditional UPDATE on the
    job's lease row, row count checked; the first call inserts the row, a concurrent insert loses on the
    primary key). PostgreSQL and SQLite alike."""
    now = now or utcnow()
    with session_scope(url) as session:
        result = session.execute(update(JobLease).where(JobLease.name == JOB, JobLease.expires_at <= now)
                                 .values(holder=holder[:128], expires_at=now + period, last_run_at=now))
        if result.rowcount == 1:
            return True
        if session.get(JobLease, JOB) is not None:
            return False
        try:
            with session.begin_nested():
                session.add(JobLease(name=JOB, holder=holder[:128], expires_at=now + period, last_run_at=now))
                session.flush()
            return True
        except IntegrityError:
            return False


def _in_batches(url: str, batch: Callable[[Session], tuple[int, int]]) -> int:
    """Runs ``batch`` in a transaction of its own until it finds nothing; returns the rows it removed in all.
    ``batch`` returns (rows it found, rows it removed)."""
    total = 0
    while True:
        with session_scope(url) as session:
            found, removed = batch(session)
        total += removed
        if not found:
            return total


def _batched_delete(url: str, model: Any, *where: Any, batch: int = BATCH) -> int:
    def one(session: Session) -> tuple[int, int]:
        ids = list(session.scalars(select(model.id).where(*where).limit(batch)))
        if not ids:
            return 0, 0
        # The condition again on the DELETE: a row changed since it was read (a lock set on an auth
        # failure meanwhile) is re-checked under its row lock and kept.
        return len(ids), session.execute(delete(model).where(model.id.in_(ids), *where)).rowcount

    return _in_batches(url, one)


def run_retention(url: str, *, settings: RetentionSettings | None = None, tracker: TrackerStore | None = None,
                  now: dt.datetime | None = None) -> dict[str, int]:
    """One retention pass; returns rows deleted (or anonymised) per kind. Idempotent."""
    s = settings or RetentionSettings()
    now = now or utcnow()
    days = dt.timedelta(days=1)
    out: dict[str, int] = {}
    if s.raw_telemetry_days > 0:
        out["raw_telemetry"] = _batched_delete(url, DeviceMessage, DeviceMessage.received_at < now - s.raw_telemetry_days * days)
    if s.dead_letters_days > 0:
        out["dead_letters"] = _batched_delete(url, DeadLetter, DeadLetter.received_at < now - s.dead_letters_days * days)
        # Their per-device quota tallies go with them (the table has no id column to delete in batches by).
        with session_scope(url) as session:
            out["dead_letter_tallies"] = session.execute(
                delete(DeadLetterTally).where(DeadLetterTally.window_start < now - s.dead_letters_days * days)).rowcount
    if s.chat_trackers_days > 0 and tracker is not None:
        conversations, rows = tracker.delete_inactive(before_unix=(now - s.chat_trackers_days * days).timestamp())
        out["chat_trackers"], out["chat_tracker_events"] = conversations, rows
    if s.handoff_transcripts_days > 0:
        cutoff = now - s.handoff_transcripts_days * days
        with session_scope(url) as session:
            ids = list(session.scalars(select(Handoff.id).where(Handoff.closed_at < cutoff, Handoff.summary != "[expired]")))
            if ids:
                session.execute(delete(HandoffMessage).where(HandoffMessage.handoff_id.in_(ids)))
                changed = session.execute(update(Handoff).where(Handoff.id.in_(ids))
                                          .values(packet={"expired": True}, summary="[expired]")).rowcount
            else:
                changed = 0
        out["handoff_transcripts"] = changed
    if s.photos_days > 0:
        def photos(session: Session) -> tuple[int, int]:  # the photos and the ticket events that announced them
            n = delete_attachments(session, Attachment.created_at < now - s.photos_days * days,
                                   marker="[expired]", limit=PHOTO_BATCH)
            return n, n

        out["photos"] = _in_batches(url, photos)
    if s.auth_failures_days > 0:
        # Never an active lock: ageing it out would lift a lock-out that only a success or staff may lift.
        out["auth_failures"] = _batched_delete(
            url, AuthFailure, AuthFailure.last_failure_at < now - s.auth_failures_days * days,
            or_(AuthFailure.locked_until.is_(None), AuthFailure.locked_until <= now))
    if s.audit_days > 0:
        cutoff = now - s.audit_days * days
        out["audit_records"] = _batched_delete(url, AccessAudit, AccessAudit.created_at < cutoff)
        out["erasure_records"] = _batched_delete(url, ErasureRequest, ErasureRequest.status == "done",
                                                 ErasureRequest.completed_at < cutoff)
    logger.info("retention: %s", json.dumps(out, sort_keys=True))
    return out


def run_due(url: str, *, settings: RetentionSettings | None = None, tracker: TrackerStore | None = None,
            force: bool = False, broker_revoke: Any = None) -> dict[str, Any] | None:
    """The periodic pass: finishes due erasures, then retention if this replica holds the lease
    (``force``: regardless of the lease). Returns what was done, or None when another replica has the lease."""
    from crm_store.repositories.erasure import run_erasure, runnable_erasures

    s = settings or RetentionSettings()
    with session_scope(url, write=False) as session:
        erasures = runnable_erasures(session)
        lease = session.get(JobLease, JOB)
        # Read first: most polls find the lease held and then take no write lock at all.
        held = lease is not None and lease.expires_at > utcnow()
    done = [rid for rid in erasures
            if run_erasure(url, rid, tracker=tracker, broker_revoke=broker_revoke) is not None]
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    if not force and (held or not take_lease(url, holder=holder, period=dt.timedelta(minutes=s.interval_minutes) * 0.9)):
        return {"erasures": done, "retention": None} if done else None
    return {"erasures": done, "retention": run_retention(url, settings=s, tracker=tracker)}


def default_tracker() -> TrackerStore | None:
    url = tracker_store_url()
    return TrackerStore(url) if url else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--force", action="store_true", help="run even if another replica ran it this interval")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from crm_store.logscrub import install

    install()
    from device_hooks.revocation import broker_revoker  # the command finishes erasures too, broker included

    port = int(os.environ.get("MQTT_PORT", "1883"))
    result = run_due(args.url, tracker=default_tracker(), force=args.force, broker_revoke=broker_revoker(port))
    print(json.dumps(result, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
