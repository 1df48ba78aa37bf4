"""Bookkeeping of device ingestion shared by the HTTP route and the MQTT pipeline: running counters and
dead letters (messages refused with a reason, kept as evidence) within a per-device quota."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from crm_store.models import DeadLetter, DeadLetterTally, IngestCounter

OVER_QUOTA = "dead_letters_over_quota"  # the running counter of refused messages counted but not kept


@dataclass(frozen=True)
class DeadLetterQuota:
    """At most ``per_device`` dead letters kept per device in each ``window`` (aligned to the epoch)."""

    per_device: int = 100
    window: dt.timedelta = dt.timedelta(hours=1)

    def window_start(self, at: dt.datetime) -> dt.datetime:
        seconds = int(self.window.total_seconds())
        epoch = int(at.timestamp())
        return dt.datetime.fromtimestamp(epoch - epoch % seconds, dt.timezone.utc)


def topic_device(topic: str) -> str:
    """The device a refused message is charged to: the serial its topic names (``devices/<serial>/...``; the
    broker's ACL and the HTTP route's token make that the sender), cut to 64 characters; ``"-"`` if none."""
    parts = topic.split("/")
    return (parts[1][:64] or "-") if len(parts) >= 2 and parts[0] == "devices" else "-"


def ration_dead_letters(session: Session, letters: Sequence[tuple[str, str]], *, quota: DeadLetterQuota,
                        now: dt.datetime) -> list[bool]:
    """Which of these refused messages (``(device, reason)`` each, in arrival order) may be kept as dead letters.

    Each device's share is reserved with one atomic upsert on its quota row (``INSERT … ON CONFLICT DO UPDATE
    SET received = received + n RETURNING received``): the row lock orders concurrent workers and API replicas, and
    each learns how many of its ``n`` fit under ``quota.per_device``. Every message is tallied per device and
    reason (``received``/``stored``); those beyond the quota are also counted in ``dead_letters_over_quota``.
    Part of the caller's transaction. Devices are taken in sorted order, so two transactions never deadlock.
    """
    if not letters:
        return []
    window = quota.window_start(now)
    per_device = Counter(device for device, _reason in letters)
    room: dict[str, int] = {}
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    for device, n in sorted(per_device.items()):
        stmt = insert(DeadLetterTally).values(device=device, window_start=window, reason="", received=n, stored=0)
        stmt = stmt.on_conflict_do_update(
            index_elements=["device", "window_start", "reason"], set_={"received": DeadLetterTally.received + n},
        ).returning(DeadLetterTally.received)
        received = int(session.execute(stmt).scalar_one())
        # Refused messages of this device in the window before ours: received - n; the quota's rest is ours.
        room[device] = max(0, min(n, quota.per_device - (received - n)))
    keep: list[bool] = []
    rows: dict[tuple[str, str], list[int]] = {}  # (device, reason) -> [received, stored]
    for device, reason in letters:
        kept = room[device] > 0
        room[device] -= int(kept)
        keep.append(kept)
        row = rows.setdefault((device, reason[:32]), [0, 0])
        row[0] += 1
        row[1] += int(kept)
    for (device, reason), (received, stored) in sorted(rows.items()):
        stmt = insert(DeadLetterTally).values(device=device, window_start=window, reason=reason, received=received,
                                              stored=stored)
        session.execute(stmt.on_conflict_do_update(
            index_elements=["device", "window_start", "reason"],
            set_={"received": DeadLetterTally.received + received, "stored": DeadLetterTally.stored + stored},
        ))
    increment_counter(session, OVER_QUOTA, keep.count(False))
    return keep


def dead_letter_tallies(session: Session, *, device: str) -> dict[str, dict[str, int]]:
    """A device's refused messages per reason, over every window kept: {reason: {"received", "stored",
    "dropped"}} (reasons only; the quota rows are left out)."""
    out: dict[str, dict[str, int]] = {}
    rows = session.execute(
        select(DeadLetterTally.reason, func.sum(DeadLetterTally.received), func.sum(DeadLetterTally.stored))
        .where(DeadLetterTally.device == device, DeadLetterTally.reason != "").group_by(DeadLetterTally.reason)
    )
    for reason, received, stored in rows:
        out[reason] = {"received": int(received), "stored": int(stored), "dropped": int(received) - int(stored)}
    return out


def increment_counters(session: Session, counts: Mapping[str, int]) -> None:
    """Adds ``counts`` ({counter name: increment}) to the running totals in one statement.

    Atomic against every other writer: ``INSERT … ON CONFLICT (name) DO UPDATE SET value = value +
    excluded.value`` creates a missing row and never reads-then-writes, so concurrent increments from
    the API and the device worker all land (PostgreSQL and SQLite). Zero increments are skipped; names
    are written in sorted order so two transactions lock the same rows in the same order (no deadlock).
    Part of the caller's transaction: nothing is committed here.
    """
    rows = [{"name": name, "value": n} for name, n in sorted(counts.items()) if n]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(IngestCounter)
    stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"value": IngestCounter.value + stmt.excluded.value})
    session.execute(stmt, rows)


def increment_counter(session: Session, name: str, n: int = 1) -> None:
    """``increment_counters(session, {name: n})``."""
    increment_counters(session, {name: n})


def record_dead_letter(session: Session, *, received_at: dt.datetime, source: str, topic: str, reason: str,
                       detail: str, payload: bytes, keep_bytes: int, quota: DeadLetterQuota) -> DeadLetter | None:
    """Counts ``rejected:<reason>`` and, within the device's quota (:func:`ration_dead_letters`), keeps the
    refused message (its first ``keep_bytes`` as text, its size as received); returns it, or None when the
    quota was used up (then it is only counted). In the caller's transaction."""
    increment_counter(session, f"rejected:{reason}")
    if not ration_dead_letters(session, [(topic_device(topic), reason)], quota=quota, now=received_at)[0]:
        return None
    letter = DeadLetter(received_at=received_at, source=source, topic=topic[:300], reason=reason, detail=detail[:500],
                        payload=payload[:keep_bytes].decode("utf-8", errors="replace"),
                        payload_size=len(payload))
    session.add(letter)
    session.flush()
    return letter


def insert_dead_letters(session: Session, letters: Sequence[Mapping[str, object]]) -> None:
    """Keeps many refused messages in one executemany INSERT, without counting them (the caller counts a
    whole batch with :func:`increment_counters`). Each mapping has DeadLetter's columns: ``received_at``
    (aware datetime), ``source`` ("mqtt" | "http"), ``topic`` (≤ 300 chars), ``reason`` (≤ 32), ``detail``
    (≤ 500), ``payload`` (text, already cut to the size limit) and ``payload_size`` (bytes as received)."""
    if not letters:
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(DeadLetter), list(letters))


def counter_totals(session: Session) -> dict[str, int]:
    """Every counter's value and the number of dead letters kept (``dead_letters``)."""
    totals = {name: value for name, value in session.execute(select(IngestCounter.name, IngestCounter.value))}
    totals["dead_letters"] = session.scalar(select(func.count(DeadLetter.id))) or 0
    return totals


def list_dead_letters(session: Session, *, reason: str | None = None, limit: int = 50) -> list[DeadLetter]:
    """The newest dead letters first, optionally of one ``reason``."""
    stmt = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    if reason:
        stmt = stmt.where(DeadLetter.reason == reason)
    return list(session.scalars(stmt))
