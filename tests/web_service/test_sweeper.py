"""The queue-timeout notice ("everyone is busy") when Rasa is away: kept, retried with back-off, told once
(SQLite and PostgreSQL).

Rasa is the stand-in of tests/rasa_standin.py, a real HTTP server on a loopback port: it answers 503, runs the
project's real action_queue_timeout against the same database, or runs it and drops the connection unanswered.
The sweeps get their clock (``now``) from the test, so a back-off passes without waiting for it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from crm_store.db import session_scope
from crm_store.models import Handoff, utcnow
from crm_store.repositories.timeout_notices import FIRST_RETRY, MAX_RETRY, retry_delay
from tests.races import race
from tests.rasa_standin import RasaStandIn
from tests.web_service.test_handoffs import clean_queue, queue  # noqa: F401 - fixture
from web_service.settings import WebSettings, get_settings
from web_service.sweeper import sweep_once

BUSY = "everyone in our team is still busy"


@pytest.fixture
def rasa() -> Iterator[RasaStandIn]:
    standin = RasaStandIn("down")
    yield standin
    standin.close()


@pytest.fixture
def settings(clean_queue: str, rasa: RasaStandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebSettings]:  # noqa: F811
    """The web service's settings (its sweeper) and the actions' (run by the stand-in), on one database."""
    from actions.settings import get_settings as action_settings

    for key, value in {"DATABASE_URL": clean_queue, "SECRET_KEY": "k" * 40, "RASA_URL": rasa.url,
                       "RASA_TIMEOUT_SECONDS": "5", "ACTION_SERVER_TOKEN": "test-token"}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    action_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    action_settings.cache_clear()


def overdue(url: str) -> tuple[int, str]:
    """A handoff queued 31 minutes ago: (id, conversation id)."""
    handoff_id = queue(url)
    with session_scope(url) as s:
        handoff = s.get(Handoff, handoff_id)
        handoff.created_at = utcnow() - dt.timedelta(minutes=31)
        return handoff_id, handoff.conversation_id


def notice(url: str, handoff_id: int) -> tuple[dt.datetime | None, int, dt.datetime | None]:
    """(due at, failed attempts, told at) of the handoff's timeout notice."""
    with session_scope(url) as s:
        h = s.get(Handoff, handoff_id)
        return h.timeout_notice_due_at, h.timeout_notice_attempts, h.timeout_told_at


def calls(rasa: RasaStandIn, conversation: str) -> int:
    return sum(1 for conv, _route, name in rasa.calls if conv == conversation and name == "action_queue_timeout")


def told(rasa: RasaStandIn, conversation: str) -> int:
    return sum(BUSY in t for t in rasa.told(conversation))


def test_the_back_off_doubles_from_15_seconds_up_to_10_minutes():
    assert [retry_delay(n).total_seconds() for n in range(1, 8)] == [15, 30, 60, 120, 240, 480, 600]
    assert retry_delay(1) == FIRST_RETRY and retry_delay(10_000) == MAX_RETRY


def test_a_notice_rasa_missed_is_retried_after_a_back_off_and_told_once(settings, rasa):
    """The reported failure: the handoff became a callback, Rasa answered 503, the customer never heard."""
    url, t0 = settings.database_url, utcnow()
    handoff_id, conversation = overdue(url)
    assert sweep_once(settings, now=t0) == [conversation]
    assert calls(rasa, conversation) == 1 and told(rasa, conversation) == 0
    assert notice(url, handoff_id) == (t0 + dt.timedelta(seconds=15), 1, None)  # kept, due again in 15 s

    sweep_once(settings, now=t0 + dt.timedelta(seconds=10))  # not due yet: Rasa is not asked
    assert calls(rasa, conversation) == 1
    t1 = t0 + dt.timedelta(seconds=16)
    sweep_once(settings, now=t1)  # still down: the wait doubles
    assert calls(rasa, conversation) == 2 and notice(url, handoff_id) == (t1 + dt.timedelta(seconds=30), 2, None)

    rasa.mode = "up"
    t2 = t1 + dt.timedelta(seconds=31)
    assert sweep_once(settings, now=t2) == []  # moved once; told now
    assert calls(rasa, conversation) == 3 and told(rasa, conversation) == 1
    due, attempts, told_at = notice(url, handoff_id)
    assert due is None and attempts == 2 and told_at is not None
    sweep_once(settings, now=t2 + dt.timedelta(hours=1))  # nothing owed: Rasa is not asked again
    assert calls(rasa, conversation) == 3 and told(rasa, conversation) == 1


def test_a_notice_told_whose_answer_was_lost_is_not_told_again(settings, rasa):
    """Rasa ran the action (the customer heard it) and the connection dropped before the answer."""
    url, t0 = settings.database_url, utcnow()
    handoff_id, conversation = overdue(url)
    rasa.mode = "lost"
    assert sweep_once(settings, now=t0) == [conversation]
    assert told(rasa, conversation) == 1
    due, attempts, told_at = notice(url, handoff_id)
    assert told_at is not None and due is None and attempts == 0  # recorded by the action: no failure counted
    rasa.mode = "up"
    sweep_once(settings, now=t0 + dt.timedelta(hours=1))
    assert calls(rasa, conversation) == 1 and told(rasa, conversation) == 1


