"""Issue 16: conversations that don't derail. The form guard (actions/dialogue.py) on real trackers and a real
SQLite CRM with the demo data: digressions answered inside forms, a person or frustration winning wherever it sits
in the message, verification details in one line, list references, and unknown symptoms in the customer's words."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from actions.agent_relay import TEAM_NAME, display_name
from actions.customers import ValidateVerifyForm
from actions.dialogue import describes_problem, person_requested, safety_words, sounds_like_problem
from actions.fallback import ActionFallback
from actions.handoff import bot_tried
from actions.tickets import ValidateProblemForm
from crm_store.db import session_scope
from crm_store.enums import HandoffReason
from crm_store.escalation_policy import get_escalation_config
from crm_store.models import Handoff
from crm_store.repositories.tickets import list_tickets
from tests.actions.conftest import closed_in_place, run_action, slots_of, tracker_from, validated_slots

ANNA = {"customer_id": 1.0, "customer_name": "Anna"}


@pytest.fixture(autouse=True)
def staffed(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    config = tmp_path / "escalation.yml"
    config.write_text("staffed_hours:\n  always: true\n")
    monkeypatch.setenv("ESCALATION_CONFIG", str(config))
    get_escalation_config.cache_clear()
    yield
    get_escalation_config.cache_clear()


def user(text: str, intent: str, confidence: float = 0.95, entities: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"event": "user", "text": text, "input_channel": "rest",
            "parse_data": {"intent": {"name": intent, "confidence": confidence}, "entities": entities or []}}


def in_form(form: str, requested: str | None, text: str, intent: str, *, confidence: float = 0.95,
            slots: dict[str, Any] | None = None, first: str = "my washing machine won't drain",
            entities: list[dict[str, Any]] | None = None, from_text: bool = True) -> Any:
    """A tracker where ``form`` asked for ``requested`` and the customer answered ``text`` (``requested`` None:
    the message that starts the form)."""
    events: list[dict[str, Any]] = [{"event": "action", "name": "action_listen"}]
    if requested is not None:
        events += [user(first, "report_problem"), {"event": "action", "name": form},
                   {"event": "active_loop", "name": form},
                   {"event": "slot", "name": "requested_slot", "value": requested},
                   {"event": "action", "name": "action_listen"}]
    events.append(user(text, intent, confidence, entities))
    all_slots = {"requested_slot": requested, **(slots or {})}
    if requested is not None and from_text:
        events.append({"event": "slot", "name": requested, "value": text})  # what the from_text mapping did
        all_slots[requested] = text
    return tracker_from("problem_reported", sender_id="rest-dialogue-1", events=events, slots=all_slots,
                        latest_message={"text": text, "intent": {"name": intent, "confidence": confidence},
                                        "entities": entities or []},
                        active_loop={"name": form} if requested else {})


def texts(messages: list[dict[str, Any]]) -> str:
    return "\n".join(m.get("text") or m.get("response") or "" for m in messages)


def handoffs(url: str) -> list[Handoff]:
    with session_scope(url) as s:
        found = list(s.query(Handoff).order_by(Handoff.id))
        s.expunge_all()
        return found


# --- detectors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "my fridge is warm and I need to speak to a person please",
    "can I talk with someone from your team",
    "connect me to an agent",
    "real person please",
    "i wanna speak to a human",
    "the oven is broken. Let me chat with a human now",
])
def test_a_request_for_a_person_is_found_anywhere_in_the_message(text):
    assert person_requested(text)


@pytest.mark.parametrize("text", [
    "please send someone to fix it", "can someone come out and look at the boiler", "my fridge is warm",
    "what devices do I have?", "it makes a noise like a person knocking",
])
def test_a_technician_visit_or_a_plain_problem_is_no_request_for_a_person(text):
    assert not person_requested(text)


def test_safety_words_and_problem_descriptions():
    assert safety_words("I can smell gas near the boiler") and safety_words("the CO alarm is beeping")
    assert not safety_words("my fridge is warm")
    assert describes_problem("my dishwasher is making a loud noise")
    assert not describes_problem("I have a problem with my fridge") and not describes_problem("/report_problem")
    assert sounds_like_problem("hello, long story, my dishwashr makes a grinding noise every evening")


# --- case 1: unknown symptom, then a digression -----------------------------------------------------

def test_case1_an_unknown_symptom_becomes_a_ticket_in_the_customers_words_with_a_next_step(crm_url):
    text = "my dishwasher is making a loud noise"
    tracker = in_form("problem_form", None, text, "report_problem",
                      slots={**ANNA, "appliance": "dishwasher", "problem_text": text},
                      entities=[{"entity": "appliance", "value": "dishwasher", "start": 3, "end": 13}])
    events, messages = run_action(ValidateProblemForm(), tracker)
    slots = validated_slots(events)
    assert slots["device_serial"] == "DW60-24000103" and slots["symptom"] == text
    assert slots["requested_slot"] is None  # nothing is asked again
    # The complete form's ticket, opened in the same call.
    assert closed_in_place(events) and len(messages) == 1
    assert "I've put your description on the ticket as you wrote it" in messages[0]["text"]
    assert [b["title"] for b in messages[0]["buttons"]] == ["Book a technician", "Talk to a person"]
    with session_scope(crm_url) as s:
        [ticket] = [t for t in list_tickets(s, customer_id=1, only_open=True) if t.number == slots_of(events)["ticket_number"]]
        assert ticket.device.serial == "DW60-24000103" and ticket.events[0].body == text


def open_tickets(url: str) -> list[str]:
    with session_scope(url) as s:
        return sorted(t.number for t in list_tickets(s, customer_id=1, only_open=True))


def test_case1_asking_for_the_devices_while_the_symptom_is_asked_lists_them_and_files_nothing(crm_url):
    before = open_tickets(crm_url)
    tracker = in_form("problem_form", "symptom", "what devices do I have?", "list_devices",
                      slots={**ANNA, "device_serial": "DW60-24000103", "problem_text": "dishwasher problem"})
    events, messages = run_action(ValidateProblemForm(), tracker)
    slots = slots_of(events)
    assert "You have 3 appliances registered with us" in texts(messages)
    assert slots["symptom"] is None and slots["requested_slot"] == "symptom"  # the form asks again afterwards
    assert open_tickets(crm_url) == before


def test_a_product_question_inside_a_form_is_answered_from_the_faq(crm_url):
    tracker = in_form("problem_form", "symptom", "how often should I clean the filter?", "faq",
                      slots={**ANNA, "device_serial": "DW60-24000103"})
    tracker.latest_message["response_selector"] = {"faq": {"response": {"responses": [{"text": "Once a month."}]}}}
    events, messages = run_action(ValidateProblemForm(), tracker)
    assert texts(messages) == "Once a month." and slots_of(events)["symptom"] is None


# --- case 2 and 3: a person or frustration wins, inside and outside forms ------------------------------

def test_case2_a_request_for_a_person_inside_a_problem_report_hands_over_at_once(crm_url):
    text = "my fridge is warm and I need to speak to a person please"
    tracker = in_form("problem_form", None, text, "report_problem", slots={**ANNA, "problem_text": text})
    events, messages = run_action(ValidateProblemForm(), tracker)
    assert "I'm bringing in a person from our service team" in texts(messages)
    assert any(e["event"] == "pause" for e in events)
    assert {"event": "active_loop", "name": None} in [{k: e.get(k) for k in ("event", "name")} for e in events]
    [handoff] = handoffs(crm_url)
    assert handoff.reason is HandoffReason.CUSTOMER_REQUEST


def test_case3_frustration_while_the_device_is_asked_hands_over_instead_of_filing_it(crm_url):
    before = open_tickets(crm_url)
    tracker = in_form("problem_form", "device_serial", "you are useless, nothing works!!!", "express_frustration",
                      slots={**ANNA, "problem_text": "this is the third time my oven broke, this is ridiculous"},
                      first="this is the third time my oven broke, this is ridiculous", from_text=False)
    events, messages = run_action(ValidateProblemForm(), tracker)
    assert "I couldn't tell which appliance" not in texts(messages)
    assert "I'm sorry this has been frustrating" in texts(messages)
    assert any(e["event"] == "pause" for e in events)
    [handoff] = handoffs(crm_url)
    assert handoff.reason is HandoffReason.FRUSTRATION
    # The only new ticket is the handoff's own, not one filed with "you are useless" as its symptom.
    with session_scope(crm_url) as s:
        new = [t for t in list_tickets(s, customer_id=1, only_open=True) if t.number not in before]
        assert [t.category for t in new] == ["escalation"]


def test_safety_words_give_safety_steps_first_then_a_person(crm_url):
    tracker = in_form("problem_form", "symptom", "there is a smell of gas from the boiler", "report_problem",
                      slots={**ANNA, "device_serial": "DW60-24000103"})
    events, messages = run_action(ValidateProblemForm(), tracker)
    assert messages[0]["text"].startswith("Please put your safety first")
    assert [h.reason for h in handoffs(crm_url)] == [HandoffReason.SAFETY_FAULT]
    assert any(e["event"] == "pause" for e in events)


# --- case 4: verification in one message; a problem while the e-mail is asked ------------------------

@pytest.mark.parametrize("text", ["anna.schmidt@example.com ORD-2021-000101",
                                  "hi, I'm anna.schmidt@example.com and my order is ord-2021-000101, thanks"])
def test_case4_email_and_order_number_in_one_message_verify(crm_url, text):
    tracker = in_form("verify_form", None, text, "inform", slots={"customer_id": None, "customer_name": None})
    events, messages = run_action(ValidateVerifyForm(), tracker)
    slots = slots_of(events)
    assert slots["customer_id"] == 1.0 and slots["requested_slot"] is None
    assert "I've found your account" in texts(messages)


def test_case4_email_and_order_number_when_the_email_is_asked(crm_url):
    text = "sure: anna.schmidt@example.com ORD-2021-000101"
    tracker = in_form("verify_form", "verify_email", text, "inform", slots={"customer_id": None, "customer_name": None})
    slots = slots_of(run_action(ValidateVerifyForm(), tracker)[0])
    assert slots["customer_id"] == 1.0


def test_case4_a_problem_while_the_email_is_asked_is_noted_not_refused(crm_url):
    text = "my fridge is making a loud noise"
    tracker = in_form("problem_form", "verify_email", text, "report_problem",
                      slots={"customer_id": None, "customer_name": None, "problem_text": text})
    events, messages = run_action(ValidateProblemForm(), tracker)
    slots = slots_of(events)
    assert "doesn't look like an e-mail" not in texts(messages)
    assert "I've noted that for your ticket" in texts(messages)
    assert slots["verify_email"] is None and slots["requested_slot"] == "verify_email"
    assert slots["problem_text"] == text


def test_case4_in_verify_form_a_problem_becomes_the_request_answered_after_verification(crm_url):
    text = "my fridge is making a loud noise"
    tracker = in_form("verify_form", "verify_email", text, "report_problem",
                      slots={"customer_id": None, "customer_name": None})
    slots = slots_of(run_action(ValidateVerifyForm(), tracker)[0])
    assert slots["pending_request"] == "report_problem" and slots["problem_text"] == text


# --- case 5: "the second one" counts in the list shown --------------------------------------------------

def test_case5_an_ordinal_counts_in_the_buttons_shown_not_in_all_devices(crm_url):
    # The buttons showed the washing machine then the fridge; of all Anna's devices the second is the washer.
    tracker = in_form("problem_form", "device_serial", "the second one", "inform",
                      slots={**ANNA, "appliance": None, "problem_text": "it is making a loud noise",
                             "shown_devices": ["WM80-23000102", "FR50-21000101"]}, from_text=False)
    slots = validated_slots(run_action(ValidateProblemForm(), tracker)[0])
    assert slots["device_serial"] == "FR50-21000101"


# --- case 8: a long message that describes a problem ---------------------------------------------------

def test_case8_a_long_message_the_classifier_missed_starts_the_problem_report(crm_url):
    text = ("Hello, I hope you can help. " * 10 + "Since Monday my dishwasher makes a loud grinding noise and water "
            "stays at the bottom after every cycle. " + "I tried the filter. " * 20)[:1000]
    tracker = in_form("problem_form", None, text, "nlu_fallback", confidence=0.3, slots=ANNA)
    tracker.active_loop = {}
    events, messages = run_action(ActionFallback(), tracker)
    assert messages == []
    assert {"event": "active_loop", "name": "problem_form"} in [{k: e.get(k) for k in ("event", "name")} for e in events]
    assert slots_of(events)["problem_text"] == text


def test_case4_verification_details_the_classifier_missed_start_verification(crm_url):
    tracker = in_form("verify_form", None, "anna.schmidt@example.com ORD-2021-000101", "nlu_fallback", confidence=0.2)
    tracker.active_loop = {}
    events, messages = run_action(ActionFallback(), tracker)
    assert messages == [] and {"event": "active_loop", "name": "verify_form"} in [
        {k: e.get(k) for k in ("event", "name")} for e in events]


# --- case 9: names the customer sees, summaries the agent reads ----------------------------------------

def test_case9_role_accounts_and_user_names_never_reach_the_customer():
    assert display_name(SimpleNamespace(full_name="Maria Lopez", username="mlopez")) == "Maria"
    assert display_name(SimpleNamespace(full_name="Administrator", username="admin")) is None
    assert display_name(SimpleNamespace(full_name="agent7", username="agent7")) is None
    assert TEAM_NAME == "Service team"


def test_the_handoff_summary_counts_a_closing_action_run_inside_its_form():
    """A form completed by its validation ran its closing action in the same call: Rasa logged the form, then the
    follow-up to listen, then the form's end. A form the CRM could not serve ended before its follow-up."""
    def action(name: str) -> dict[str, Any]:
        return {"event": "action", "name": name}

    listen_next = {"event": "followup", "name": "action_listen"}
    form_ends = {"event": "active_loop", "name": None}
    answered = [user("ORD-2021-000101", "inform"), action("verify_form"), {"event": "slot", "name": "customer_id", "value": 1.0},
                {"event": "bot", "text": "You have 3 appliances"}, listen_next, form_ends, action("action_listen")]
    unanswered = [user("my fridge is warm", "report_problem"), action("problem_form"), form_ends, listen_next,
                  action("action_listen")]
    assert bot_tried(answered + unanswered)[1:] == [
        "asked for details to verify the customer", "answered a request about devices or tickets",
        "collected the problem report"]


