"""Issue 14: an action waiting on the CRM does not stall the action server for other conversations.

A real action server (``python -m actions``) on a SQLite CRM whose write lock another connection holds:
a writing action (session start) and a writing form validator (verification links the chat) queue on the
lock in worker threads, while the server's /health and another conversation's form validation (CRM
reads) answer at once.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from crm_store.db import get_engine, session_scope
from crm_store.repositories.customers import link_identity
from tests.actions.conftest import DOMAIN, SNAPSHOTS
from tests.live import action_server, sqlite_write_lock

TOKEN = "actions-loop-token"


@pytest.fixture(scope="module")
def server(seeded_db: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, pathlib.Path]]:
    work = tmp_path_factory.mktemp("actions-loop")
    db = work / "crm.db"
    shutil.copy(seeded_db, db)
    with session_scope(f"sqlite:///{db}") as session:  # the snapshot "problem_reported" is a verified chat
        link_identity(session, channel="socketio", external_id="loop-other", customer_id=1)
    get_engine.cache_clear()
    with action_server({"DATABASE_URL": f"sqlite:///{db}", "ACTION_SERVER_TOKEN": TOKEN}, work) as url:
        yield url, db


def call(url: str, action: str, tracker: dict[str, Any], timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/webhook", timeout=timeout, headers={"Authorization": f"Bearer {TOKEN}"},
                      json={"next_action": action, "sender_id": tracker["sender_id"], "tracker": tracker,
                            "domain": DOMAIN, "version": "3.6.21"})


def snapshot(name: str, sender: str) -> dict[str, Any]:
    state = json.loads((SNAPSHOTS / f"{name}.json").read_text())
    return {**state, "sender_id": sender}


def symptom_to_ask(state: dict[str, Any]) -> dict[str, Any]:
    """A problem report that names the appliance but not what is wrong with it."""
    state["slots"] = {**state["slots"], "problem_text": "my washing machine"}
    state["latest_message"] = {**state["latest_message"], "text": "my washing machine"}
    return state


def test_an_action_waiting_on_a_locked_crm_does_not_stall_other_conversations(server):
    url, db = server
    answers: dict[str, httpx.Response] = {}

    def run(action: str, tracker: dict[str, Any]) -> None:
        answers[action] = call(url, action, tracker)

    with sqlite_write_lock(db):
        waiting = [threading.Thread(target=run, args=("action_session_start", snapshot("greet_socketio", "loop-start"))),
                   threading.Thread(target=run, args=("validate_verify_form", snapshot("verify_reference", "loop-verify")))]
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + 2.5
        probes = 0
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
            # A blocked loop would answer only when the lock is gone (seconds); 1 s leaves room for a busy CPU.
            assert time.perf_counter() - t0 < 1.0
            probes += 1
        # Another conversation's form: its validators read the CRM (which devices, which fault) and answer. (The
        # symptom is still to be asked: a complete form would open its ticket in this call, a write.)
        t0 = time.perf_counter()
        resp = call(url, "validate_problem_form", symptom_to_ask(snapshot("problem_reported", "loop-other")), timeout=8)
        assert time.perf_counter() - t0 < 3  # far below SQLite's 10 s busy timeout: reads take no lock
        assert resp.status_code == 200
        slots = {e["name"]: e["value"] for e in resp.json()["events"] if e["event"] == "slot"}
        assert slots["device_serial"] == "WM80-23000102" and slots["requested_slot"] == "symptom"
        assert all(t.is_alive() for t in waiting) and probes >= 3  # both writers were queued on the lock all along
    for thread in waiting:
        thread.join(20)
    start = answers["action_session_start"]
    assert start.status_code == 200 and start.json()["events"][0]["event"] == "session_started"
    verified = answers["validate_verify_form"]
    assert verified.status_code == 200
    assert {e["name"]: e["value"] for e in verified.json()["events"] if e["event"] == "slot"}["customer_id"] == 1.0


def test_a_form_links_a_known_chat_and_only_reads_when_the_customer_is_known(crm_url):
    """The identity lookup touches the chat's last-seen time (a write); with customer_id set it only reads,
    so it does not wait for a held write lock."""
    import datetime as dt

    from sqlalchemy import select

    from actions.tickets import ValidateProblemForm
    from crm_store.db import session_scope
    from crm_store.models import ChannelIdentity, utcnow
    from tests.actions.conftest import run_action, slots_of, tracker_from, validated_slots, verified_as_slots_say

    with session_scope(crm_url) as s:
        s.add(ChannelIdentity(channel="socketio", external_id="web-linked-7", customer_id=1,
                              last_seen_at=utcnow() - dt.timedelta(days=1)))
    anonymous = tracker_from("problem_reported", sender_id="web-linked-7", slots={"customer_id": None, "customer_name": None})
    slots = validated_slots(run_action(ValidateProblemForm(), anonymous)[0])
    assert slots["customer_id"] == 1.0 and slots["device_serial"] == "WM80-23000102"
    with session_scope(crm_url, write=False) as s:
        identity = s.scalar(select(ChannelIdentity).where(ChannelIdentity.external_id == "web-linked-7"))
        assert utcnow() - identity.last_seen_at < dt.timedelta(minutes=1)
    known = tracker_from("problem_reported", slots={"problem_text": "my washing machine"},
                         latest_message={"text": "my washing machine", "entities": []})
    verified_as_slots_say(known)  # its link exists before the lock is taken
    with sqlite_write_lock(crm_url.removeprefix("sqlite:///")):
        started = time.perf_counter()
        slots = slots_of(run_action(ValidateProblemForm(), known)[0])
        assert time.perf_counter() - started < 3 and slots["device_serial"] == "WM80-23000102"
        assert slots["requested_slot"] == "symptom"  # complete, it would open the ticket: a write


def test_an_unverified_chats_greeting_and_form_lookups_do_not_wait_for_the_write_lock(crm_url):
    """Most chats are not verified: their greeting and each form turn's identity look-up only read, so they are
    answered while another connection holds SQLite's write lock. They used to queue for that lock for nothing
    (under chat load, with every other writer of the action server)."""
    from actions.base import CrmFormValidationAction
    from actions.customers import ActionGreet
    from tests.actions.conftest import run_action, tracker_from

    visitor = tracker_from("greet_socketio")
    verifying = tracker_from("verify_reference")
    assert visitor.get_slot("customer_id") is None and verifying.get_slot("customer_id") is None
    with sqlite_write_lock(crm_url.removeprefix("sqlite:///")):
        events, messages = run_action(ActionGreet(), visitor)
        identity_events = CrmFormValidationAction._identity_events(verifying)
    assert events == [] and messages[0]["text"].startswith("Hi! I'm the service assistant")
    assert identity_events == []


def test_a_chat_verified_just_after_the_greeting_looked_is_greeted_as_the_customer(crm_url, monkeypatch):
    """The greeting decides from a read whether its turn writes; if the chat is verified right after that read,
    its read-only unit of work finds the customer, and the turn starts again as a write (it used to fail
    writing the visit in a read-only transaction: "can't reach our customer records")."""
    from actions import customers
    from actions.base import CRM_UNAVAILABLE
    from crm_store.repositories.customers import link_identity
    from tests.actions.conftest import run_action, slots_of, tracker_from

    looked = customers.resolving_writes

    def verified_meanwhile(tracker):
        decision = looked(tracker)
        with session_scope(crm_url) as session:  # the verification commits between the read and the action
            link_identity(session, channel="socketio", external_id=tracker.sender_id, customer_id=1)
        return decision

    monkeypatch.setattr(customers, "resolving_writes", verified_meanwhile)
    events, messages = run_action(customers.ActionGreet(), tracker_from("greet_socketio"))
    assert slots_of(events) == {"customer_id": 1.0, "customer_name": "Anna"}
    assert messages[0]["text"].startswith("Hi Anna, welcome back!")
    assert CRM_UNAVAILABLE not in [m["text"] for m in messages]
