"""An unverified chat's request for a person queues a handoff without a ticket, rate-limited per conversation and
per client address; a verified customer's still opens (or joins) a ticket and is not limited."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from actions.escalation_limits import REFUSED_TEXT, EscalationLimits
from actions.handoff import ActionEscalate
from crm_store.db import session_scope
from crm_store.enums import HandoffStatus
from crm_store.escalation_policy import get_escalation_config
from crm_store.models import Handoff, Ticket
from crm_store.repositories.handoffs import close_handoff, get_active_handoff
from tests.actions.conftest import run_action, slots_of, tracker_from

PER_CLIENT, PER_CONVERSATION = 5, 2  # the defaults of ANONYMOUS_ESCALATIONS_PER_CLIENT / _PER_CONVERSATION (per hour)


@pytest.fixture(autouse=True)
def staffed(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    (tmp_path / "escalation.yml").write_text("staffed_hours:\n  always: true\n")
    monkeypatch.setenv("ESCALATION_CONFIG", str(tmp_path / "escalation.yml"))
    get_escalation_config.cache_clear()
    yield
    get_escalation_config.cache_clear()


def ask_for_a_person(sender: str, client: str | None = "client-a", slots: dict[str, Any] | None = None):
    """``/request_human`` in conversation ``sender`` from the client whose address hashes to ``client``
    (the metadata the input guard sets; nothing the customer could send)."""
    metadata = {"client": client} if client else {}
    tracker = tracker_from("greet_socketio", sender_id=sender, slots=slots or {},
                           latest_message={"text": "/request_human", "intent": {"name": "request_human", "confidence": 1.0},
                                           "entities": [], "metadata": metadata})
    return run_action(ActionEscalate(), tracker)


def counts(url: str) -> tuple[int, int]:
    with session_scope(url, write=False) as s:
        return s.scalar(select(func.count(Handoff.id))), s.scalar(select(func.count(Ticket.id)))


def hand_back(url: str, sender: str) -> None:
    with session_scope(url) as s:
        close_handoff(s, handoff=get_active_handoff(s, conversation_id=sender), status=HandoffStatus.HANDED_BACK,
                      author="agent")


def test_twenty_anonymous_requests_from_one_client_queue_at_most_the_limit_and_open_no_ticket(crm_url):
    handoffs_before, tickets_before = counts(crm_url)
    replies = [ask_for_a_person(f"anon-{i}") for i in range(20)]
    handoffs_after, tickets_after = counts(crm_url)
    assert handoffs_after - handoffs_before == PER_CLIENT
    assert tickets_after == tickets_before
    refused = [messages for _events, messages in replies if messages[-1]["text"] == REFUSED_TEXT]
    assert len(refused) == 20 - PER_CLIENT
    queued_events, queued_messages = replies[0]
    assert any(e.get("event") == "pause" for e in queued_events) and "ticket_number" not in slots_of(queued_events)
    assert "number 1 in the queue" in queued_messages[0]["text"] and "ticket" not in queued_messages[0]["text"]
    with session_scope(crm_url, write=False) as s:
        handoff = get_active_handoff(s, conversation_id="anon-0")
        assert handoff.ticket_id is None and handoff.customer_id is None and handoff.packet["ticket"] is None
    # Another client address is not held back by the first one.
    _events, messages = ask_for_a_person("anon-other", client="client-b")
    assert messages[-1]["text"] != REFUSED_TEXT and counts(crm_url)[0] == handoffs_after + 1


def test_one_anonymous_conversation_queues_at_most_its_limit_even_after_each_handback(crm_url):
    handoffs_before, tickets_before = counts(crm_url)
    for _ in range(PER_CONVERSATION):
        ask_for_a_person("anon-repeat", client=None)
        hand_back(crm_url, "anon-repeat")
    _events, messages = ask_for_a_person("anon-repeat", client=None)
    assert messages[-1]["text"] == REFUSED_TEXT
    assert counts(crm_url) == (handoffs_before + PER_CONVERSATION, tickets_before)


def test_asking_again_while_waiting_is_not_counted(crm_url):
    for _ in range(10):
        _events, messages = ask_for_a_person("anon-waiting")
    assert messages[-1]["text"].startswith("You're already waiting for a person")
    assert ask_for_a_person("anon-next")[1][-1]["text"] != REFUSED_TEXT


def test_a_verified_customer_still_gets_a_ticket_and_is_not_limited(crm_url):
    handoffs_before, tickets_before = counts(crm_url)
    for _ in range(PER_CLIENT + 1):
        events, messages = ask_for_a_person("web-session-1", slots={"customer_id": 1.0, "customer_name": "Anna"})
        assert messages[-1]["text"] != REFUSED_TEXT
        hand_back(crm_url, "web-session-1")
    number = slots_of(events)["ticket_number"]
    with session_scope(crm_url, write=False) as s:
        ticket = s.scalar(select(Ticket).where(Ticket.number == number))
        assert ticket.customer_id == 1
    handoffs_after, tickets_after = counts(crm_url)
    assert handoffs_after - handoffs_before == PER_CLIENT + 1
    assert tickets_after - tickets_before == 1  # every escalation joins the customer's open general problem


def test_the_limits_are_shared_through_redis_by_every_action_server():
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/5"
    try:
        redis.Redis.from_url(url).ping()
    except redis.exceptions.ConnectionError:
        pytest.fail("Redis is expected on 127.0.0.1:6379")
    client = f"client-{uuid.uuid4().hex}"
    replicas = [EscalationLimits("100/hour", "3/hour", url), EscalationLimits("100/hour", "3/hour", url)]
    allowed = [replicas[i % 2].admit(conversation=f"c-{uuid.uuid4().hex}", client=client).allowed for i in range(8)]
    assert allowed == [True, True, True, False, False, False, False, False]
    assert sum(r.refused["client"] for r in replicas) == 5


def test_the_limits_count_in_a_redis_that_asks_for_a_password_under_the_deployment_prefix():
    """REDIS_PASSWORD was not passed on: every call failed to authenticate and was admitted (fail-open)."""
    from tests.redis_server import redis_with_password

    with redis_with_password("escalation-pass") as url:
        client = f"client-{uuid.uuid4().hex}"
        limits = [EscalationLimits("100/hour", "2/hour", url, redis_password="escalation-pass", key_prefix=p)
                  for p in ("east", "east", "west")]
        allowed = [limits[i % 2].admit(conversation=f"c-{uuid.uuid4().hex}", client=client).allowed for i in range(3)]
        assert allowed == [True, True, False]  # both action servers of one deployment count together
        assert limits[2].admit(conversation=f"c-{uuid.uuid4().hex}", client=client).allowed  # another deployment
