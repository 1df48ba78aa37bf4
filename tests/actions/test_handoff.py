"""Escalation triggers, the handoff packet, relaying agents' replies, handback and CSAT, from tracker snapshots."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from actions.agent_relay import ActionHandback, ActionRelayAgentMessages
from actions.customers import ActionGreet, ActionResumeRequest
from actions.fallback import ActionFallback
from actions.feedback import ActionSessionStart, ActionSubmitCsat, ValidateCsatForm, parse_score
from actions.handoff import ActionEscalate, frustration_score
from crm_store.db import session_scope
from crm_store.enums import (
    DeviceMessageKind,
    HandoffMessageKind,
    HandoffReason,
    HandoffStatus,
    TicketPriority,
    TicketSource,
    UserRole,
)
from crm_store.escalation_policy import get_escalation_config, load_config
from crm_store.models import CsatRating, Device, DeviceMessage, Handoff, Interaction, utcnow
from crm_store.repositories.customers import link_identity
from crm_store.repositories.devices import get_device_by_serial
from crm_store.repositories.handoffs import add_handoff_message, claim_handoff, close_handoff, get_active_handoff
from crm_store.repositories.tickets import open_ticket
from crm_store.repositories.users import create_user
from tests.actions.conftest import run_action, slots_of, tracker_from

SENDER = "web-session-1"


def write_config(path: pathlib.Path, extra: str = "", hours: str = "always: true") -> pathlib.Path:
    path.write_text(f"staffed_hours:\n  timezone: Europe/Berlin\n  {hours}\n{extra}")
    return path


@pytest.fixture(autouse=True)
def staffed(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pathlib.Path]:
    """The team is staffed around the clock unless a test says otherwise."""
    config = write_config(tmp_path / "escalation.yml")
    monkeypatch.setenv("ESCALATION_CONFIG", str(config))
    get_escalation_config.cache_clear()
    yield config
    get_escalation_config.cache_clear()


def use_config(monkeypatch: pytest.MonkeyPatch, path: pathlib.Path) -> None:
    monkeypatch.setenv("ESCALATION_CONFIG", str(path))
    get_escalation_config.cache_clear()


def user(text: str, intent: str, confidence: float = 0.95) -> dict[str, Any]:
    return {"event": "user", "text": text, "parse_data": {"intent": {"name": intent, "confidence": confidence}, "entities": []},
            "input_channel": "socketio"}


def conversation(*turns: dict[str, Any], slots: dict[str, Any] | None = None) -> Any:
    """A socket.io conversation whose events are ``turns``; the latest user turn is the latest message."""
    base = tracker_from("greet_socketio").events[:3]
    latest = next(t for t in reversed(turns) if t["event"] == "user")
    return tracker_from("greet_socketio", events=base + list(turns), slots=slots or {},
                        latest_message={"text": latest["text"], "intent": latest["parse_data"]["intent"], "entities": []})


def is_paused(events: list[dict[str, Any]]) -> bool:
    return any(e.get("event") == "pause" for e in events)


def handoffs(url: str) -> list[Handoff]:
    with session_scope(url) as s:
        found = list(s.query(Handoff).order_by(Handoff.id))
        s.expunge_all()
        return found


def link_anna(url: str) -> None:
    with session_scope(url) as s:
        link_identity(s, channel="socketio", external_id=SENDER, customer_id=1)


def test_asking_for_a_person_queues_a_handoff_with_its_packet_and_pauses_the_bot(crm_url):
    link_anna(crm_url)
    with session_scope(crm_url) as s:  # the fridge's latest reading, for the packet
        fridge = s.scalar(select(Device).where(Device.serial == "FR50-21000101"))
        s.add(DeviceMessage(device_id=fridge.id, kind=DeviceMessageKind.TELEMETRY, seq=1, ts=utcnow(),
                            body={"readings": {"compartment_temp_c": 9.1}}))
    tracker = conversation(user("hello", "greet"), {"event": "action", "name": "action_greet"},
                           {"event": "bot", "text": "Hi Anna, welcome back!"}, {"event": "action", "name": "action_listen"},
                           user("I want to talk to a person", "request_human"))
    events, messages = run_action(ActionEscalate(), tracker)
    assert is_paused(events)
    text = messages[0]["text"]
    assert text.startswith("Of course, I'm bringing in a person from our service team.")
    assert "You're number 1 in the queue; the expected wait is about 6 minutes." in text
    [handoff] = handoffs(crm_url)
    assert (handoff.reason, handoff.status, handoff.conversation_id) == (HandoffReason.CUSTOMER_REQUEST, HandoffStatus.QUEUED, SENDER)
    assert handoff.priority is TicketPriority.HIGH  # normal, one step up for a Gold customer
    packet = handoff.packet
    assert packet["customer"]["name"] == "Anna Schmidt" and packet["customer"]["loyalty_tier"] == "gold"
    assert {d["serial"] for d in packet["devices"]} == {"FR50-21000101", "WM80-23000102", "DW60-24000103"}
    fridge_state = next(d for d in packet["devices"] if d["serial"] == "FR50-21000101")
    assert fridge_state["readings"] == {"compartment_temp_c": 9.1} and fridge_state["readings_at"]
    assert [t["from"] for t in packet["transcript"]] == ["customer", "bot", "customer"]
    assert packet["transcript"][-1]["text"] == "I want to talk to a person"
    assert "greeted the customer" in packet["bot_tried"] and packet["ticket"] in text
    assert slots_of(events)["handoff_id"] == float(handoff.id)

    # Asking again does not queue a second handoff.
    events, messages = run_action(ActionEscalate(), tracker)
    assert is_paused(events) and "already waiting" in messages[0]["text"] and len(handoffs(crm_url)) == 1


def test_second_misunderstanding_in_a_row_escalates_the_first_does_not(crm_url):
    first = conversation(user("blorp fizzle", "nlu_fallback", 0.3))
    events, messages = run_action(ActionFallback(), first)
    assert not is_paused(events) and messages[0]["text"].startswith("Sorry, I didn't quite get that.")
    second = conversation(user("blorp fizzle", "nlu_fallback", 0.3), {"event": "action", "name": "action_fallback"},
                          {"event": "rewind"}, {"event": "action", "name": "action_listen"},
                          user("wump zork", "nlu_fallback", 0.2))
    events, messages = run_action(ActionFallback(), second)
    assert is_paused(events)
    assert messages[0]["text"].startswith("I'm sorry I keep misunderstanding you.")
    assert handoffs(crm_url)[0].reason is HandoffReason.REPEATED_FALLBACK


def test_switched_off_trigger_keeps_the_plain_fallback(crm_url, tmp_path, monkeypatch):
    use_config(monkeypatch, write_config(tmp_path / "off.yml", "triggers:\n  repeated_fallback: {enabled: false}\n"))
    second = conversation(user("blorp", "nlu_fallback", 0.3), {"event": "action", "name": "action_fallback"},
                          {"event": "action", "name": "action_listen"}, user("wump zork", "nlu_fallback", 0.2))
    events, messages = run_action(ActionFallback(), second)
    assert not is_paused(events) and handoffs(crm_url) == []
    assert messages[0]["text"].startswith("Sorry, I didn't quite get that.")


def test_frustration_score_counts_wording_shouting_and_repetition():
    phrases = load_config(pathlib.Path(__file__).parents[2] / "escalation.yml").triggers.frustration.phrases
    assert frustration_score(["my fridge is warm"], phrases=phrases, said_frustrated=False) == 0
    assert frustration_score(["this is useless"], phrases=phrases, said_frustrated=False) == 1
    assert frustration_score(["THIS IS RIDICULOUS, USELESS"], phrases=phrases, said_frustrated=False) == 3
    repeated = ["my washer does not drain at all", "hello?", "my washer does not drain at all"]
    assert frustration_score(repeated, phrases=phrases, said_frustrated=False) == 1


def test_mild_frustration_offers_a_person_strong_frustration_escalates(crm_url):
    events, messages = run_action(ActionEscalate(), conversation(user("hmm", "express_frustration")))
    assert not is_paused(events) and handoffs(crm_url) == []
    assert [b["payload"] for b in messages[0]["buttons"]] == ["/request_human", "/ask_capabilities"]
    events, messages = run_action(ActionEscalate(), conversation(user("this is useless!!", "express_frustration")))
    assert is_paused(events) and messages[0]["text"].startswith("I'm sorry this has been frustrating.")
    [handoff] = handoffs(crm_url)
    assert handoff.reason is HandoffReason.FRUSTRATION and handoff.priority is TicketPriority.HIGH


def test_repeating_oneself_angrily_escalates_from_the_fallback(crm_url):
    tracker = conversation(user("why won't it work", "nlu_fallback", 0.4), {"event": "action", "name": "utter_capabilities"},
                           {"event": "action", "name": "action_listen"}, user("WHY WON'T IT WORK", "nlu_fallback", 0.4))
    events, _ = run_action(ActionFallback(), tracker)
    assert is_paused(events) and handoffs(crm_url)[0].reason is HandoffReason.FRUSTRATION


def _open_fault_ticket(url: str, *, serial: str, code: str, priority: TicketPriority = TicketPriority.NORMAL) -> str:
    with session_scope(url) as s:
        device = get_device_by_serial(s, serial=serial)
        ticket, _ = open_ticket(s, customer_id=device.customer_id, device_id=device.id, source=TicketSource.DEVICE,
                                category=code, title=f"fault {code}", dedup_key=f"fault:{code}", author="device",
                                fault_code=code, priority=priority)
        return ticket.number


def test_safety_critical_fault_escalates_at_greeting_once_per_cooldown(crm_url):
    link_anna(crm_url)
    number = _open_fault_ticket(crm_url, serial="WM80-23000102", code="F05")  # leak near electrical parts
    events, messages = run_action(ActionGreet(), tracker_from("greet_socketio"))
    assert is_paused(events)
    assert messages[0]["text"].startswith("Hi Anna, welcome back!")
    assert messages[1]["text"].startswith("Because Leak detected near electrical parts can be dangerous")
    [handoff] = handoffs(crm_url)
    assert (handoff.reason, handoff.priority, handoff.trigger_key) == (HandoffReason.SAFETY_FAULT, TicketPriority.URGENT, f"safety_fault:{number}")
    assert handoff.category.value == "washing_machine" and handoff.packet["ticket"] == number

    with session_scope(crm_url) as s:  # the agent resolves it; the same fault does not escalate again today
        close_handoff(s, handoff=s.get(Handoff, handoff.id), status=HandoffStatus.RESOLVED, author="agent1")
    events, _ = run_action(ActionGreet(), tracker_from("greet_socketio"))
    assert not is_paused(events) and len(handoffs(crm_url)) == 1


def test_high_tier_customer_with_an_urgent_ticket_escalates_a_standard_one_does_not(crm_url):
    link_anna(crm_url)
    _open_fault_ticket(crm_url, serial="DW60-24000103", code="E24", priority=TicketPriority.URGENT)
    events, _ = run_action(ActionGreet(), tracker_from("greet_socketio"))
    assert is_paused(events) and handoffs(crm_url)[0].reason is HandoffReason.VIP_CRITICAL

    with session_scope(crm_url) as s:
        standard = s.execute(
            text("SELECT d.serial, c.id FROM devices d JOIN customers c ON c.id = d.customer_id "
                                          "WHERE c.loyalty_tier = 'standard' ORDER BY d.id LIMIT 1")).one()
        link_identity(s, channel="socketio", external_id="standard-1", customer_id=standard.id)
    _open_fault_ticket(crm_url, serial=standard.serial, code="X01", priority=TicketPriority.URGENT)
    events, _ = run_action(ActionGreet(), tracker_from("greet_socketio", sender_id="standard-1"))
    assert not any(h.conversation_id == "standard-1" for h in handoffs(crm_url))


def test_third_contact_about_the_same_ticket_within_days_escalates(crm_url):
    link_anna(crm_url)
    number = _open_fault_ticket(crm_url, serial="FR50-21000101", code="E01")
    tracker = tracker_from("greet_socketio", slots={"customer_id": 1.0, "pending_request": "ticket_status", "ticket_number": number})
    for attempt in range(3):
        events, messages = run_action(ActionResumeRequest(), tracker)
        assert messages[0]["text"].startswith(f"Ticket {number}")
        assert is_paused(events) == (attempt == 2)
    [handoff] = handoffs(crm_url)
    assert handoff.reason is HandoffReason.REPEAT_CONTACT and handoff.packet["ticket"] == number


def test_outside_staffed_hours_the_bot_offers_a_callback_and_keeps_serving(crm_url, tmp_path, monkeypatch):
    use_config(monkeypatch, write_config(tmp_path / "closed.yml", hours="days: {}"))
    link_anna(crm_url)
    events, messages = run_action(ActionEscalate(), conversation(user("get me a human", "request_human")))
    assert not is_paused(events)
    text = messages[0]["text"]
    assert text.startswith("Our service team is offline right now.")
    assert "call you back on +49 30 1234567" in text and "I'm still here" in text
    [handoff] = handoffs(crm_url)
    assert handoff.status is HandoffStatus.CALLBACK and handoff.active_key is None


def handoff_id(crm_url: str) -> int:
    return handoffs(crm_url)[0].id


def test_relay_delivers_each_agent_reply_once_and_handback_asks_for_csat(crm_url):
    link_anna(crm_url)
    run_action(ActionEscalate(), conversation(user("a person please", "request_human")))
    with session_scope(crm_url) as s:
        agent = create_user(s, username="maria", password="maria-password-1", role=UserRole.AGENT, full_name="Maria Lopez")
        handoff = get_active_handoff(s, conversation_id=SENDER)
        claim_handoff(s, handoff=handoff, user=agent)
        add_handoff_message(s, handoff=handoff, kind=HandoffMessageKind.AGENT, author="maria", body="Hello Anna, I'm on it.")
        add_handoff_message(s, handoff=handoff, kind=HandoffMessageKind.NOTE, author="maria", body="private: check warranty")
    tracker = conversation(user("hello?", "greet"))
    events, messages = run_action(ActionRelayAgentMessages(), tracker)
    # Issue 16, case 9: the customer is told who joined, once per handoff, before the first reply.
    assert [m["text"] for m in messages] == ["Maria from our service team has joined the chat.",
                                            "Maria: Hello Anna, I'm on it."]
    assert slots_of(events)["agent_joined"] == float(handoff_id(crm_url))
    assert run_action(ActionRelayAgentMessages(), tracker)[1] == []  # delivered once, notes never

    with session_scope(crm_url) as s:
        close_handoff(s, handoff=get_active_handoff(s, conversation_id=SENDER), status=HandoffStatus.RESOLVED, author="maria")
    events, messages = run_action(ActionHandback(), tracker)
    assert "resume" in [e["event"] for e in events]
    assert {"event": "active_loop", "name": "csat_form"} in [{k: e.get(k) for k in ("event", "name")} for e in events]
    assert slots_of(events)["requested_slot"] == "csat_score"
    assert messages[0]["text"].startswith("Maria has marked your request as solved")
    assert messages[1]["response"] == "utter_ask_csat_score"


@pytest.mark.parametrize("text,score", [("5", 5), ("4/5", 4), ("three", 3), ("⭐⭐", 2), ("1 - terrible", 1),
                                        ("show my devices", None), ("10", None), ("order ORD-2021-000101", None)])
def test_parse_score(text, score):
    assert parse_score(text) == score


def test_csat_form_is_not_rigid_and_the_rating_is_stored_against_ticket_and_conversation(crm_url):
    form = ValidateCsatForm()
    assert form.validate_csat_score("5", None, None, {}) == {"csat_score": "5"}
    assert form.validate_csat_score("what about my fridge?", None, None, {}) == {"csat_score": "skipped"}
    assert form.validate_csat_comment("no thanks", None, None, {}) == {"csat_comment": ""}

    link_anna(crm_url)
    run_action(ActionEscalate(), conversation(user("a person please", "request_human")))
    handoff = handoffs(crm_url)[0]
    tracker = tracker_from("greet_socketio", slots={"customer_id": 1.0, "handoff_id": float(handoff.id),
                                                    "csat_score": "4", "csat_comment": "quick and friendly"})
    events, messages = run_action(ActionSubmitCsat(), tracker)
    assert messages[0]["text"].startswith("Thank you for your rating!")
    assert slots_of(events) == {"csat_score": None, "csat_comment": None}
    with session_scope(crm_url) as s:
        [rating] = s.query(CsatRating).all()
        assert (rating.score, rating.ticket_id, rating.conversation_id, rating.comment, rating.customer_id) == (
            4, handoff.ticket_id, SENDER, "quick and friendly", 1)


def test_session_start_counts_the_conversation_and_carries_slots_over(crm_url):
    tracker = tracker_from("greet_socketio", slots={"customer_id": 1.0, "customer_name": "Anna"})
    events, _ = run_action(ActionSessionStart(), tracker)
    assert events[0]["event"] == "session_started" and events[-1] == {**events[-1], "event": "action", "name": "action_listen"}
    assert slots_of(events)["customer_id"] == 1.0
    with session_scope(crm_url) as s:
        started = s.query(Interaction).filter(Interaction.event == "conversation_started").one()
        assert (started.conversation_id, started.customer_id, started.channel) == (SENDER, 1, "socketio")


def test_queue_timeout_resumes_the_bot_and_says_how_the_team_will_get_back(crm_url):
    from actions.agent_relay import ActionQueueTimeout
    from crm_store.repositories.handoffs import move_to_callback

    link_anna(crm_url)
    run_action(ActionEscalate(), conversation(user("a person please", "request_human")))
    tracker = conversation(user("hello?", "greet"))
    events, messages = run_action(ActionQueueTimeout(), tracker)
    assert messages == [] and "resume" not in [e["event"] for e in events]  # still queued: stay paused, say nothing
    with session_scope(crm_url) as s:
        move_to_callback(s, handoff=get_active_handoff(s, conversation_id=SENDER), note="timeout")
    events, messages = run_action(ActionQueueTimeout(), tracker)
    assert "resume" in [e["event"] for e in events]
    assert "everyone in our team is still busy" in messages[0]["text"] and "call you back on +49 30 1234567" in messages[0]["text"]
    with session_scope(crm_url) as s:  # recorded before it was said: the sweeper's retries skip it
        handoff = s.scalars(select(Handoff).where(Handoff.conversation_id == SENDER)).one()
        assert handoff.timeout_told_at is not None and handoff.timeout_notice_due_at is None
    # Run again (the sweeper's retry after the answer was lost, or racing a slow first run): says nothing, and
    # still resumes the bot (if Rasa died before the first run's events reached the tracker, it would stay paused).
    events, messages = run_action(ActionQueueTimeout(), tracker)
    assert messages == [] and "resume" in [e["event"] for e in events]
    with session_scope(crm_url) as s:  # an agent took the callback: the next run keeps the conversation paused
        from crm_store.enums import HandoffStatus

        s.scalars(select(Handoff).where(Handoff.conversation_id == SENDER)).one().status = HandoffStatus.ASSIGNED
    events, messages = run_action(ActionQueueTimeout(), tracker)
    assert messages == [] and "resume" not in [e["event"] for e in events]


def test_a_new_session_keeps_a_conversation_with_an_agent_paused(crm_url):
    run_action(ActionEscalate(), conversation(user("a person please", "request_human")))
    events, _ = run_action(ActionSessionStart(), tracker_from("greet_socketio"))
    assert events[-1]["event"] == "pause"
    events, _ = run_action(ActionSessionStart(), tracker_from("greet_socketio", sender_id="someone-else"))
    assert not is_paused(events)
