"""Dialogue rules that hold on every turn, inside forms too: what interrupts a form and which trigger wins.

Every message a form (verify_form, problem_form) receives is checked by :func:`check_turn` before any slot
is filled from it, in this order; the first that applies wins:

1. safety words (gas smell, carbon monoxide alarm, smoke, sparks, burning)  -> safety steps, then a person
2. a request for a person anywhere in the message ("... and I need to speak to a person")  -> a person
3. frustration at or above escalation.yml's threshold, counted over the customer's recent messages -> a person;
   the intent ``express_frustration`` below it -> the offer of a person, and the form goes on
4. a CRM trigger (open safety-critical fault, high-tier customer's urgent ticket, repeat contact) -> a person
5. another request once the form has asked something (devices, ticket status, device status, a product question,
   what the bot can do, "are you a bot") -> answered, then the form asks its question again; the message that
   starts a form is that form's request
6. a correction while the symptom is asked ("no, the other one", "I meant the washing machine") -> device switched
7. a problem described while the e-mail is asked -> noted for the ticket, the e-mail asked again (from
   verify_form, the problem report starts after verification)
8. otherwise the message is the answer to the form's question ("stop" and a typed request_human are rules).

Handing over stops the form (its question is not asked again). The same detectors serve the fallback, so that
a message the classifier missed (a long one, typos, e-mail and order number in one line) is still acted on.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.base import Turn, crm_session, resolve_customer
from actions.devices import describe_devices
from actions.handoff import Trigger, crm_trigger, escalate, frustration_score, record_ticket_contact
from actions.verification import EMAIL_RE, REFERENCE_RE
from crm_store.enums import HandoffReason
from crm_store.escalation_policy import get_escalation_config

logger = logging.getLogger(__name__)

# "speak to a person", "talk with someone from your team", "connect me to an agent", "real person please".
PERSON_RE = re.compile(
    r"\b(speak|talk|chat|connect|put|transfer|pass|hand|get|want|need)\w*\b[^.?!]{0,40}?"
    r"\b(a |an |to |with |me |some )?(real |live |actual )?(person|human|agent|operator|someone|somebody|"
    r"manager|representative|colleague|staff member|people)\b"
    r"|\b(real|live|actual) (person|human|agent)\b|\b(human|agent|person|operator) (please|pls|plz|now)\b",
    re.IGNORECASE,
)
# "someone" alone is also a technician visit ("send someone to fix it"): those are not a person in the chat.
NOT_PERSON_RE = re.compile(r"\b(send|come|visit|out to|round|engineer|technician|repair(man)?)\b", re.IGNORECASE)
SAFETY_RE = re.compile(
    r"\b(smell(s|ing)? (of )?gas|gas (leak|smell)|leaking gas|carbon monoxide|co alarm|co detector|"
    r"smoke|smoking|on fire|fire|flames?|sparks?|sparking|burning smell|smells? (of )?burning|electric shock)\b",
    re.IGNORECASE,
)
SAFETY_STEPS = (
    "Please put your safety first: switch the appliance off at the wall if you can do so safely. If you smell gas "
    "or a carbon monoxide alarm sounds, don't use switches or flames, open the windows, leave the room and call "
    "the gas emergency number; if there is fire or smoke, leave and call the fire service."
)
# Requests that may interrupt a form, with the confidence the classifier must have for them.
DIGRESSIONS = {"list_devices", "ask_ticket_status", "ask_device_status", "faq", "ask_capabilities", "bot_challenge"}
DIGRESSION_CONFIDENCE = 0.6
DEVICES_RE = re.compile(
    r"\b(what|which|list|show|see)\b[^.?!]{0,25}\b(devices|appliances|products|machines)\b"
    r"(?![^.?!]{0,20}\b(doing|working|ok|okay|online)\b)",
    re.IGNORECASE,
)
# The same, typed in a hurry ("wat devics do i hav", "shwo my aplliances").
DEVICES_LOOSE_RE = re.compile(
    r"\b(wh?at|wich|which|list|show|shwo|see)\b[^.?!]{0,25}\b(devi[cs]\w*|a?pp?l+i?ances?|aplian\w*|products?)\b",
    re.IGNORECASE,
)
TICKET_STATUS_RE = re.compile(r"\b(status|news|update)\b[^.?!]{0,30}\b(ticket|repair|case|T-\d{6})\b", re.IGNORECASE)
# Words that say nothing about what is wrong: "I have a problem with my fridge" still needs the symptom.
GENERIC_WORDS = {
    "i", "i'm", "im", "i've", "my", "me", "a", "an", "the", "is", "it", "it's", "its", "has", "have", "got", "with",
    "there", "there's", "problem", "problems", "issue", "issues", "fault", "faulty", "broken", "broke", "not", "working",
    "wrong", "something", "somethings", "something's", "report", "reporting", "want", "to", "need", "needs", "help",
    "please", "pls", "repair", "fix", "hi", "hello", "hey", "our", "we", "of", "on", "in", "one", "and", "again",
    "appliance", "device", "machine", "what", "with", "this", "that", "am", "are", "be", "would", "like", "can", "you",
    "your", "/report_problem",
    # references to a device, not symptoms: "the second one is broken", "the one in the kitchen"
    "first", "second", "third", "fourth", "last", "other", "1st", "2nd", "3rd", "number", "kitchen", "garage",
    "basement", "bathroom", "bedroom", "living", "room", "utility", "hall", "upstairs", "downstairs", "cellar",
}
# Prefixes, so that typos ("dishwashr", "fridg") still count.
APPLIANCE_WORDS = re.compile(
    r"\b(fri?dg\w*|frig\w*|freez\w*|refrig\w*|wash\w*|dish\w*|boil\w*|heat\w*|air ?con\w*|a/?c|oven|cooker|"
    r"dryer|radiators?)\b",
    re.IGNORECASE,
)
SYMPTOM_WORDS = re.compile(
    r"\b(noise|noisy|loud|bang\w*|rattl\w*|buzz\w*|leak\w*|water|drain\w*|warm|hot|cold|cool\w*|freez\w*|ice|smell\w*|"
    r"won'?t|doesn'?t|does not|isn'?t|is not|not \w+ing|stopp?ed|stuck|error|code|[EF]\d\d|display|beep\w*|"
    r"flash\w*|pressure|spin\w*|door|dirty|broke\w*|dead|tripp\w*)\b",
    re.IGNORECASE,
)


# "no, the other one", "sorry, I meant the washing machine", "actually it's the one in the garage".
CORRECTION_RE = re.compile(r"^\W*(no\b|nope|sorry|wait|oops|actually|i meant|i mean|not the|wrong)|\bthe other one\b|\bi meant\b",
                           re.IGNORECASE)


# Appliance words, typos included, to a category (when the NLU found no appliance entity: "my washng machin").
CATEGORY_WORDS = [
    (re.compile(r"\b(dish ?wa\w*|dishw\w*)\b", re.I), "dishwasher"),
    (re.compile(r"\b(wash\w*|washer|laundry)\b", re.I), "washing_machine"),
    (re.compile(r"\b(fri?dg\w*|frig\w*|freez\w*|refrig\w*)\b", re.I), "fridge"),
    (re.compile(r"\b(boil\w*|heating|heater|radiators?)\b", re.I), "boiler"),
    (re.compile(r"\b(air ?con\w*|a/?c|aircon)\b", re.I), "air_conditioner"),
]


def appliance_of(tracker: Tracker) -> str | None:
    """The appliance category the conversation is about: the NLU's canonical entity, else what the customer typed
    (a learned entity may keep a typo as its value: "washng machin"), else the problem description."""
    from actions.devices import parse_category

    slot = tracker.get_slot("appliance")
    if slot and parse_category(slot) is not None:
        return str(slot)
    return category_in(str(slot or "")) or category_in(str(tracker.get_slot("problem_text") or ""))


def category_in(text: str) -> str | None:
    """The appliance category a message names, if exactly one."""
    found = {category for pattern, category in CATEGORY_WORDS if pattern.search(text)}
    if "dishwasher" in found:
        found.discard("washing_machine")  # "dishwasher" also matches "wash..."
    return found.pop() if len(found) == 1 else None


def request_in(text: str) -> tuple[str | None, str]:
    """Another request in a message that also verified ("anna@example.com ORD-2021-000101, what devices do I
    have?"): the pending_request it means, and the message without the details."""
    rest = REFERENCE_RE.sub(" ", EMAIL_RE.sub(" ", text)).strip(" ,.;:-")
    if DEVICES_RE.search(rest):
        return "list_devices", rest
    if TICKET_STATUS_RE.search(rest):
        return "ticket_status", rest
    if sounds_like_problem(rest):
        return "report_problem", rest
    return None, rest


def latest(tracker: Tracker) -> dict[str, Any]:
    return tracker.latest_message or {}


def latest_text(tracker: Tracker) -> str:
    return str(latest(tracker).get("text") or "")


def intent_of(tracker: Tracker) -> tuple[str | None, float]:
    intent = latest(tracker).get("intent") or {}
    return intent.get("name"), float(intent.get("confidence") or 0.0)


def person_requested(text: str) -> bool:
    """The message asks for a person somewhere in it (not a technician's visit)."""
    match = PERSON_RE.search(text)
    if match is None:
        return False
    return not (match.group(3) in ("someone", "somebody") and NOT_PERSON_RE.search(text))


def safety_words(text: str) -> bool:
    return SAFETY_RE.search(text) is not None


def describes_problem(text: str) -> bool:
    """The message says what is wrong, beyond "a problem with my fridge": worth a ticket in the customer's words."""
    words = re.findall(r"[\w'/]+", text.lower())
    content = [w for w in words if w not in GENERIC_WORDS and not APPLIANCE_WORDS.fullmatch(w)]
    return len(content) >= 2 or bool(SYMPTOM_WORDS.search(text)) and len(content) >= 1


def sounds_like_problem(text: str) -> bool:
    """An appliance and a symptom in one message: a problem report whatever the classifier said."""
    return bool(APPLIANCE_WORDS.search(text) and SYMPTOM_WORDS.search(text))


def user_messages(tracker: Tracker) -> list[str]:
    return [str(e.get("text") or "") for e in tracker.events if e.get("event") == "user" and e.get("text")]


def frustration(tracker: Tracker) -> int:
    """escalation.yml's frustration score of the latest message, plus one when an earlier one of the last three
    was angry too (frustration builds up over a conversation)."""
    config = get_escalation_config().triggers.frustration
    texts = user_messages(tracker)
    name, _ = intent_of(tracker)
    score = frustration_score(texts, phrases=config.phrases, said_frustrated=name == "express_frustration")
    earlier = texts[-4:-1]
    if any(p.lower() in t.lower() for t in earlier for p in config.phrases):
        score += 1
    return score


def fresh_message(tracker: Tracker, form: str) -> bool:
    """Whether the form runs on a new customer message (not when it is resumed after another action)."""
    for event in reversed(tracker.events):
        if event.get("event") == "user":
            return True
        if event.get("event") == "action" and event.get("name") not in (
                "action_listen", "action_extract_slots", form, None):
            return False
    return False


def digression_kind(tracker: Tracker) -> str | None:
    """Another request in the middle of a form, when the message is not also an answer to it."""
    text = latest_text(tracker)
    if text.startswith("/"):
        name = text[1:].split("{", 1)[0]
        return name if name in DIGRESSIONS else None
    if EMAIL_RE.search(text) or REFERENCE_RE.search(text):
        return None
    name, confidence = intent_of(tracker)
    if DEVICES_RE.search(text):
        return "list_devices"
    if TICKET_STATUS_RE.search(text):
        return "ask_ticket_status"
    if name in DIGRESSIONS and confidence >= DIGRESSION_CONFIDENCE:
        return name
    return None


def escalation_trigger(tracker: Tracker) -> tuple[Trigger | None, bool]:
    """The trigger that hands this message to a person, if any, and whether safety steps go first."""
    text = latest_text(tracker)
    config = get_escalation_config().triggers
    if safety_words(text):
        return Trigger(HandoffReason.SAFETY_FAULT, "safety_words", detail="what you describe"), True
    name, _ = intent_of(tracker)
    if name == "request_human" or person_requested(text):
        return Trigger(HandoffReason.CUSTOMER_REQUEST, "customer_request", detail=text[:300]), False
    score = frustration(tracker)
    if config.frustration.enabled and score >= config.frustration.threshold:
        return Trigger(HandoffReason.FRUSTRATION, "frustration", detail=f"frustration score {score}"), False
    return None, False


def faq_answer(tracker: Tracker) -> str | None:
    selector = (latest(tracker).get("response_selector") or {}).get("faq") or {}
    responses = (selector.get("response") or {}).get("responses") or []
    return responses[0].get("text") if responses else None


def answer_digression(turn: Turn, kind: str) -> list[EventType]:
    """Answers another request made in the middle of a form; returns its slot events."""
    from actions.device_answers import device_status_reply  # that module imports this package's peers

    dispatcher, customer, tracker = turn.dispatcher, turn.customer, turn.tracker
    if kind == "faq":
        dispatcher.utter_message(text=faq_answer(tracker) or "I'm not sure about that one; our team can tell you more.")
        return []
    if kind == "ask_capabilities":
        dispatcher.utter_message(response="utter_capabilities")
        return []
    if kind == "bot_challenge":
        dispatcher.utter_message(response="utter_iamabot")
        return []
    if customer is None:
        dispatcher.utter_message(text="I'll answer that as soon as I've found your account.")
        pending = {"list_devices": "list_devices", "ask_ticket_status": "ticket_status",
                   "ask_device_status": "device_status"}.get(kind)
        return [SlotSet("pending_request", pending)] if pending else []
    if kind == "list_devices":
        dispatcher.utter_message(text=describe_devices(turn.session, customer))
        from actions.tickets import shown_devices_event
        return [shown_devices_event(turn.session, customer.id, None)]
    if kind == "ask_ticket_status":
        from actions.tickets import describe_ticket_status, ticket_asked_about

        number = next((e.get("value") for e in latest(tracker).get("entities") or []
                       if e.get("entity") == "ticket_number"), None)
        dispatcher.utter_message(text=describe_ticket_status(turn.session, customer, number))
        asked = ticket_asked_about(turn.session, customer, number)
        if asked:
            record_ticket_contact(turn, asked)
        return []
    if kind == "ask_device_status":
        reply = device_status_reply(turn.session, customer, tracker.get_slot("appliance"))
        reply.send(dispatcher)
        return []
    return []


def correct_device(turn: Turn) -> list[EventType] | None:
    """"No, the other one" / "I meant the washing machine" while the symptom is asked: switch the device."""
    from actions.devices import sentence_case
    from actions.tickets import _pick_device, _shown
    from crm_store.repositories.devices import list_devices_for_customer

    assert turn.customer is not None
    tracker, text = turn.tracker, latest_text(turn.tracker)
    devices = list_devices_for_customer(turn.session, customer_id=turn.customer.id)
    current = tracker.get_slot("device_serial")
    listed = _shown(devices, tracker.get_slot("shown_devices"))
    others = [d for d in listed if d.serial != current]
    picked = None
    if re.search(r"\bother one\b", text, re.IGNORECASE) and len(others) == 1:
        picked = others[0]
    if picked is None:
        candidate = _pick_device([d for d in devices if d.serial != current], text,
                                 latest(tracker).get("entities") or [], others)
        picked = candidate
    if picked is None:
        return None
    turn.dispatcher.utter_message(text=f"Got it: your {sentence_case(picked.label)} ({picked.serial}).")
    return [SlotSet("device_serial", picked.serial)]


def text_slots_this_turn(tracker: Tracker) -> list[EventType]:
    """Undo what the form's from_text mappings took from a message that was not an answer."""
    return [SlotSet(name, None) for name in tracker.slots_to_validate()
            if name in ("verify_email", "verify_reference", "symptom")]


def check_turn(form: str, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[EventType] | None:
    """The dialogue rules above for a form's message: the events that handle it, or None when it is the answer."""
    if not fresh_message(tracker, form):
        return None
    requested = tracker.get_slot("requested_slot")
    trigger, safety = escalation_trigger(tracker)
    # The message that starts a form is the form's own request: only a later one can be a digression.
    kind = None if trigger or not requested else digression_kind(tracker)
    name, confidence = intent_of(tracker)
    problem_while_verifying = (
        trigger is None and kind is None and requested == "verify_email" and not EMAIL_RE.search(latest_text(tracker))
        and (name == "report_problem" or sounds_like_problem(latest_text(tracker)))
    )
    offer = trigger is None and kind is None and bool(requested) and name == "express_frustration"
    correction = (trigger is None and kind is None and form == "problem_form" and requested == "symptom"
                  and tracker.get_slot("device_serial") and CORRECTION_RE.search(latest_text(tracker)) is not None)
    # The CRM triggers need the customer; checked on every message of a known customer.
    check_crm = trigger is None and tracker.get_slot("customer_id") is not None
    if not (trigger or kind or problem_while_verifying or offer or check_crm or correction):
        return None
    if check_crm and not (kind or problem_while_verifying or offer or correction):
        # Most messages of a known customer: a read-only look at the CRM triggers, nothing written.
        with crm_session(write=False) as session:
            customer, _ = resolve_customer(session, tracker)
            trigger = crm_trigger(session, customer, get_escalation_config()) if customer is not None else None
        if trigger is None:
            return None

    with crm_session() as session:
        customer, identity = resolve_customer(session, tracker)
        turn = Turn(dispatcher, tracker, domain, session, customer)
        if trigger is None and check_crm and customer is not None:
            trigger = crm_trigger(session, customer, get_escalation_config())
        undo = text_slots_this_turn(tracker)
        if trigger is not None:
            if safety:
                dispatcher.utter_message(text=SAFETY_STEPS)
            events = escalate(turn, trigger)
            logger.info("form %s interrupted by %s (conversation %s)", form, trigger.reason.value, tracker.sender_id)
            stop = [SlotSet("requested_slot", None), ActiveLoop(None)]
            paused = any(e.get("event") == "pause" for e in events)
            # Not paused (callback outside staffed hours): the form's closing action must not run on empty slots.
            return identity + undo + events + stop + ([] if paused else [SlotSet("form_interrupted", form)])
        if correction and customer is not None:
            events = correct_device(turn)
            if events is not None:
                return identity + undo + events + [SlotSet("requested_slot", "symptom")]
        if kind is not None:
            events = answer_digression(turn, kind)
            return identity + undo + events + ([SlotSet("requested_slot", requested)] if requested else [])
        if offer:
            dispatcher.utter_message(
                text="I'm sorry about that. Would you like to talk to a person from our team? Otherwise let's carry on.",
                buttons=[{"title": "Talk to a person", "payload": "/request_human"}],
            )
            return identity + undo + ([SlotSet("requested_slot", requested)] if requested else [])
        if problem_while_verifying:
            text = latest_text(tracker)
            dispatcher.utter_message(
                text="I've noted that for your ticket. To open it I first need to find your account."
            )
            events = identity + undo + [SlotSet("problem_text", text[:2000])]
            if form == "verify_form":
                # Answered after verification: action_resume_request then starts the problem report.
                events.append(SlotSet("pending_request", "report_problem"))
            return events + [SlotSet("requested_slot", requested)]
        return None