def test_the_owed_notice_is_told_not_a_newer_callback_of_the_same_conversation(settings, rasa):
    """During the outage a newer callback (a safety callback opened when a push could not be delivered) was
    added to the conversation: the action told that one, with its ticket, and the owed notice was retried for
    ever. It now tells the handoff whose notice is owed."""
    from crm_store.enums import HandoffReason, HandoffStatus

    url, t0 = settings.database_url, utcnow()
    handoff_id, conversation = overdue(url)
    sweep_once(settings, now=t0)  # Rasa down: owed
    with session_scope(url) as s:
        newer = Handoff(conversation_id=conversation, channel="socketio", customer_id=2, status=HandoffStatus.CALLBACK,
                        reason=HandoffReason.SAFETY_FAULT, trigger_key="safety_fault", summary="safety callback",
                        first_response_due_at=t0, packet={})
        s.add(newer)
        s.flush()
        newer_id = newer.id
    rasa.mode = "up"
    sweep_once(settings, now=t0 + dt.timedelta(minutes=1))
    assert told(rasa, conversation) == 1
    assert notice(url, handoff_id)[2] is not None and notice(url, handoff_id)[0] is None  # told, settled
    assert notice(url, newer_id) == (None, 0, None)
    sweep_once(settings, now=t0 + dt.timedelta(hours=2))
    assert calls(rasa, conversation) == 2  # nothing owed any more: no endless retry


def test_a_notice_rasa_never_takes_is_given_up_after_the_last_attempt(settings, rasa):
    """Retried for ever, "everyone is busy" would arrive hours late; the callback stays on the agents' list."""
    from crm_store.enums import HandoffStatus
    from crm_store.repositories.timeout_notices import MAX_ATTEMPTS

    url, now = settings.database_url, utcnow()
    handoff_id, conversation = overdue(url)
    for _ in range(MAX_ATTEMPTS + 3):
        sweep_once(settings, now=now)
        now += MAX_RETRY + dt.timedelta(seconds=1)
    assert calls(rasa, conversation) == MAX_ATTEMPTS
    assert notice(url, handoff_id) == (None, MAX_ATTEMPTS, None)
    with session_scope(url) as s:
        assert s.get(Handoff, handoff_id).status is HandoffStatus.CALLBACK


def test_a_callback_an_agent_took_during_the_outage_is_not_told(settings, rasa):
    from crm_store.models import User
    from crm_store.repositories.handoffs import claim_handoff, get_handoff

    url, t0 = settings.database_url, utcnow()
    handoff_id, conversation = overdue(url)
    sweep_once(settings, now=t0)
    with session_scope(url) as s:
        agent = s.query(User).filter(User.username == "agent1").one()
        claim_handoff(s, handoff=get_handoff(s, handoff_id=handoff_id), user=agent)
    rasa.mode = "up"
    sweep_once(settings, now=t0 + dt.timedelta(hours=1))
    assert calls(rasa, conversation) == 1 and told(rasa, conversation) == 0


def test_after_an_outage_the_first_failure_ends_the_run_and_the_rest_are_tried_next_time(settings, rasa):
    """With Rasa away each call could wait for its timeout: one failed call per sweep, the others stay due."""
    url, t0 = settings.database_url, utcnow()
    waiting = [overdue(url) for _ in range(3)]
    sweep_once(settings, now=t0)
    assert sum(calls(rasa, conv) for _id, conv in waiting) == 1
    assert sorted(notice(url, hid)[1] for hid, _conv in waiting) == [0, 0, 1]
    assert all(notice(url, hid)[0] is not None for hid, _conv in waiting)
    rasa.mode = "up"
    sweep_once(settings, now=t0 + dt.timedelta(seconds=16))
    assert [told(rasa, conv) for _id, conv in waiting] == [1, 1, 1]


def test_sweeps_racing_after_an_outage_tell_each_customer_once(settings, rasa):
    """Several replicas' sweeps (threads, each its own session) retry the same due notices at once."""
    url, t0 = settings.database_url, utcnow()
    waiting = [overdue(url) for _ in range(4)]
    sweep_once(settings, now=t0)  # Rasa is down: one call failed, every notice is still owed
    rasa.mode = "up"
    for round_ in range(1, 4):
        later = t0 + dt.timedelta(minutes=10 * round_)
        outcomes = race(4, lambda _i: sweep_once(settings, now=later))
        assert all(o.ok for o in outcomes), outcomes
    for handoff_id, conversation in waiting:
        assert told(rasa, conversation) == 1, rasa.told(conversation)
        due, _attempts, told_at = notice(url, handoff_id)
        assert due is None and told_at is not None
