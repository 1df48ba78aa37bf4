"""The device pipeline's batch statements (crm_store.repositories.device_batches), on SQLite and PostgreSQL:
messages are stored once (a redelivery stores and reports nothing), rule states round-trip, and on
PostgreSQL a second transaction reading a device's rule states waits for the first one's lock."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from crm_store.db import session_scope
from crm_store.models import DeviceMessage
from crm_store.repositories.device_batches import (
    MESSAGES_PER_INSERT,
    devices_by_serial,
    insert_device_messages,
    limit_statement_time,
    lock_rule_states,
    save_rule_states,
)
from crm_store.repositories.telemetry import latest_message
from tests.crm_store.conftest import Factory

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def _device(url: str, **customer: object) -> tuple[int, str]:
    with session_scope(url) as session:
        factory = Factory(session)
        device = factory.device(factory.customer(**customer))
        return device.id, device.serial


def _rows(device_id: int, n: int, *, first_seq: int = 1) -> list:  # type: ignore[type-arg]
    received = T0 + dt.timedelta(seconds=5)
    return [(device_id, "telemetry", seq, T0 + dt.timedelta(milliseconds=seq), received, {"readings": {"drum_rpm": seq}})
            for seq in range(first_seq, first_seq + n)]


def test_messages_are_stored_once_and_only_new_ones_are_reported(database_url: str):
    device_id, serial = _device(database_url)
    rows = _rows(device_id, MESSAGES_PER_INSERT + 5)  # more than one multi-row INSERT off PostgreSQL
    with session_scope(database_url) as session:
        assert sorted(insert_device_messages(session, rows)) == list(range(len(rows)))
    with session_scope(database_url) as session:  # the same delivery again, plus two new messages
        again = rows[:10] + _rows(device_id, 2, first_seq=len(rows) + 1)
        assert sorted(insert_device_messages(session, again)) == [10, 11]
        assert insert_device_messages(session, []) == []
    with session_scope(database_url, write=False) as session:
        count = session.scalar(select(func.count()).select_from(DeviceMessage).where(DeviceMessage.device_id == device_id))
        assert count == len(rows) + 2
        latest = latest_message(session, device_id=device_id)  # the ORM reads the time the driver wrote
        assert latest is not None and latest.ts == T0 + dt.timedelta(milliseconds=len(rows) + 2)
        assert latest.body == {"readings": {"drum_rpm": len(rows) + 2}}
        info = devices_by_serial(session, {serial, "NO-SUCH-SERIAL"})
        assert list(info) == [serial] and info[serial].id == device_id and info[serial].telemetry_consent


def test_devices_by_serial_reports_a_refused_telemetry_consent(database_url: str):
    _id, serial = _device(database_url, consent_telemetry=False)
    with session_scope(database_url, write=False) as session:
        assert devices_by_serial(session, [serial])[serial].telemetry_consent is False


def _state(device_id: int, key: str, **kw: object) -> dict[str, object]:
    return {"device_id": device_id, "rule_key": key, "breach_since": None, "active": False, "normal_since": None,
            "last_ts": None, **kw}


def test_rule_states_are_inserted_then_overwritten(database_url: str):
    device_id, _serial = _device(database_url)
    with session_scope(database_url) as session:
        save_rule_states(session, [_state(device_id, "rule:1", breach_since=T0, last_ts=T0), _state(device_id, "code:E21")])
    with session_scope(database_url) as session:
        save_rule_states(session, [_state(device_id, "rule:1", active=True, breach_since=T0, last_ts=T0 + dt.timedelta(1))])
    with session_scope(database_url) as session:
        states = {r.rule_key: r for r in lock_rule_states(session, {device_id})}
        assert lock_rule_states(session, set()) == []
    assert set(states) == {"rule:1", "code:E21"}
    assert states["rule:1"].active and states["rule:1"].last_ts == T0 + dt.timedelta(1)
    assert states["rule:1"].breach_since == T0 and not states["code:E21"].active


def _someone_waits_on_a_lock(url: str, deadline: float) -> bool:
    """Polls PostgreSQL until a session of this database waits on a lock (True) or the deadline passes."""
    with session_scope(url, write=False) as session:
        while time.monotonic() < deadline:
            waiting = session.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                          "AND wait_event_type = 'Lock'"))
            if waiting:
                return True
            session.rollback()  # a fresh snapshot of pg_stat_activity on the next read
            threading.Event().wait(0.01)  # poll interval, not a guess at how long the other thread takes
        return False


def test_a_second_transaction_waits_for_the_device_lock_and_then_sees_the_first_ones_states(database_url: str):
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's; SQLite has one writer at a time (BEGIN IMMEDIATE)")
    device_id, _serial = _device(database_url)
    seen: list[object] = []
    with session_scope(database_url) as first:
        assert lock_rule_states(first, [device_id]) == []
        save_rule_states(first, [_state(device_id, "rule:7", active=True, last_ts=T0)])

        def second() -> None:
            with session_scope(database_url) as session:
                seen.extend((r.rule_key, r.active) for r in lock_rule_states(session, [device_id]))

        waiter = threading.Thread(target=second)
        waiter.start()
        assert _someone_waits_on_a_lock(database_url, time.monotonic() + 30), "the second reader did not wait"
        assert seen == []
    waiter.join(30)
    assert seen == [("rule:7", True)]


def test_a_statement_waiting_longer_than_the_limit_fails(database_url: str):
    if not database_url.startswith("postgresql"):
        with session_scope(database_url) as session:
            limit_statement_time(session, timeout_ms=50)  # nothing to do on SQLite (busy_timeout bounds waits)
        return
    device_id, _serial = _device(database_url)
    with session_scope(database_url) as holder:
        holder.execute(text("SELECT id FROM devices WHERE id = :id FOR UPDATE"), {"id": device_id})
        with pytest.raises(OperationalError, match="statement timeout"):
            with session_scope(database_url) as session:
                limit_statement_time(session, timeout_ms=200)
                lock_rule_states(session, [device_id])