def test_case9_the_handoff_summary_reads_as_words_not_intent_names():
    events = [user("hi", "greet"), user("anna@example.com", "inform"), user("my fridge", "report_problem"),
              user("blorp", "nlu_fallback")]
    summary = bot_tried(events)[0]
    assert summary == "customer's messages were about: greeting, giving details, reporting a problem"
    assert "_" not in summary


# --- corrections -----------------------------------------------------------------------------------------

def test_no_the_other_one_switches_the_device_and_asks_the_symptom_again(crm_url):
    tracker = in_form("problem_form", "symptom", "no, the other one", "deny",
                      slots={**ANNA, "device_serial": "WM80-23000102", "problem_text": "something is broken",
                             "shown_devices": ["WM80-23000102", "DW60-24000103"]})
    events, messages = run_action(ValidateProblemForm(), tracker)
    slots = slots_of(events)
    assert slots["device_serial"] == "DW60-24000103" and slots["symptom"] is None
    assert slots["requested_slot"] == "symptom" and "DW60-24000103" in texts(messages)


def test_i_meant_the_fridge_switches_by_type(crm_url):
    tracker = in_form("problem_form", "symptom", "sorry, I meant the fridge", "inform",
                      slots={**ANNA, "device_serial": "WM80-23000102", "problem_text": "something is broken"})
    slots = validated_slots(run_action(ValidateProblemForm(), tracker)[0])
    assert slots["device_serial"] == "FR50-21000101"


