"""Bookkeeping of device ingestion shared by the HTTP route and the MQTT pipeline: running counters and
dead letters (messages refused with a reason, kept as evidence)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from crm_store.models import DeadLetter, IngestCounter


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
                       detail: str, payload: bytes, keep_bytes: int) -> DeadLetter:
    """Keeps a refused message (its first ``keep_bytes`` as text, its size as received) and counts
    ``rejected:<reason>``, in the caller's transaction."""
    letter = DeadLetter(received_at=received_at, source=source, topic=topic[:300], reason=reason, detail=detail[:500],
                        payload=payload[:keep_bytes].decode("utf-8", errors="replace"),
                        payload_size=len(payload))
    session.add(letter)
    session.flush()
    increment_counter(session, f"rejected:{reason}")
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
