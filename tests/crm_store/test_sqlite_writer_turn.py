"""Write units of work take turns within a process on SQLite (crm_store.db.sqlite_writer_turn), and only there."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from crm_store.db import session_scope

BARRIER_TIMEOUT_S = 5


def _run_in_threads(n: int, work) -> list:
    with ThreadPoolExecutor(n) as pool:
        return [f.result(timeout=60) for f in [pool.submit(work, i) for i in range(n)]]


def test_sqlite_write_units_of_work_of_one_process_run_one_at_a_time_and_all_commit(database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only: PostgreSQL writers run side by side (next test)")
    inside, most, guard = 0, 0, threading.Lock()

    def write(i: int) -> int:
        nonlocal inside, most
        with session_scope(database_url) as session:
            with guard:
                inside += 1
                most = max(most, inside)
            session.execute(text("SELECT 1"))
            threading.Event().wait(0.01)  # the unit of work's own time, while others want their turn
            with guard:
                inside -= 1
        return i

    assert sorted(_run_in_threads(8, write)) == list(range(8))
    assert most == 1


def test_read_only_units_of_work_are_never_queued(database_url):
    together = threading.Barrier(4, timeout=BARRIER_TIMEOUT_S)

    def read(_i: int) -> int:
        with session_scope(database_url, write=False) as session:
            together.wait()  # breaks (BrokenBarrierError) if the four readers were made to take turns
            return session.execute(text("SELECT 1")).scalar_one()

    assert _run_in_threads(4, read) == [1, 1, 1, 1]


def test_postgresql_write_units_of_work_are_not_queued_in_the_process(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    together = threading.Barrier(3, timeout=BARRIER_TIMEOUT_S)

    def write(_i: int) -> int:
        with session_scope(database_url) as session:
            together.wait()
            return session.execute(text("SELECT 1")).scalar_one()

    assert _run_in_threads(3, write) == [1, 1, 1]


def test_a_failed_write_unit_of_work_gives_its_turn_up(database_url):
    with pytest.raises(RuntimeError), session_scope(database_url) as session:
        session.execute(text("SELECT 1"))
        raise RuntimeError("the action failed half way")

    def write(_i: int) -> int:  # another thread: a turn kept by the failed unit of work would block it
        with session_scope(database_url) as session:
            return session.execute(text("SELECT 1")).scalar_one()

    assert _run_in_threads(1, write) == [1]


def test_a_write_unit_of_work_opened_inside_another_in_the_same_thread_does_not_wait_for_itself(database_url):
    def nested(_i: int) -> int:
        with session_scope(database_url) as outer:
            with session_scope(database_url) as inner:
                inner.execute(text("SELECT 1"))
            return outer.execute(text("SELECT 2")).scalar_one()

    assert _run_in_threads(1, nested) == [2]


def test_the_wait_for_the_turn_counts_against_sqlites_busy_timeout(database_url, monkeypatch):
    """Another process holds the write lock for longer than the busy timeout: each writer here gives up after one
    busy timeout in all, turn included, not after its wait for the turn plus a whole busy timeout more."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    import time

    from sqlalchemy.exc import OperationalError

    from crm_store import db
    from tests.live import sqlite_write_lock

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 2000)
    first_waiting = threading.Event()

    def write(i: int) -> tuple[str, float]:
        if i == 1:
            first_waiting.wait(timeout=10)  # the second writer comes while the first holds the turn
        started = time.monotonic()
        try:
            with session_scope(database_url) as session:
                first_waiting.set()
                session.execute(text("UPDATE customers SET first_name = first_name WHERE id = -1"))
        except OperationalError as exc:
            return str(exc.orig), time.monotonic() - started
        return "committed", time.monotonic() - started

    with sqlite_write_lock(database_url.removeprefix("sqlite:///")):
        results = _run_in_threads(2, write)
    assert all("locked" in outcome for outcome, _ in results), results
    second_waited = results[1][1]
    assert second_waited < 3.5, results  # 2 s in all; the turn plus a whole busy timeout would be about 4 s


def test_a_read_after_a_writer_that_waited_for_its_turn_has_the_whole_busy_timeout(database_url, monkeypatch):
    """The writer's shortened busy timeout stays with it: the next unit of work on its pooled connection, a
    read, waits as long as ever for a lock it may need (WAL recovery, a checkpoint)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    from crm_store import db

    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 2000)
    holding, release = threading.Event(), threading.Event()

    def hold_the_turn(_i: int) -> None:
        with session_scope(database_url) as session:
            session.execute(text("SELECT 1"))
            holding.set()
            release.wait(timeout=10)

    def wait_then_read(_i: int) -> list[int]:
        holding.wait(timeout=10)
        threading.Timer(0.5, release.set).start()
        with session_scope(database_url) as session:  # waits ~0.5 s for its turn: ~1.5 s of busy timeout left
            shortened = session.execute(text("PRAGMA busy_timeout")).scalar_one()
        with session_scope(database_url, write=False) as session:
            again = session.execute(text("PRAGMA busy_timeout")).scalar_one()
        return [shortened, again]

    with ThreadPoolExecutor(2) as pool:
        holder = pool.submit(hold_the_turn, 0)
        shortened, again = pool.submit(wait_then_read, 1).result(timeout=30)
        holder.result(timeout=30)
    assert shortened < 2000
    assert again == 2000