def test_typos_still_name_the_appliance_and_a_second_request_after_the_details_is_found():
    from actions.dialogue import category_in, request_in

    assert category_in("my washng machin wont drain") == "washing_machine"
    assert category_in("the dishwashr is loud") == "dishwasher" and category_in("my frige is not coling") == "fridge"
    assert category_in("the fridge and the boiler") is None
    assert request_in("anna@example.com ORD-2021-000101, what devices do I have?")[0] == "list_devices"
    kind, rest = request_in("anna@example.com ORD-2021-000101 my fridge is not cooling anymore")
    assert kind == "report_problem" and rest == "my fridge is not cooling anymore"
    assert request_in("anna@example.com ORD-2021-000101")[0] is None


def test_a_typo_in_the_appliance_still_picks_the_only_device_of_that_kind(crm_url):
    text = "my washng machin wont drain"
    tracker = in_form("problem_form", None, text, "report_problem", slots={**ANNA, "appliance": None, "problem_text": text})
    slots = validated_slots(run_action(ValidateProblemForm(), tracker)[0])
    assert slots["device_serial"] == "WM80-23000102"


def test_the_message_that_starts_a_form_is_its_request_not_a_digression(crm_url):
    # "what devices do I have?" starts verify_form for a known customer: the form ends at once, no e-mail asked.
    tracker = in_form("verify_form", None, "what devices do I have?", "list_devices", slots=ANNA)
    events, messages = run_action(ValidateVerifyForm(), tracker)
    assert validated_slots(events).get("requested_slot") is None
    # Nothing about the form is said; the answer to the request comes in the same call.
    assert len(messages) == 1 and messages[0]["text"].startswith("You have 3 appliances") and closed_in_place(events)


def test_verifying_inside_the_problem_report_does_not_ask_again_for_what_was_said_before(crm_url):
    tracker = in_form("problem_form", "verify_reference", "ORD-2021-000101", "inform",
                      slots={"customer_id": None, "customer_name": None, "verify_email": "anna.schmidt@example.com",
                             "appliance": "washing_machine", "problem_text": "my washing machine won't drain"})
    events, messages = run_action(ValidateProblemForm(), tracker)
    slots = validated_slots(events)
    assert slots["customer_id"] == 1.0 and slots["device_serial"] == "WM80-23000102"
    assert slots["symptom"] == "my washing machine won't drain" and slots["requested_slot"] is None


def test_a_reference_to_a_listed_device_is_no_description_of_the_problem(crm_url):
    assert not describes_problem("the second one is broken")
    assert not describes_problem("the one in the kitchen is not working")
    tracker = in_form("verify_form", None, "wat devics do i hav", "nlu_fallback", confidence=0.2)
    tracker.active_loop = {}
    events, messages = run_action(ActionFallback(), tracker)
    assert slots_of(events)["pending_request"] == "list_devices" and messages == []
