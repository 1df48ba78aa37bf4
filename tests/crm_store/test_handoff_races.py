"""Handoff transitions raced from several threads: claim, close, sweep against claim, the singleton lock, the
retried queue-timeout notice.

Each racer has its own session (its own connection); a barrier releases them together. On PostgreSQL
(READ COMMITTED, row locks) the old read-then-write code let every racer win; the conditional UPDATEs let
exactly one.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from sqlalchemy import select

from crm_store.db import is_sqlite, session_scope
from crm_store.enums import HandoffMessageKind, HandoffReason, HandoffStatus, TicketPriority, UserRole
from crm_store.errors import ConflictError, InvalidTransitionError
from crm_store.locks import try_singleton
from crm_store.models import CsatRating, Handoff, HandoffMessage, User, utcnow
from crm_store.repositories.handoffs import (
    add_handoff_message,
    claim_handoff,
    close_handoff,
    create_handoff,
    get_handoff,
    list_overdue_handoffs,
    move_to_callback,
)
from crm_store.repositories.interactions import record_handoff_csat
from crm_store.repositories.timeout_notices import mark_told, pick_due_notices
from crm_store.repositories.users import create_user
from tests.races import race

ROUNDS = 20
AGENTS = 6


@pytest.fixture(scope="module")
def agents(database_url: str) -> list[int]:
    with session_scope(database_url) as s:
        tag = uuid.uuid4().hex[:6]
        return [create_user(s, username=f"race-{tag}-{i}", password="x" * 12, role=UserRole.AGENT).id
                for i in range(AGENTS)]


def queued(url: str, *, minutes_ago: float = 0) -> int:
    with session_scope(url) as s:
        handoff, _ = create_handoff(
            s, conversation_id=f"race-{uuid.uuid4().hex[:10]}", channel="socketio", customer_id=None, ticket_id=None,
            reason=HandoffReason.CUSTOMER_REQUEST, trigger_key="customer_request", priority=TicketPriority.NORMAL,
            language="en", category=None, summary="", packet={}, first_response_due_at=utcnow() + dt.timedelta(minutes=5),
        )
        handoff.created_at = utcnow() - dt.timedelta(minutes=minutes_ago)
        return handoff.id


def system_notes(url: str, handoff_id: int, text: str) -> list[str]:
    with session_scope(url) as s:
        return [m.author for m in s.scalars(select(HandoffMessage).where(
            HandoffMessage.handoff_id == handoff_id, HandoffMessage.kind == HandoffMessageKind.SYSTEM,
            HandoffMessage.body.contains(text)))]


def claim(url: str, handoff_id: int, user_id: int) -> int:
    with session_scope(url) as s:
        claim_handoff(s, handoff=get_handoff(s, handoff_id=handoff_id), user=s.get(User, user_id))
        return user_id


def test_of_agents_claiming_one_conversation_exactly_one_gets_it(database_url, agents):
    for _ in range(ROUNDS):
        handoff_id = queued(database_url)
        outcomes = race(AGENTS, lambda i: claim(database_url, handoff_id, agents[i]))
        winners = [o.value for o in outcomes if o.ok]
        assert len(winners) == 1, outcomes
        assert all(isinstance(o.error, ConflictError) for o in outcomes if not o.ok), outcomes
        with session_scope(database_url) as s:
            handoff = s.get(Handoff, handoff_id)
            assert (handoff.status, handoff.assigned_user_id) == (HandoffStatus.ASSIGNED, winners[0])
        assert len(system_notes(database_url, handoff_id, "joined the conversation")) == 1


def test_racing_closes_close_once(database_url, agents):
    """The owner resolving, the owner handing back and a supervisor resolving, all at once."""
    owner = agents[0]
    with session_scope(database_url) as s:
        owner_name = s.get(User, owner).username

    def close(handoff_id: int, i: int) -> HandoffStatus:
        outcome = HandoffStatus.HANDED_BACK if i % 2 else HandoffStatus.RESOLVED
        with session_scope(database_url) as s:
            handoff = get_handoff(s, handoff_id=handoff_id)
            close_handoff(s, handoff=handoff, status=outcome, author=f"closer-{i}",
                          assigned_user_id=owner if i < 2 else None)
            return outcome

    for _ in range(ROUNDS):
        handoff_id = queued(database_url)
        claim(database_url, handoff_id, owner)
        outcomes = race(4, lambda i: close(handoff_id, i))
        assert [o.ok for o in outcomes].count(True) == 1, outcomes
        # Lost the UPDATE (ConflictError), or read it closed already (SQLite runs them one after the other).
        assert all(isinstance(o.error, (ConflictError, InvalidTransitionError)) for o in outcomes if not o.ok), outcomes
        closing = (system_notes(database_url, handoff_id, "resolved the conversation")
                   + system_notes(database_url, handoff_id, "handed the conversation back"))
        assert len(closing) == 1, closing
        with session_scope(database_url) as s:
            handoff = s.get(Handoff, handoff_id)
            assert handoff.status is next(o.value for o in outcomes if o.ok) and handoff.active_key is None
            assert handoff.assignee.username == owner_name


def test_a_sweep_never_turns_a_fresh_claim_into_a_callback(database_url, agents):
    """The sweep (pick overdue, move each) against an agent's claim of the same overdue conversation."""

    def sweep(handoff_id: int) -> bool:
        with session_scope(database_url) as s:
            assert try_singleton(s, f"test-sweep-{handoff_id}")
            overdue = [h for h in list_overdue_handoffs(s, queued_before=utcnow() - dt.timedelta(minutes=30), lock=True)
                       if h.id == handoff_id]
            return any(move_to_callback(s, handoff=h, note="timeout") for h in overdue)

    told = claimed_first = 0
    for _ in range(ROUNDS):
        handoff_id = queued(database_url, minutes_ago=31)
        outcomes = race(2, lambda i: sweep(handoff_id) if i == 0 else claim(database_url, handoff_id, agents[1]))
        with session_scope(database_url) as s:
            handoff = s.get(Handoff, handoff_id)
            notes = [m.body for m in handoff.messages]
        moved = outcomes[0].value
        assert outcomes[0].ok, outcomes
        if outcomes[1].ok:  # the claim went through: before the sweep, or it claimed the fresh callback
            assert handoff.status is HandoffStatus.ASSIGNED and handoff.assigned_user_id == agents[1]
            if moved:
                assert notes == ["timeout", notes[1]] and "joined" in notes[1]  # callback first, then claimed
            else:
                claimed_first += 1
                assert len(notes) == 1 and "joined" in notes[0]
        else:
            assert isinstance(outcomes[1].error, ConflictError)
        if moved:
            told += 1
        if handoff.status is HandoffStatus.CALLBACK:
            assert moved and handoff.assigned_user_id is None and notes == ["timeout"]
    assert told + claimed_first == ROUNDS


