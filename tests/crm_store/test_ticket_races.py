"""One open ticket per problem, whichever source reports it and however many at once.

The sources compute their duplicate key as in production: the API (``problem_key`` of the staff's
category and title), the chat (``problem_key`` of the customer's words), the device worker
(``device_hooks.pipeline.dedup_key`` of the fault code) and an escalation (``problem_key`` "general").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, select, text

from crm_store.db import session_scope
from crm_store.enums import TicketEventKind, TicketPriority, TicketSource, TicketStatus
from crm_store.errors import ConflictError, InvalidTransitionError
from crm_store.models import Ticket, TicketEvent
from crm_store.repositories.tickets import (change_ticket_priority, change_ticket_status, get_ticket, list_tickets,
                                           open_ticket, problem_key)
from device_hooks.pipeline import dedup_key as device_dedup_key
from tests.conftest import _create_pg_database, _drop_pg_database, postgres_available
from tests.crm_store.conftest import Factory
from tests.races import race

ROUNDS = 15


def customer_with_washer(url: str, *, with_device: bool = True) -> tuple[int, int | None, int]:
    with session_scope(url) as s:
        f = Factory(s)
        customer = f.customer()
        device = f.device(customer, model_code="WM80") if with_device else None
        return customer.id, device.id if device else None, f.models()["WM80"].id


def report(url: str, source: str, customer_id: int, device_id: int | None, model_id: int | None) -> tuple[int, bool]:
    """One report of "the washing machine does not drain" as each source words and keys it."""
    with session_scope(url) as s:
        model = model_id if device_id is not None else None
        if source == "api":
            key, _ = problem_key(s, model_id=model, category="drainage" if device_id else "general",
                                 text="Washing machine not draining")
            ticket_source = TicketSource.API
        elif source == "chat":
            key, _ = problem_key(s, model_id=model, category="general", text="my washing machine won't drain again")
            ticket_source = TicketSource.CHAT
        elif source == "device":
            key, ticket_source = device_dedup_key("E21"), TicketSource.DEVICE
        else:  # escalation: the customer asked for a person about it
            key, _ = problem_key(s, model_id=None, category="general")
            ticket_source = TicketSource.CHAT
        ticket, created = open_ticket(s, customer_id=customer_id, device_id=device_id, source=ticket_source,
                                      category="drainage", title="Not draining", dedup_key=key, author=source)
        return ticket.id, created


def open_count(url: str, customer_id: int) -> int:
    with session_scope(url) as s:
        return len(list_tickets(s, customer_id=customer_id, only_open=True))


def test_api_chat_and_device_reports_of_one_problem_share_one_key(database_url):
    customer_id, device_id, model_id = customer_with_washer(database_url)
    keys = set()
    with session_scope(database_url) as s:
        keys.add(problem_key(s, model_id=model_id, category="drainage", text="Washing machine not draining")[0])
        keys.add(problem_key(s, model_id=model_id, category="general", text="my washing machine won't drain again")[0])
        keys.add(problem_key(s, model_id=model_id, category="E21")[0])
    assert keys == {device_dedup_key("E21")}
    for source in ("api", "chat", "device"):
        report(database_url, source, customer_id, device_id, model_id)
    assert open_count(database_url, customer_id) == 1


@pytest.mark.parametrize("with_device", [True, False], ids=["device", "no-device"])
def test_racing_sources_open_one_ticket(database_url, with_device):
    sources = ["api", "chat", "device", "api", "chat", "escalation"] if with_device else ["api", "chat", "escalation", "api", "chat", "escalation"]
    if with_device:
        sources = [s for s in sources if s != "escalation"]  # an escalation's own ticket has no device
    for _ in range(ROUNDS):
        customer_id, device_id, model_id = customer_with_washer(database_url, with_device=with_device)
        outcomes = race(len(sources), lambda i: report(database_url, sources[i], customer_id, device_id, model_id))
        assert all(o.ok for o in outcomes), outcomes
        assert len({o.value[0] for o in outcomes}) == 1 and sum(o.value[1] for o in outcomes) == 1, outcomes
        assert open_count(database_url, customer_id) == 1
        with session_scope(database_url) as s:  # every other report is recorded on the one ticket
            events = s.scalars(select(TicketEvent).where(TicketEvent.ticket_id == outcomes[0].value[0])).all()
            assert len(events) == len(sources)


def test_reopening_while_the_problem_is_reported_again_leaves_one_open(database_url):
    def step(i: int, ticket_id: int, customer_id: int, device_id: int | None, model_id: int) -> str:
        if i == 0:
            with session_scope(database_url) as s:
                change_ticket_status(s, ticket=get_ticket(s, ticket_id=ticket_id), status=TicketStatus.OPEN, author="agent")
            return "reopened"
        return "created" if report(database_url, "chat", customer_id, device_id, model_id)[1] else "joined"

    for with_device in (True, False):
        for _ in range(ROUNDS // 2):
            customer_id, device_id, model_id = customer_with_washer(database_url, with_device=with_device)
            first, _ = report(database_url, "chat", customer_id, device_id, model_id)
            with session_scope(database_url) as s:
                change_ticket_status(s, ticket=get_ticket(s, ticket_id=first), status=TicketStatus.RESOLVED, author="agent")
            outcomes = race(3, lambda i: step(i, first, customer_id, device_id, model_id))
            assert open_count(database_url, customer_id) == 1, outcomes
            if not outcomes[0].ok:
                assert isinstance(outcomes[0].error, ConflictError)


def test_racing_status_changes_apply_once(database_url):
    targets = [TicketStatus.IN_PROGRESS, TicketStatus.WAITING_CUSTOMER, TicketStatus.RESOLVED, TicketStatus.CLOSED]

    def change(ticket_id: int, status: TicketStatus) -> TicketStatus:
        with session_scope(database_url) as s:
            change_ticket_status(s, ticket=get_ticket(s, ticket_id=ticket_id), status=status, author="agent")
            return status

    for _ in range(ROUNDS):
        customer_id, device_id, model_id = customer_with_washer(database_url)
        ticket_id, _ = report(database_url, "device", customer_id, device_id, model_id)
        outcomes = race(len(targets), lambda i: change(ticket_id, targets[i]))
        with session_scope(database_url) as s:
            ticket = get_ticket(s, ticket_id=ticket_id)
            changes = [e.data for e in ticket.events if e.kind is TicketEventKind.STATUS_CHANGED]
            # Each recorded change starts where the previous one ended: no change was made from a stale status.
            assert changes and changes[0]["from"] == "open"
            assert all(a["to"] == b["from"] for a, b in zip(changes, changes[1:])), changes
            assert ticket.status.value == changes[-1]["to"]
            assert (ticket.open_dedup_key is None) == (not ticket.status.is_open)
        assert all(o.ok or isinstance(o.error, (ConflictError, InvalidTransitionError)) for o in outcomes), outcomes


def test_racing_priority_changes_record_a_history_that_matches(database_url):
    targets = [TicketPriority.LOW, TicketPriority.HIGH, TicketPriority.URGENT, TicketPriority.HIGH]

    def change(ticket_id: int, priority: TicketPriority) -> TicketPriority:
        with session_scope(database_url) as s:
            change_ticket_priority(s, ticket=get_ticket(s, ticket_id=ticket_id), priority=priority, author="agent")
            return priority

    for _ in range(ROUNDS):
        customer_id, device_id, model_id = customer_with_washer(database_url)
        ticket_id, _ = report(database_url, "api", customer_id, device_id, model_id)
        with session_scope(database_url) as s:
            start = get_ticket(s, ticket_id=ticket_id).priority.value
        outcomes = race(len(targets), lambda i: change(ticket_id, targets[i]))
        assert all(o.ok or isinstance(o.error, ConflictError) for o in outcomes), outcomes
        with session_scope(database_url) as s:
            ticket = get_ticket(s, ticket_id=ticket_id)
            changes = [e.data for e in ticket.events if e.kind is TicketEventKind.PRIORITY_CHANGED]
            # Each recorded change starts where the previous one ended: none was made from a stale priority.
            assert changes and changes[0]["from"] == start
            assert all(a["to"] == b["from"] for a, b in zip(changes, changes[1:])), changes
            assert ticket.priority.value == changes[-1]["to"]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migration_keeps_existing_duplicate_open_tickets_and_builds_the_index(kind, tmp_path_factory):
    """Before 0004 two open device-less tickets for one problem were possible; upgrading must not fail."""
    from crm_store.migrate import upgrade

    with _database_at_0003(kind, tmp_path_factory) as url:
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO customers (id, full_name, email, preferred_language, loyalty_tier, customer_since, "
                              "timezone, consent_proactive, consent_marketing, consent_telemetry, created_at) VALUES "
                              "(1, 'A B', 'a@example.com', 'en', 'standard', '2024-01-01', 'UTC', true, false, true, '2024-01-01')"))
            for i in (1, 2, 3):
                conn.execute(text(
                    "INSERT INTO tickets (id, number, customer_id, source, category, title, description, priority, status, "
                    "dedup_key, open_dedup_key, created_at, updated_at) VALUES (:id, :number, 1, 'api', 'general', 't', '', "
                    "'normal', 'open', 'api:general', 'api:general', '2024-01-01', '2024-01-01')"),
                    {"id": i, "number": f"T-00000{i}"})
        engine.dispose()
        upgrade(url)
        with session_scope(url) as s:
            tickets = s.scalars(select(Ticket).order_by(Ticket.id)).all()
            assert [t.status for t in tickets] == [TicketStatus.OPEN] * 3  # nothing closed behind staff's back
            assert [t.dedup_scope for t in tickets] == ["customer:1", "legacy-duplicate:2", "legacy-duplicate:3"]
            assert "T-000001 is open for the same problem" in tickets[1].events[-1].body and tickets[1].events[-1].is_private
            # New reports join the oldest; the index refuses a second open one from now on.
            ticket, created = open_ticket(s, customer_id=1, device_id=None, source=TicketSource.API, category="general",
                                          title="t", dedup_key="api:general", author="x")
            assert ticket.id == 1 and not created


@contextmanager
def _database_at_0003(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A new database migrated to 0003 only (what a deployment had before this migration)."""
    from crm_store.db import get_engine
    from crm_store.migrate import upgrade

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('m0003')}/crm.db"
        upgrade(url, "0003")
        yield url
        return
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 but CI requires the PostgreSQL store tests")
        pytest.skip("PostgreSQL is not reachable")
    name, url = _create_pg_database()
    try:
        upgrade(url, "0003")
        yield url
    finally:
        get_engine.cache_clear()
        _drop_pg_database(name)
