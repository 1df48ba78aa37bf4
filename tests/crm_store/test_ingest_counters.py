"""Ingest counters are one atomic upsert: increments from many writers (the HTTP route, the device worker)
all land, on PostgreSQL and SQLite. And the read-only/write units of work of crm_store.db."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from crm_store.db import session_scope
from crm_store.models import DeadLetter, IngestCounter, utcnow
from crm_store.repositories.ingest import (
    OVER_QUOTA,
    DeadLetterQuota,
    counter_totals,
    dead_letter_tallies,
    increment_counter,
    increment_counters,
    ration_dead_letters,
    record_dead_letter,
)
from tests.live import sqlite_write_lock

THREADS, ROUNDS = 8, 40


def _race(url: str, work) -> None:  # type: ignore[no-untyped-def]
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait(timeout=30)
            for r in range(ROUNDS):
                work(i, r)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]


def test_concurrent_increments_of_a_new_counter_all_land(database_url):
    """N threads × M increments, each in its own transaction, starting on a counter with no row yet:
    the first inserts race each other and every later one races the rest. The total is exact."""
    name = f"race:{uuid.uuid4().hex[:8]}"

    def work(_i: int, _r: int) -> None:
        with session_scope(database_url) as session:
            increment_counter(session, name)

    _race(database_url, work)
    with session_scope(database_url, write=False) as session:
        assert session.get(IngestCounter, name).value == THREADS * ROUNDS


def test_several_counters_per_transaction_neither_lose_increments_nor_deadlock(database_url):
    """Batches touching the same counters in different orders (as the worker's do) all land."""
    names = [f"batch:{uuid.uuid4().hex[:8]}:{k}" for k in "abc"]

    def work(i: int, _r: int) -> None:
        order = names if i % 2 else list(reversed(names))
        with session_scope(database_url) as session:
            increment_counters(session, {n: k + 1 for k, n in enumerate(order)} | {"unused": 0})

    _race(database_url, work)
    with session_scope(database_url, write=False) as session:
        values = [session.get(IngestCounter, n).value for n in names]
        assert session.get(IngestCounter, "unused") is None  # zero increments write nothing
    half = THREADS // 2 * ROUNDS  # odd threads add 1,2,3 to a,b,c; even threads add 1,2,3 to c,b,a
    assert values == [half * 1 + half * 3, half * 2 * 2, half * 3 + half * 1]


def test_a_dead_letter_is_kept_and_counted_in_the_same_transaction(database_url):
    before = 0
    with session_scope(database_url, write=False) as session:
        before = counter_totals(session).get("rejected:json", 0)
    with session_scope(database_url) as session:
        letter = record_dead_letter(session, received_at=utcnow(), source="http", topic=f"devices/X-{uuid.uuid4().hex[:6]}/fault",
                                    reason="json", detail="broken", payload=b"{" * 5000, keep_bytes=100,
                                    quota=DeadLetterQuota())
        letter_id = letter.id
    with session_scope(database_url, write=False) as session:
        stored = session.get(DeadLetter, letter_id)
        assert len(stored.payload) == 100 and stored.payload_size == 5000
        totals = counter_totals(session)
        assert totals["rejected:json"] == before + 1 and totals["dead_letters"] >= 1


def test_racing_writers_keep_exactly_the_quota_of_dead_letters_and_count_the_rest(database_url):
    """8 threads × 40 transactions, each with 3 refused messages of one device (2 reasons): exactly the quota is
    kept (the upsert on the device's quota row orders them), every message is tallied per reason."""
    device, quota = f"RACE-{uuid.uuid4().hex[:8].upper()}", DeadLetterQuota(per_device=250)
    now = utcnow()
    kept: list[int] = []
    with session_scope(database_url, write=False) as session:
        over_before = counter_totals(session).get(OVER_QUOTA, 0)

    def work(_i: int, _r: int) -> None:
        with session_scope(database_url) as session:
            keep = ration_dead_letters(session, [(device, "too_large"), (device, "json"), (device, "too_large")],
                                       quota=quota, now=now)
        kept.append(keep.count(True))

    _race(database_url, work)
    total = THREADS * ROUNDS * 3
    assert sum(kept) == 250
    with session_scope(database_url, write=False) as session:
        tallies = dead_letter_tallies(session, device=device)
        assert counter_totals(session)[OVER_QUOTA] - over_before == total - 250
    assert tallies["too_large"]["received"] == 2 * THREADS * ROUNDS and tallies["json"]["received"] == THREADS * ROUNDS
    assert sum(t["stored"] for t in tallies.values()) == 250
    assert sum(t["dropped"] for t in tallies.values()) == total - 250


def test_the_quota_is_per_device_and_per_window(database_url):
    quota = DeadLetterQuota(per_device=2, window=dt.timedelta(hours=1))
    a, b = f"A-{uuid.uuid4().hex[:8].upper()}", f"B-{uuid.uuid4().hex[:8].upper()}"
    start = quota.window_start(utcnow())
    with session_scope(database_url) as session:
        assert ration_dead_letters(session, [(a, "json")] * 3 + [(b, "json")], quota=quota, now=start) == [
            True, True, False, True]
        assert ration_dead_letters(session, [(a, "json")], quota=quota, now=start + dt.timedelta(minutes=59)) == [False]
        assert ration_dead_letters(session, [(a, "json")], quota=quota, now=start + dt.timedelta(hours=1)) == [True]


def test_a_read_only_unit_of_work_refuses_to_write(database_url):
    with pytest.raises(DBAPIError):
        with session_scope(database_url, write=False) as session:
            increment_counter(session, "never-written")
    # The read-only setting stays with that unit of work: the pooled connection writes again afterwards.
    for _ in range(3):
        with session_scope(database_url, write=False) as session:
            session.execute(select(IngestCounter.name).limit(1))
        with session_scope(database_url) as session:
            increment_counter(session, "written-after-a-read")
    with session_scope(database_url, write=False) as session:
        assert session.get(IngestCounter, "never-written") is None
        assert session.get(IngestCounter, "written-after-a-read").value >= 3


def test_on_sqlite_reads_do_not_wait_for_the_write_lock(database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's single write lock")
    with sqlite_write_lock(database_url.removeprefix("sqlite:///")):
        started = time.perf_counter()
        with session_scope(database_url, write=False) as session:
            session.execute(text("SELECT count(*) FROM ingest_counters")).scalar()
        # busy_timeout is 10 s: a read that took the write lock (BEGIN IMMEDIATE) would wait that long and fail.
        assert time.perf_counter() - started < 2
