"""The console API under concurrency and a frozen Rasa, through a real HTTP server (SQLite and PostgreSQL).

Rasa is a stand-in on a loopback port (tests/rasa_standin.py) that runs the project's real actions
against the same database, or answers 503, or never answers.
"""

from __future__ import annotations

import datetime as dt
import threading

import httpx
import pytest
from sqlalchemy import select

from crm_store.db import session_scope
from crm_store.enums import HandoffMessageKind, HandoffStatus
from crm_store.errors import ConflictError
from crm_store.models import Handoff, HandoffMessage, User, utcnow
from crm_store.repositories.handoffs import claim_handoff, get_handoff
from tests.races import race
from tests.rasa_standin import RasaStandIn
from tests.web_service.live import bearer, live_server, wait_for
from tests.web_service.test_handoffs import clean_queue, queue  # noqa: F401 - fixture
from web_service.settings import get_settings

PAIRS = 20
BUSY = "everyone in our team is still busy"


@pytest.fixture
def rasa():  # type: ignore[no-untyped-def]
    standin = RasaStandIn("up")
    yield standin
    standin.close()


def notes(url: str, handoff_id: int, text: str) -> int:
    with session_scope(url) as s:
        return len(s.scalars(select(HandoffMessage).where(
            HandoffMessage.handoff_id == handoff_id, HandoffMessage.kind == HandoffMessageKind.SYSTEM,
            HandoffMessage.body.contains(text))).all())


def conversation_of(url: str, handoff_id: int) -> str:
    with session_scope(url) as s:
        return s.get(Handoff, handoff_id).conversation_id


def test_two_agents_claiming_one_conversation_at_once_one_gets_it(clean_queue, rasa, monkeypatch):
    """The reported failure: both agents got 200 (19 of 20 pairs on PostgreSQL) and "assignee" was null."""
    url = clean_queue
    with live_server(monkeypatch, url, rasa.url) as base:
        users = ["agent1", "super1"]
        headers = [bearer(base, u) for u in users]
        for _ in range(PAIRS):
            handoff_id = queue(url)
            outcomes = race(2, lambda i: httpx.post(f"{base}/api/handoffs/{handoff_id}/claim", headers=headers[i], timeout=30))
            assert all(o.ok for o in outcomes), outcomes
            codes = [o.value.status_code for o in outcomes]
            assert sorted(codes) == [200, 409], [o.value.text for o in outcomes]
            winner = codes.index(200)
            body = outcomes[winner].value.json()
            assert body["status"] == "assigned" and body["assignee"] == users[winner]
            assert notes(url, handoff_id, "joined the conversation") == 1


