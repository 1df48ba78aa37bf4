"""A proactive message is shown once: racing deliveries (tabs, greetings, retried pushes, several workers)
claim it with conditional UPDATEs, and only one claim wins."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select

from crm_store.db import session_scope
from crm_store.enums import ProactiveKind, ProactiveStatus, TicketEventKind, TicketSource
from crm_store.models import ProactiveMessage, TicketEvent, utcnow
from crm_store.repositories.proactive import (
    MAX_ATTEMPTS,
    claim_for_delivery,
    claim_for_push,
    get_message,
    release_push,
)
from crm_store.repositories.tickets import open_ticket
from tests.crm_store.conftest import Factory
from tests.races import race

ROUNDS = 20
RACERS = 6


def outbox_message(url: str, status: ProactiveStatus = ProactiveStatus.PENDING) -> int:
    with session_scope(url) as s:
        f = Factory(s)
        customer = f.customer()
        device = f.device(customer)
        ticket, _ = open_ticket(s, customer_id=customer.id, device_id=device.id, source=TicketSource.DEVICE,
                                category="E21", title="Drain pump blocked", dedup_key="fault:E21", author="device")
        message = ProactiveMessage(customer_id=customer.id, ticket_id=ticket.id, kind=ProactiveKind.DEVICE_FAULT,
                                   status=status, safety_critical=True)
        s.add(message)
        s.flush()
        return message.id


def deliver(url: str, message_id: int, conversation_id: str) -> bool:
    """What the bot's action does: claim, commit, and only then show."""
    with session_scope(url) as s:
        message = get_message(s, message_id=message_id)
        return claim_for_delivery(s, message, channel="socketio", conversation_id=conversation_id)


def notified_events(url: str, message_id: int) -> int:
    with session_scope(url) as s:
        message = get_message(s, message_id=message_id)
        return s.scalar(select(func.count(TicketEvent.id)).where(
            TicketEvent.ticket_id == message.ticket_id, TicketEvent.kind == TicketEventKind.CUSTOMER_NOTIFIED)) or 0


@pytest.mark.parametrize("status", [ProactiveStatus.PENDING, ProactiveStatus.HELD])
def test_of_tabs_delivering_one_message_at_once_exactly_one_shows_it(database_url, status):
    for _ in range(ROUNDS):
        message_id = outbox_message(database_url, status)
        outcomes = race(RACERS, lambda i: deliver(database_url, message_id, f"tab-{i}"))
        assert all(o.ok for o in outcomes), outcomes
        assert [o.value for o in outcomes].count(True) == 1, outcomes
        with session_scope(database_url) as s:
            message = get_message(s, message_id=message_id)
            winner = next(i for i, o in enumerate(outcomes) if o.value)
            assert (message.status, message.conversation_id, message.attempts) == (ProactiveStatus.SENT, f"tab-{winner}", 1)
        assert notified_events(database_url, message_id) == 1


def test_of_workers_pushing_one_message_exactly_one_takes_it(database_url):
    def push(message_id: int, i: int) -> bool:
        with session_scope(database_url) as s:
            return claim_for_push(s, message_id=message_id, conversation_id=f"tab-{i}")

    for _ in range(ROUNDS):
        message_id = outbox_message(database_url)
        outcomes = race(RACERS, lambda i: push(message_id, i))
        assert [o.value for o in outcomes].count(True) == 1, outcomes


def test_a_push_in_flight_keeps_the_message_for_its_own_conversation(database_url):
    message_id = outbox_message(database_url)
    with session_scope(database_url) as s:
        assert claim_for_push(s, message_id=message_id, conversation_id="tab-A")
    assert not deliver(database_url, message_id, "tab-B")  # a greeting in another tab waits for the push
    assert deliver(database_url, message_id, "tab-A")
    assert not deliver(database_url, message_id, "tab-A")  # a retried trigger says nothing
    # A lease that ran out (the worker died mid-push) no longer blocks the other tabs.
    other = outbox_message(database_url)
    with session_scope(database_url) as s:
        assert claim_for_push(s, message_id=other, conversation_id="tab-A", lease=dt.timedelta(seconds=-1))
    assert deliver(database_url, other, "tab-B")


def test_failed_pushes_are_recorded_and_bounded(database_url):
    message_id = outbox_message(database_url)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with session_scope(database_url) as s:
            assert claim_for_push(s, message_id=message_id, conversation_id="tab-A")
        with session_scope(database_url) as s:
            assert release_push(s, message_id=message_id, conversation_id="tab-A", error=f"Rasa answered 500 ({attempt})",
                                retry_at=utcnow())
            # A second release by the same push (a retried callback) changes nothing.
            assert not release_push(s, message_id=message_id, conversation_id="tab-A", error="again", retry_at=utcnow())
        with session_scope(database_url) as s:
            message = get_message(s, message_id=message_id)
            assert message.attempts == attempt and message.last_error == f"Rasa answered 500 ({attempt})"
            assert message.claimed_by is None
    assert message.status is ProactiveStatus.HELD and message.reason == "delivery_failed"
    with session_scope(database_url) as s:  # held: no worker takes it again; the next chat shows it
        assert not claim_for_push(s, message_id=message_id, conversation_id="tab-A")
    assert deliver(database_url, message_id, f"tab-{uuid.uuid4().hex[:4]}")


def test_racing_verifications_of_one_chat_link_it_once(database_url):
    from crm_store.models import ChannelIdentity
    from crm_store.repositories.customers import link_identity

    with session_scope(database_url) as s:
        customer_id = Factory(s).customer().id

    def link(sender: str) -> int:
        with session_scope(database_url) as s:
            return link_identity(s, channel="socketio", external_id=sender, customer_id=customer_id).id

    for _ in range(ROUNDS // 2):
        sender = f"tab-{uuid.uuid4().hex[:8]}"
        outcomes = race(4, lambda i: link(sender))
        assert all(o.ok for o in outcomes) and len({o.value for o in outcomes}) == 1, outcomes
        with session_scope(database_url) as s:
            assert len(s.scalars(select(ChannelIdentity).where(ChannelIdentity.external_id == sender)).all()) == 1