def test_a_singleton_job_runs_in_one_session_at_a_time(database_url):
    racers, name = 5, f"job-{uuid.uuid4().hex[:6]}"
    tried = threading.Barrier(racers, timeout=30)

    # On SQLite a process's write units of work already take turns (crm_store.db.sqlite_writer_turn), so the
    # winner would hold the others outside until their busy timeout (10 s a round); read-only units of work run
    # side by side there, and that is where the job lock alone must decide. PostgreSQL races write units of work.
    write = not is_sqlite(database_url)

    def attempt(_i: int) -> bool:
        with session_scope(database_url, write=write) as s:
            got = try_singleton(s, name)
            tried.wait()  # everyone has tried while the winner still holds it
            return got

    for _ in range(5):
        outcomes = race(racers, attempt)
        assert [o.value for o in outcomes].count(True) == 1, outcomes
    with session_scope(database_url) as s:  # released with the winner's commit
        assert try_singleton(s, name)


def test_racing_csat_answers_for_one_handoff_store_one_rating(database_url):
    def rate(handoff_id: int, i: int) -> bool:
        with session_scope(database_url) as s:
            return record_handoff_csat(s, handoff_id=handoff_id, score=1 + i % 5, customer_id=None)[1]

    for _ in range(ROUNDS // 2):
        handoff_id = queued(database_url)
        outcomes = race(4, lambda i: rate(handoff_id, i))
        assert [o.value for o in outcomes].count(True) == 1, outcomes
        with session_scope(database_url) as s:
            assert len(s.scalars(select(CsatRating).where(CsatRating.handoff_id == handoff_id)).all()) == 1


def test_racing_sends_of_one_reply_with_one_idempotency_key_store_it_once(database_url, agents):
    """The console's retry and the load balancer's retry of one send arrive together: one row, one id for all."""
    def send(handoff_id: int, key: str) -> int:
        with session_scope(database_url) as s:
            handoff = get_handoff(s, handoff_id=handoff_id)
            return add_handoff_message(s, handoff=handoff, kind=HandoffMessageKind.AGENT, author="maria",
                                       body="On my way", client_key=key).id

    for _ in range(ROUNDS // 2):
        handoff_id, key = queued(database_url), uuid.uuid4().hex
        outcomes = race(4, lambda i: send(handoff_id, key))
        assert all(o.ok for o in outcomes) and len({o.value for o in outcomes}) == 1, outcomes
        with session_scope(database_url) as s:
            replies = s.scalars(select(HandoffMessage).where(HandoffMessage.handoff_id == handoff_id,
                                                             HandoffMessage.kind == HandoffMessageKind.AGENT)).all()
            assert [(m.id, m.client_key) for m in replies] == [(outcomes[0].value, key)]
            # Without a key each send is its own reply; another key is another reply.
            handoff = get_handoff(s, handoff_id=handoff_id)
            for client_key in (None, None, uuid.uuid4().hex):
                add_handoff_message(s, handoff=handoff, kind=HandoffMessageKind.AGENT, author="maria", body="Again",
                                    client_key=client_key)
        with session_scope(database_url) as s:
            assert len(s.scalars(select(HandoffMessage).where(HandoffMessage.handoff_id == handoff_id,
                                                              HandoffMessage.kind == HandoffMessageKind.AGENT)).all()) == 4


def callback(url: str) -> int:
    """A handoff the sweep just moved to callbacks: its "everyone is busy" notice is due."""
    handoff_id = queued(url, minutes_ago=31)
    with session_scope(url) as s:
        assert move_to_callback(s, handoff=get_handoff(s, handoff_id=handoff_id), note="timeout")
    return handoff_id


def test_racing_retries_of_a_timeout_notice_tell_the_customer_once(database_url):
    """Retries of due notices in several sessions at once (pick and commit, then the action's conditional
    record before it speaks), and the action's record alone raced (a retry meeting a slow first run)."""

    def retry(ours: set[int]) -> list[int]:
        with session_scope(database_url) as s:
            picked = [n.handoff_id for n in pick_due_notices(s) if n.handoff_id in ours]
        told = []
        for handoff_id in picked:  # Rasa would run the action now, each run in its own unit of work
            with session_scope(database_url) as s:
                if mark_told(s, handoff_id=handoff_id):
                    told.append(handoff_id)
        return told

    for _ in range(ROUNDS // 2):
        ours = {callback(database_url) for _ in range(3)}
        outcomes = race(4, lambda _i: retry(ours))
        assert all(o.ok for o in outcomes), outcomes
        assert sorted(h for o in outcomes for h in o.value) == sorted(ours), outcomes
    for _ in range(ROUNDS // 2):
        handoff_id = callback(database_url)

        def tell(_i: int) -> bool:
            with session_scope(database_url) as s:
                return mark_told(s, handoff_id=handoff_id)

        outcomes = race(4, tell)
        assert [o.value for o in outcomes].count(True) == 1, outcomes
        with session_scope(database_url) as s:
            handoff = s.get(Handoff, handoff_id)
            assert handoff.timeout_told_at is not None and handoff.timeout_notice_due_at is None
