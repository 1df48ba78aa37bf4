"""Ticket workflow: numbering, no duplicates while open, status transitions, concurrency."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.orm import Session

from crm_store.db import make_engine
from crm_store.enums import TicketEventKind, TicketSource, TicketStatus
from crm_store.errors import ConflictError, InvalidTransitionError
from crm_store.repositories.catalogue import match_fault
from crm_store.repositories.tickets import (
    change_ticket_status,
    get_ticket_by_number,
    list_tickets,
    normalise_ticket_number,
    open_ticket,
)


def _open(session, customer, device, key="fault:E21", source=TicketSource.CHAT, description="water stays in the drum"):
    return open_ticket(session, customer_id=customer.id, device_id=device.id, source=source, category="E21",
                       title="Drain pump blocked", dedup_key=key, author="bot", description=description)


def test_open_ticket_numbers_it_and_records_creation(session, factory):
    customer = factory.customer()
    device = factory.device(customer)
    ticket, created = _open(session, customer, device)
    assert created
    assert ticket.number == f"T-{ticket.id:06d}"
    assert ticket.status is TicketStatus.OPEN
    assert [e.kind for e in ticket.events] == [TicketEventKind.CREATED]
    assert get_ticket_by_number(session, number=ticket.number.lower()) is ticket
    assert get_ticket_by_number(session, number=ticket.number, customer_id=customer.id + 999) is None



def test_a_ticket_with_its_device_and_events_takes_two_statements(session, factory, sql_statements):
    """A ticket's status, asked for in chat, reads the ticket joined with its device, then its events."""
    customer = factory.customer()
    with_device, _ = _open(session, customer, factory.device(customer))
    without_device, _ = open_ticket(session, customer_id=customer.id, device_id=None, source=TicketSource.API,
                                    category="general", title="Invoice address", dedup_key="topic:general",
                                    author="api")
    session.flush()
    expected = [(t.number, t.device.serial if t.device else None) for t in (with_device, without_device)]
    assert expected[0][1] is not None and expected[1][1] is None
    session.expunge_all()
    for number, serial in expected:
        with sql_statements() as sent:
            found = get_ticket_by_number(session, number=number, customer_id=customer.id)
            seen = (found.device.serial if found.device else None, [e.kind for e in found.events])
        assert seen == (serial, [TicketEventKind.CREATED])
        assert len(sent) == 2, sent


def test_second_report_of_same_open_problem_is_added_to_the_open_ticket(session, factory):
    customer = factory.customer()
    device = factory.device(customer)
    first, _ = _open(session, customer, device)
    again, created = _open(session, customer, device, description="still not draining")
    assert not created and again.id == first.id
    assert again.events[-1].kind is TicketEventKind.CUSTOMER_CONTACT
    assert again.events[-1].body == "still not draining"
    other_problem, created = _open(session, customer, device, key="fault:E24")
    assert created and other_problem.id != first.id
    assert len(list_tickets(session, customer_id=customer.id, only_open=True)) == 2


def test_closed_problem_can_be_reported_again_and_reopening_a_duplicate_conflicts(session, factory):
    customer = factory.customer()
    device = factory.device(customer)
    first, _ = _open(session, customer, device)
    change_ticket_status(session, ticket=first, status=TicketStatus.RESOLVED, author="agent")
    assert first.resolved_at is not None and first.open_dedup_key is None

    second, created = _open(session, customer, device)
    assert created and second.id != first.id
    with pytest.raises(ConflictError):
        change_ticket_status(session, ticket=first, status=TicketStatus.OPEN, author="agent")


def test_status_workflow_refuses_impossible_moves(session, factory):
    customer = factory.customer()
    ticket, _ = _open(session, customer, factory.device(customer))
    change_ticket_status(session, ticket=ticket, status=TicketStatus.CLOSED, author="agent")
    with pytest.raises(InvalidTransitionError):
        change_ticket_status(session, ticket=ticket, status=TicketStatus.RESOLVED, author="agent")
    assert ticket.events[-1].data == {"from": "open", "to": "closed"}


@pytest.mark.parametrize("text,expected", [("T-000123", "T-000123"), ("t-123", "T-000123"), ("000045", "T-000045"),
                                           ("ticket", None), ("1234567890123", None)])
def test_normalise_ticket_number(text, expected):
    assert normalise_ticket_number(text) == expected


@pytest.mark.parametrize("text,code", [("it shows E24 on the display", "E24"), ("won't drain, water left inside", "E21"),
                                       ("the whole thing is shaking and banging on spin", "E41"),
                                       ("something odd", None)])
def test_match_fault_by_code_or_keywords(session, factory, text, code):
    model = factory.models()["WM80"]
    fault = match_fault(session, model_id=model.id, text=text)
    assert (fault.code if fault else None) == code


def test_concurrent_reports_open_exactly_one_ticket(database_url):
    """Two processes' worth of sessions racing to open the same ticket: the database keeps one."""
    engine = make_engine(database_url)
    with Session(engine) as setup:
        from tests.crm_store.conftest import Factory

        f = Factory(setup)
        customer = f.customer()
        device = f.device(customer, model_code="FR50")
        setup.commit()
        ids = (customer.id, device.id)

    results: list[tuple[int, bool]] = []
    barrier = threading.Barrier(6)

    def report() -> None:
        with Session(engine) as s:
            barrier.wait()
            ticket, created = open_ticket(s, customer_id=ids[0], device_id=ids[1], source=TicketSource.DEVICE,
                                          category="E01", title="Too warm", dedup_key="fault:E01", author="device")
            s.commit()
            results.append((ticket.id, created))

    threads = [threading.Thread(target=report) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len({tid for tid, _ in results}) == 1
        assert sum(created for _, created in results) == 1
        with Session(engine) as s:
            assert len(list_tickets(s, device_id=ids[1])) == 1
    finally:
        engine.dispose()