def test_racing_resolve_and_handback_close_once_and_hand_back_once(clean_queue, rasa, monkeypatch):
    url = clean_queue
    with live_server(monkeypatch, url, rasa.url) as base:
        owner, supervisor = bearer(base, "agent1"), bearer(base, "super1")
        calls = [("resolve", owner), ("handback", owner), ("resolve", supervisor)]
        for _ in range(PAIRS // 2):
            handoff_id = queue(url)
            assert httpx.post(f"{base}/api/handoffs/{handoff_id}/claim", headers=owner, timeout=30).status_code == 200
            outcomes = race(3, lambda i: httpx.post(f"{base}/api/handoffs/{handoff_id}/{calls[i][0]}", json={},
                                                    headers=calls[i][1], timeout=30))
            codes = [o.value.status_code for o in outcomes]
            assert set(codes) <= {200, 409} and 200 in codes, [o.value.text for o in outcomes]
            assert notes(url, handoff_id, "resolved the conversation") + notes(url, handoff_id, "handed the conversation back") == 1
            told = rasa.told(conversation_of(url, handoff_id))
            # Racing handbacks run the action more than once; the customer is handed back and asked once.
            assert sum("handed you back" in t for t in told) == 1 and told.count("utter_ask_csat_score") == 1, told
            with session_scope(url) as s:
                assert s.get(Handoff, handoff_id).bot_resumed_at is not None


def test_sweeps_in_two_replicas_tell_each_waiting_customer_once_and_never_take_a_claim(clean_queue, rasa, monkeypatch):
    from web_service.sweeper import sweep_once

    url = clean_queue
    with live_server(monkeypatch, url, rasa.url):
        settings = get_settings()
        with session_scope(url) as s:
            agent_id = s.scalar(select(User.id).where(User.username == "agent1"))
        for _ in range(5):
            handoffs = [queue(url) for _ in range(4)]
            with session_scope(url) as s:
                for handoff_id in handoffs:
                    s.get(Handoff, handoff_id).created_at = utcnow() - dt.timedelta(minutes=31)

            def claim_first_two() -> list[int]:
                claimed = []
                for handoff_id in handoffs[:2]:
                    try:
                        with session_scope(url) as s:
                            claim_handoff(s, handoff=get_handoff(s, handoff_id=handoff_id), user=s.get(User, agent_id))
                        claimed.append(handoff_id)
                    except ConflictError:
                        pass
                return claimed

            outcomes = race(3, lambda i: sweep_once(settings) if i < 2 else claim_first_two())
            assert all(o.ok for o in outcomes), outcomes
            moved = outcomes[0].value + outcomes[1].value
            assert len(moved) == len(set(moved)), moved  # no conversation moved (and told) by both replicas
            for handoff_id in handoffs:
                conversation = conversation_of(url, handoff_id)
                told = [t for t in rasa.told(conversation) if BUSY in t]
                callback_notes = notes(url, handoff_id, "moved to callbacks")
                assert callback_notes == (conversation in moved)
                with session_scope(url) as s:
                    handoff = s.get(Handoff, handoff_id)
                if handoff.status is HandoffStatus.CALLBACK:
                    assert handoff.assigned_user_id is None and len(told) == 1
                else:  # claimed: before the sweep, or the callback right after it (then the bot stays quiet)
                    assert handoff.status is HandoffStatus.ASSIGNED and handoff.assigned_user_id == agent_id
                    assert len(told) <= callback_notes


def test_a_reply_saved_while_rasa_was_down_is_delivered_later_once_and_in_order(clean_queue, monkeypatch):
    url = clean_queue
    rasa = RasaStandIn("down")
    try:
        with live_server(monkeypatch, url, rasa.url, RELAY_RETRY_SECONDS="0.3") as base:
            agent = bearer(base, "agent1")
            handoff_id = queue(url)
            conversation = conversation_of(url, handoff_id)
            assert httpx.post(f"{base}/api/handoffs/{handoff_id}/claim", headers=agent, timeout=30).status_code == 200
            for body in ("first", "second"):
                resp = httpx.post(f"{base}/api/handoffs/{handoff_id}/messages", json={"body": body}, headers=agent, timeout=30)
                assert resp.status_code == 201 and resp.json()["delivered"] is False
            with session_scope(url) as s:  # the failed relays are counted on the waiting replies
                waiting = s.scalars(select(HandoffMessage).where(HandoffMessage.handoff_id == handoff_id,
                                                                HandoffMessage.kind == HandoffMessageKind.AGENT)).all()
                assert all(m.delivery_attempts >= 1 and "503" in (m.last_delivery_error or "") for m in waiting)
            rasa.mode = "up"
            # No new reply from the agent: the relay job of the web service delivers them.
            # The agent's lines only: the "<name> has joined" notice goes once per handoff through a slot of
            # Rasa's tracker, which this stand-in does not keep.
            def replies() -> list[str]:
                return [t.split(": ", 1)[1] for t in rasa.told(conversation) if ": " in t]

            wait_for(lambda: len(replies()) == 2, what="the relay job to deliver the saved replies")
            # Three replicas' relay jobs and a third reply, all at once.
            from web_service.relay import relay_once

            settings = get_settings()
            outcomes = race(4, lambda i: relay_once(settings) if i < 3 else httpx.post(
                f"{base}/api/handoffs/{handoff_id}/messages", json={"body": "third"}, headers=agent, timeout=30))
            assert all(o.ok for o in outcomes), outcomes
            wait_for(lambda: len(replies()) >= 3, what="the third reply")
            assert replies() == ["first", "second", "third"]
    finally:
        rasa.close()


def test_a_frozen_rasa_does_not_stop_the_api(clean_queue, monkeypatch):
    """Rasa accepts connections and never answers. Consoles poll the open conversation (its live
    transcript) and an agent's reply waits on Rasa; /health, tickets and the other console routes answer."""
    url = clean_queue
    rasa = RasaStandIn("hang")
    try:
        with live_server(monkeypatch, url, rasa.url, RASA_TIMEOUT_SECONDS="30") as base:
            agent = bearer(base, "agent1")
            handoff_id, other_id = queue(url), queue(url)
            assert httpx.post(f"{base}/api/handoffs/{handoff_id}/claim", headers=agent, timeout=10).status_code == 200
            background: list[httpx.Response | Exception] = []

            def call(method: str, path: str, **kwargs) -> None:  # type: ignore[no-untyped-def]
                try:
                    background.append(httpx.request(method, f"{base}{path}", headers=agent, timeout=60, **kwargs))
                except Exception as exc:  # noqa: BLE001 - asserted below
                    background.append(exc)

            pollers = [threading.Thread(target=call, args=("GET", f"/api/handoffs/{handoff_id}")) for _ in range(16)]
            pollers.append(threading.Thread(target=call, args=("POST", f"/api/handoffs/{handoff_id}/messages"),
                                            kwargs={"json": {"body": "one moment please"}}))
            for thread in pollers:
                thread.start()
            wait_for(lambda: rasa.hanging >= 1, what="a request to reach the frozen Rasa")
            # While Rasa hangs, everything that does not need it answers at once (8 s would be far too slow).
            quick = httpx.Client(base_url=base, headers=agent, timeout=8)
            assert quick.get("/health").status_code == 200
            assert quick.get("/api/tickets").status_code == 200
            assert quick.post("/api/tickets", json={"customer_id": 3, "category": "general", "title": "Still here?"}).status_code in (200, 201)
            assert quick.get("/api/handoffs").status_code == 200
            assert quick.post(f"/api/handoffs/{handoff_id}/notes", json={"body": "Rasa is slow"}).status_code == 201
            assert quick.post(f"/api/handoffs/{other_id}/claim", headers=bearer(base, "super1")).status_code == 200
            # The live transcript gives up quickly and falls back to the packet's copy.
            detail = wait_for(lambda: next((r for r in background if isinstance(r, httpx.Response)
                                            and r.request.method == "GET"), None), timeout=15, what="a transcript read")
            assert detail.status_code == 200 and detail.json()["transcript_live"] is False
            rasa.close()  # Rasa's connections drop: the reply waiting on it is kept for the relay job
            for thread in pollers:
                thread.join(60)
            reply = next(r for r in background if isinstance(r, httpx.Response) and r.request.method == "POST")
            assert reply.status_code == 201 and reply.json()["delivered"] is False
            assert all(isinstance(r, httpx.Response) and r.status_code in (200, 201) for r in background), background
    finally:
        rasa.close()
