"""Action tests: trackers built from JSON snapshots, a real (SQLite) CRM with the demo data."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from ruamel.yaml import YAML
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from crm_store.db import get_engine, session_scope
from crm_store.models import ChannelIdentity
from crm_store.repositories.customers import link_identity

SNAPSHOTS = pathlib.Path(__file__).parent / "snapshots"
DOMAIN: dict[str, Any] = YAML(typ="safe").load((pathlib.Path(__file__).parents[2] / "bot" / "domain.yml").read_text())


@pytest.fixture(scope="session")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One migrated SQLite CRM with the demo data; each test gets a copy."""
    from crm_store.demo_data import generate
    from crm_store.migrate import upgrade

    path = tmp_path_factory.mktemp("seed") / "crm.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    with session_scope(url) as session:
        generate(session, customers=40)
    get_engine(url).dispose()  # closing the last connection checkpoints the WAL into crm.db
    get_engine.cache_clear()
    return path


@pytest.fixture(autouse=True)
def fresh_escalation_limits() -> Iterator[None]:
    """Each test counts anonymous escalations from zero (the limits live in process memory without Redis)."""
    from actions.escalation_limits import get_escalation_limits

    get_escalation_limits.cache_clear()
    yield
    get_escalation_limits.cache_clear()


@pytest.fixture
def crm_url(seeded_db: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from actions.settings import get_settings

    path = tmp_path / "crm.db"
    shutil.copy(seeded_db, path)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("ACTION_SERVER_TOKEN", "test-token")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    get_engine.cache_clear()


def tracker_from(snapshot: str, **overrides: Any) -> Tracker:
    """A tracker from ``snapshots/<snapshot>.json``; ``slots=…``, ``latest_message=…`` etc. are merged in."""
    state = json.loads((SNAPSHOTS / f"{snapshot}.json").read_text())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(state.get(key), dict):
            state[key] = {**state[key], **copy.deepcopy(value)}
        else:
            state[key] = value
    return Tracker.from_dict(state)


def verified_as_slots_say(tracker: Tracker) -> None:
    """A tracker whose ``customer_id`` slot is set stands for a chat verified as that customer: the CRM gets the
    chat's link (verified now) unless the test made one itself (e.g. an expired one)."""
    customer_id, channel = tracker.get_slot("customer_id"), tracker.get_latest_input_channel()
    url = os.environ.get("DATABASE_URL")
    if customer_id is None or not channel or not url:
        return
    try:
        with session_scope(url, write=False) as session:  # read-only: some tests hold the write lock
            linked = session.scalar(select(ChannelIdentity.id).where(
                ChannelIdentity.channel == channel, ChannelIdentity.external_id == tracker.sender_id))
        if linked is None:
            with session_scope(url) as session:
                link_identity(session, channel=channel, external_id=tracker.sender_id, customer_id=int(customer_id))
    except (OSError, SQLAlchemyError):
        pass  # a test of an unreachable CRM: the action itself meets the failure


def run_action(action: Any, tracker: Tracker) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Runs an action; returns (events, messages sent to the customer)."""
    verified_as_slots_say(tracker)
    dispatcher = CollectingDispatcher()
    events = asyncio.run(action.run(dispatcher, tracker, DOMAIN))
    return events, dispatcher.messages


def slots_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e["value"] for e in events if e.get("event") == "slot"}


def validated_slots(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The slots as a form's validation left them: before the closing action it ran in place when the form was
    complete (``CrmFormValidationAction.closing_action``), whose events follow the last ``requested_slot``."""
    asked = [i for i, e in enumerate(events) if e.get("event") == "slot" and e.get("name") == "requested_slot"]
    return slots_of(events[: asked[-1] + 1] if asked else events)


LISTEN_NEXT = {"event": "followup", "name": "action_listen"}


def closed_in_place(events: list[dict[str, Any]]) -> bool:
    """Whether the validation answered for the form's closing action and ends the turn (no second call)."""
    return any({k: e.get(k) for k in ("event", "name")} == LISTEN_NEXT for e in events)
