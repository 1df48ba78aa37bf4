"""Failed chat verifications (``auth_failures``, keyed by a hash of the e-mail address tried) are a customer's
personal data: erased with them, exported to them, aged out by retention (never an active lock). SQLite and
PostgreSQL, as the other privacy tests."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from crm_store.db import session_scope
from crm_store.models import AuthFailure, Customer, ErasureRequest, utcnow
from crm_store.repositories import erasure
from crm_store.repositories.erasure import ERASE_STEPS, request_erasure, run_erasure
from crm_store.repositories.lockouts import VERIFY_CLIENT, VERIFY_IDENTITY, LockoutPolicy, key_hash, reserve_attempt
from crm_store.repositories.privacy import export_customer
from crm_store.retention import RetentionSettings, run_retention
from tests.privacy.builder import make_person

DAY = dt.timedelta(days=1)


def _new(url: str):  # type: ignore[no-untyped-def]
    with session_scope(url) as s:
        return make_person(s, None, telemetry=1)


def _request(url: str, customer_id: int) -> int:
    with session_scope(url) as s:
        return request_erasure(s, customer_id=customer_id, requested_by="dpo", source="command")[0].id


def _row(url: str, scope: str, key: str) -> AuthFailure | None:
    with session_scope(url, write=False) as s:
        row = s.scalar(select(AuthFailure).where(AuthFailure.scope == scope,
                                                 AuthFailure.key_hash == key_hash(scope, key)))
        if row is not None:
            s.expunge(row)
        return row


def _lock(url: str, email: str) -> None:
    """Five more tries with the address: the default policy locks it."""
    with session_scope(url) as s:
        for _ in range(5):
            reserve_attempt(s, scope=VERIFY_IDENTITY, key=email)


def test_erasure_deletes_the_customers_failures_before_their_email_goes_and_no_one_elses(stores):
    url, _tracker = stores
    person, other = _new(url), _new(url)
    _lock(url, person.email)
    with session_scope(url) as s:
        reserve_attempt(s, scope=VERIFY_CLIENT, key=f"client-of-{person.customer_id}")
    assert _row(url, VERIFY_IDENTITY, person.email).locked_until is not None
    assert ERASE_STEPS.index("auth_failures") < ERASE_STEPS.index("customer")
    steps = run_erasure(url, _request(url, person.customer_id))
    assert steps is not None and steps["auth_failures"]["rows"] == 1
    assert _row(url, VERIFY_IDENTITY, person.email) is None
    assert _row(url, VERIFY_IDENTITY, other.email).failures == 1  # another customer's: kept
    # A client address is not surely theirs (shared behind a NAT): left to retention.
    assert _row(url, VERIFY_CLIENT, f"client-of-{person.customer_id}") is not None


def test_the_export_shows_counts_times_and_lock_state_but_not_the_hash(stores):
    url, _tracker = stores
    person, other = _new(url), _new(url)
    _lock(url, person.email)
    now = utcnow()
    with session_scope(url, write=False) as s:
        doc = export_customer(s, customer_id=person.customer_id, tracker=None, now=now)
    assert doc is not None and "auth_failures" in doc["stores"]
    [entry] = doc["auth_failures"]
    assert entry == {**entry, "scope": VERIFY_IDENTITY, "identifier": "email", "failures": 5, "locked": True}
    assert entry["first_failure_at"] <= entry["last_failure_at"] < entry["locked_until"]
    text = json.dumps(doc)
    assert key_hash(VERIFY_IDENTITY, person.email) not in text and key_hash(VERIFY_IDENTITY, other.email) not in text
    assert doc["customer_summary"]["auth_failures"] == 1
    with session_scope(url, write=False) as s:  # once the lock has ended, the export says so
        later = export_customer(s, customer_id=person.customer_id, tracker=None, now=now + DAY)
    assert later["auth_failures"][0]["locked"] is False


@pytest.mark.parametrize("crash", ["after devices", "inside auth_failures", "after auth_failures"])
def test_an_erasure_that_crashed_around_the_step_finishes_on_a_rerun(stores, monkeypatch, crash):
    url, _tracker = stores
    person = _new(url)
    rid = _request(url, person.customer_id)

    class Crash(Exception):
        pass

    def crash_after(step: str) -> None:
        if crash == f"after {step}":
            raise Crash

    if crash == "inside auth_failures":
        step = erasure._STEPS["auth_failures"]

        def crash_inside(*args, **kwargs):  # type: ignore[no-untyped-def]
            step(*args, **kwargs)  # the DELETE runs, its transaction never commits
            raise Crash

        monkeypatch.setitem(erasure._STEPS, "auth_failures", crash_inside)
    with pytest.raises(Crash):
        run_erasure(url, rid, after_step=crash_after)
    monkeypatch.undo()
    done = crash == "after auth_failures"
    assert (_row(url, VERIFY_IDENTITY, person.email) is None) == done
    with session_scope(url) as s:
        req = s.get(ErasureRequest, rid)
        assert req.steps.get("auth_failures", {}).get("done", False) == done and "customer" not in req.steps
        assert s.get(Customer, person.customer_id) is not None
        req.lease_until = req.created_at  # the crashed runner's lease expires, as time would make it
    steps = run_erasure(url, rid)
    assert steps is not None and set(steps) == set(ERASE_STEPS)
    assert steps["auth_failures"]["rows"] == 1
    assert _row(url, VERIFY_IDENTITY, person.email) is None


def test_retention_ages_out_ended_failures_and_never_an_active_lock(stores, monkeypatch):
    url, _tracker = stores
    now = utcnow()
    keys = {name: f"{name}-{now.timestamp()}@example.org" for name in ("old", "old_lock_ended", "old_locked", "recent")}
    long_lock = LockoutPolicy(max_lock=dt.timedelta(days=400), base_lock=dt.timedelta(days=40))
    with session_scope(url) as s:
        for name, key in keys.items():
            at = now - (29 * DAY if name == "recent" else 31 * DAY)
            for _ in range(5 if "lock" in name else 1):
                reserve_attempt(s, scope=VERIFY_IDENTITY, key=key, now=at,
                                policy=long_lock if name == "old_locked" else LockoutPolicy())
    assert _row(url, VERIFY_IDENTITY, keys["old_locked"]).locked_until > now  # 31 days old, locked for 40
    assert _row(url, VERIFY_IDENTITY, keys["old_lock_ended"]).locked_until < now
    result = run_retention(url, settings=RetentionSettings(), now=now)
    assert result["auth_failures"] >= 2
    assert _row(url, VERIFY_IDENTITY, keys["old"]) is None
    assert _row(url, VERIFY_IDENTITY, keys["old_lock_ended"]) is None
    assert _row(url, VERIFY_IDENTITY, keys["old_locked"]).failures == 5  # the lock-out still holds
    assert _row(url, VERIFY_IDENTITY, keys["recent"]) is not None
    assert run_retention(url, settings=RetentionSettings(), now=now)["auth_failures"] == 0
    # Once that lock has ended, the next pass takes the row; 0 days keeps them forever.
    later = now + 40 * DAY
    assert "auth_failures" not in run_retention(url, settings=RetentionSettings(auth_failures_days=0), now=later)
    assert _row(url, VERIFY_IDENTITY, keys["old_locked"]) is not None
    assert run_retention(url, settings=RetentionSettings(), now=later)["auth_failures"] >= 2
    assert _row(url, VERIFY_IDENTITY, keys["old_locked"]) is None and _row(url, VERIFY_IDENTITY, keys["recent"]) is None
    monkeypatch.setenv("RETENTION_AUTH_FAILURES_DAYS", "7")
    assert RetentionSettings().auth_failures_days == 7
    assert RetentionSettings.model_fields["auth_failures_days"].default == 30
