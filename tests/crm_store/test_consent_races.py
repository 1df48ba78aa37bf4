"""Consent changes from the chat and the console at the same moment (crm_store.repositories.privacy.set_consent):
each is a conditional UPDATE, so none is decided on a stale read. Read-then-write lost a customer's revocation
behind a simultaneous grant (it read "not granted", skipped, and told the customer "Done") and wrote history that
did not match the stored consent."""

from __future__ import annotations

import datetime as dt
import random
import uuid

import pytest
from sqlalchemy import select

from crm_store.db import is_sqlite, session_scope
from crm_store.enums import LoyaltyTier
from crm_store.models import ConsentEvent, Customer
from crm_store.repositories.privacy import set_consent
from tests.races import race

RACERS = 8
ROUNDS = 6


def new_customer(url: str) -> int:
    with session_scope(url) as s:
        customer = Customer(full_name="Consent Racer", email=f"racer-{uuid.uuid4().hex[:10]}@example.com",
                            customer_since=dt.date(2022, 1, 1), loyalty_tier=LoyaltyTier.STANDARD,
                            consent_proactive=True)
        s.add(customer)
        s.flush()
        return customer.id


def test_simultaneous_grants_and_revocations_keep_history_and_state_in_step(database_url: str):
    customer_id = new_customer(database_url)
    wanted: list[list[bool]] = [[random.Random(i * 31 + r).random() < 0.5 for r in range(ROUNDS)] for i in range(RACERS)]

    def step(i: int) -> list[bool]:
        said = []
        for granted in wanted[i]:
            with session_scope(database_url) as s:
                customer = s.get(Customer, customer_id)  # loaded before the others commit: the stale read
                events = set_consent(s, customer=customer, changes={"proactive": granted},
                                     source="chat" if i % 2 else "console", actor=f"racer-{i}")
                said.append(bool(events))
        return said

    outcomes = race(RACERS, step)
    assert all(o.ok for o in outcomes), outcomes
    with session_scope(database_url, write=False) as s:
        final = s.get(Customer, customer_id).consent_proactive
        history = [e.granted for e in s.scalars(select(ConsentEvent).where(ConsentEvent.customer_id == customer_id)
                                                .order_by(ConsentEvent.id))]
    # Every recorded change really changed the stored value: the history alternates from the initial True and ends
    # on the final state (a stale read would record a "change" to the value already stored, twice in a row).
    expected_start = False
    for granted in history:
        assert granted is expected_start, history
        expected_start = not expected_start
    assert (history[-1] if history else True) is final
    assert sum(sum(o.value) for o in outcomes) == len(history)  # each racer's "changed" matches an event


def test_a_revocation_is_not_lost_behind_a_grant_read_before_it(database_url: str):
    if is_sqlite(database_url):
        pytest.skip("SQLite: a write unit of work holds the write lock from its start, so it cannot read stale")
    customer_id = new_customer(database_url)
    with session_scope(database_url) as s:
        set_consent(s, customer=s.get(Customer, customer_id), changes={"proactive": False}, source="chat", actor="customer")
    with session_scope(database_url) as stale:
        customer = stale.get(Customer, customer_id)  # reads "not granted"
        assert customer.consent_proactive is False
        with session_scope(database_url) as s:  # staff grant, committed meanwhile
            set_consent(s, customer=s.get(Customer, customer_id), changes={"proactive": True}, source="console",
                        actor="staff")
        # The customer says "stop alerts" on the stale read: the revocation must land, with its event.
        events = set_consent(stale, customer=customer, changes={"proactive": False}, source="chat", actor="customer")
        assert [e.granted for e in events] == [False]
    with session_scope(database_url, write=False) as s:
        assert s.get(Customer, customer_id).consent_proactive is False
