"""A verified chat's link to its customer lasts VERIFICATION_TTL_MINUTES, decided by the CRM's chat-link row:
after it no devices, tickets or contact details are shown, the bot asks to verify again, and no proactive
message is pushed to, or shown in, that chat."""

from __future__ import annotations

import asyncio
import datetime as dt

from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select, update

from actions.base import VERIFICATION_EXPIRED
from actions.customers import ActionGreet, ActionResumeRequest, ValidateVerifyForm
from actions.proactive import ActionNotifyDeviceFault
from actions.tickets import ValidateProblemForm
from crm_store.db import session_scope
from crm_store.enums import ProactiveStatus
from crm_store.models import ChannelIdentity, utcnow
from crm_store.repositories.customers import link_identity
from crm_store.repositories.proactive import reachable_identity
from tests.actions.conftest import DOMAIN, run_action, slots_of, tracker_from
from tests.actions.test_proactive import device_fault, link_anna, outbox, pushed

TTL = dt.timedelta(minutes=30)  # the default of VERIFICATION_TTL_MINUTES


def verified_ago(url: str, sender: str, age: dt.timedelta, customer_id: int = 1) -> None:
    """The chat ``sender`` was verified as the customer ``age`` ago (the link row's server-side time)."""
    with session_scope(url) as s:
        link_identity(s, channel="socketio", external_id=sender, customer_id=customer_id)
        s.execute(update(ChannelIdentity).where(ChannelIdentity.external_id == sender)
                  .values(verified_at=utcnow() - age, last_seen_at=utcnow()))


def asks_for(form, tracker, events) -> list[str]:
    """The slots the form still needs once these events are applied (what Rasa's form asks next)."""
    tracker.add_slots(events)
    return asyncio.run(form.required_slots([], CollectingDispatcher(), tracker, DOMAIN))


def texts(messages: list[dict]) -> str:
    return "\n".join(str(m.get("text") or "") for m in messages)


def test_a_verification_within_its_time_still_answers(crm_url):
    verified_ago(crm_url, "web-session-10", TTL - dt.timedelta(minutes=1))
    events, messages = run_action(ActionResumeRequest(), tracker_from("linked_request", slots={"pending_request": "list_devices"}))
    assert messages[0]["text"].startswith("You have 3 appliances registered with us:")
    assert "customer_id" not in slots_of(events)


def test_an_expired_verification_shows_no_devices_and_asks_to_verify_again(crm_url):
    verified_ago(crm_url, "web-session-10", TTL + dt.timedelta(minutes=1))
    # The conversation still holds customer_id from back then: it counts for nothing.
    tracker = tracker_from("linked_request", slots={"pending_request": "list_devices", "requested_slot": None},
                           latest_message={"text": "what devices do I have?", "intent": {"name": "list_devices"},
                                           "entities": []},
                           active_loop={"name": "verify_form"})
    events, messages = run_action(ValidateVerifyForm(), tracker)
    slots = slots_of(events)
    assert slots["customer_id"] is None and slots["customer_name"] is None
    assert asks_for(ValidateVerifyForm(), tracker, events)[:2] == ["verify_email", "verify_reference"]
    assert messages[0]["text"] == VERIFICATION_EXPIRED

    # Whatever runs next in that conversation (even with the stale slot) reads nothing of the account.
    events, messages = run_action(ActionResumeRequest(), tracker_from("linked_request", slots={"pending_request": "list_devices"}))
    said = texts(messages)
    assert "appliances registered" not in said and "FrostLine" not in said
    assert "I can only do that for a verified customer" in said
    assert slots_of(events)["customer_id"] is None


def test_an_expired_verification_lists_no_devices_in_the_problem_form_and_greets_anonymously(crm_url):
    verified_ago(crm_url, "web-session-3", TTL + dt.timedelta(seconds=30))
    tracker = tracker_from("problem_reported")
    events, messages = run_action(ValidateProblemForm(), tracker)
    slots = slots_of(events)
    assert slots["customer_id"] is None and not slots.get("device_serial")
    assert asks_for(ValidateProblemForm(), tracker, events)[:2] == ["verify_email", "verify_reference"]
    assert messages[0]["text"] == VERIFICATION_EXPIRED
    assert not any(m.get("buttons") for m in messages)  # no buttons naming the customer's appliances

    verified_ago(crm_url, "web-session-1", TTL + dt.timedelta(minutes=5))
    _, messages = run_action(ActionGreet(), tracker_from("greet_socketio", slots={"customer_id": 1.0, "customer_name": "Anna"}))
    assert "Anna" not in texts(messages)


def test_verifying_again_renews_the_link(crm_url):
    verified_ago(crm_url, "web-session-2", TTL + dt.timedelta(hours=2))
    events, messages = run_action(ValidateVerifyForm(), tracker_from("verify_reference"))
    assert slots_of(events)["customer_id"] == 1.0 and "I've found your account" in texts(messages)
    with session_scope(crm_url, write=False) as s:
        link = s.scalar(select(ChannelIdentity).where(ChannelIdentity.external_id == "web-session-2"))
        assert utcnow() - link.verified_at < dt.timedelta(minutes=1)


def test_a_proactive_message_is_neither_pushed_to_nor_shown_in_an_expired_chat(crm_url):
    message_id, number = device_fault(crm_url)
    verified_ago(crm_url, "web-session-9", TTL + dt.timedelta(minutes=1))
    with session_scope(crm_url, write=False) as s:
        assert reachable_identity(s, customer_id=1, verified_within=TTL) is None  # the worker holds it instead
    events, messages = run_action(ActionNotifyDeviceFault(), pushed(message_id))
    assert messages == [] and "customer_id" not in {k for k, v in slots_of(events).items() if v is not None}
    assert outbox(crm_url, message_id).status is ProactiveStatus.PENDING  # not consumed by whoever holds the chat

    link_anna(crm_url)  # verified again: the push reaches the chat and the message is shown once
    with session_scope(crm_url, write=False) as s:
        assert reachable_identity(s, customer_id=1, verified_within=TTL).external_id == "web-session-9"
    _, messages = run_action(ActionNotifyDeviceFault(), pushed(message_id))
    assert number in texts(messages)
    assert outbox(crm_url, message_id).status is ProactiveStatus.SENT


def test_the_ttl_is_a_setting(crm_url, monkeypatch):
    from actions.settings import get_settings

    verified_ago(crm_url, "web-session-10", dt.timedelta(minutes=10))
    monkeypatch.setenv("VERIFICATION_TTL_MINUTES", "5")
    get_settings.cache_clear()
    _, messages = run_action(ActionResumeRequest(), tracker_from("linked_request", slots={"pending_request": "list_devices"}))
    assert "appliances registered" not in texts(messages)
    monkeypatch.setenv("VERIFICATION_TTL_MINUTES", "15")
    get_settings.cache_clear()
    _, messages = run_action(ActionResumeRequest(), tracker_from("linked_request", slots={"pending_request": "list_devices"}))
    assert messages[0]["text"].startswith("You have 3 appliances registered with us:")
