"""CSAT after a handoff (1-5 and an optional comment), and counting conversations for the supervisor's rates.

Needs in domain.yml: slots csat_score, csat_comment (from_text while csat_form asks for them), handoff_id;
form csat_form; responses utter_ask_csat_score and utter_ask_csat_comment. action_handback opens the form.
A reply that is no rating ends the survey without nagging: a rigid survey is worse than none.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActionExecuted, ConversationPaused, EventType, SessionStarted, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.base import CrmAction, Turn, crm_session, sender_channel
from crm_store.enums import JourneyStage
from crm_store.repositories.handoffs import get_active_handoff, get_handoff
from crm_store.repositories.interactions import record_csat, record_handoff_csat, record_interaction

logger = logging.getLogger(__name__)

SKIPPED = "skipped"
NO_COMMENT = {"", "no", "nope", "no thanks", "no, thanks", "nothing", "skip", "no comment", "/deny", "n/a", "-"}
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


def parse_score(text: str) -> int | None:
    """1-5 from "4", "4/5", "four", "⭐⭐⭐⭐" or "★★★"; None when the text holds no rating."""
    text = text.strip().lower()
    stars = text.count("⭐") + text.count("★")
    if 1 <= stars <= 5:
        return stars
    numbers = re.findall(r"(?<![\d.])(\d+)(?![\d.])", text)
    if numbers and 1 <= int(numbers[0]) <= 5 and len(text) <= 40:
        return int(numbers[0])
    for word, value in _NUMBER_WORDS.items():
        if re.search(rf"\b{word}\b", text) and len(text) <= 40:
            return value
    return None


class ValidateCsatForm(FormValidationAction):
    def name(self) -> str:
        return "validate_csat_form"

    async def required_slots(
        self, domain_slots: list[str], dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[str]:
        return [] if tracker.get_slot("csat_score") == SKIPPED else domain_slots

    def validate_csat_score(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        score = parse_score(str(slot_value or ""))
        if score is not None:
            return {"csat_score": str(score)}
        if re.fullmatch(r"\s*-?\d+\s*", str(slot_value or "")):
            dispatcher.utter_message(text="Please pick a number from 1 (poor) to 5 (excellent).")
            return {"csat_score": None}
        return {"csat_score": SKIPPED}

    def validate_csat_comment(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        text = str(slot_value or "").strip()
        return {"csat_comment": "" if text.lower() in NO_COMMENT else text[:2000]}


class ActionSubmitCsat(CrmAction):
    """Stores the rating against the handoff's ticket and the conversation."""

    def name(self) -> str:
        return "action_submit_csat"

    def act(self, turn: Turn) -> list[EventType]:
        reset = [SlotSet("csat_score", None), SlotSet("csat_comment", None)]
        raw = turn.tracker.get_slot("csat_score")
        if raw in (None, SKIPPED):
            turn.dispatcher.utter_message(text="No problem. What else can I do for you?")
            return reset
        score = int(raw)
        handoff_id = turn.tracker.get_slot("handoff_id")
        handoff = get_handoff(turn.session, handoff_id=int(handoff_id)) if handoff_id is not None else None
        customer_id = turn.customer.id if turn.customer else (handoff.customer_id if handoff else None)
        comment = turn.tracker.get_slot("csat_comment") or None
        if handoff is not None:
            # One rating per handoff: a second answer (a repeated survey, a double submit) is not counted.
            rating, created = record_handoff_csat(
                turn.session, handoff_id=handoff.id, score=score, customer_id=customer_id,
                ticket_id=handoff.ticket_id, conversation_id=turn.tracker.sender_id, comment=comment,
            )
            if not created:
                turn.dispatcher.utter_message(text="You've already rated this conversation, thank you! "
                                                   "Anything else I can do for you?")
                return reset
        else:
            rating = record_csat(turn.session, score=score, customer_id=customer_id,
                                 conversation_id=turn.tracker.sender_id, comment=comment)
        record_interaction(turn.session, customer_id=customer_id, stage=JourneyStage.FEEDBACK, event="csat_given",
                           channel=sender_channel(turn.tracker), conversation_id=turn.tracker.sender_id,
                           data={"score": score, "handoff": handoff.id if handoff else None, "rating": rating.id})
        if score <= 2:
            text = "Thank you for telling us. I'm sorry we didn't do better; a team lead reviews every low rating."
        else:
            text = "Thank you for your rating!"
        turn.dispatcher.utter_message(text=text + " Anything else I can do for you?")
        return reset


class ActionSessionStart(Action):
    """Rasa's session start (slots carried over as configured) that also counts the conversation.

    A new session un-pauses a Rasa conversation; while an agent still owns it, it is paused again.
    """

    def name(self) -> str:
        return "action_session_start"

    @staticmethod
    def _record_start(tracker: Tracker) -> bool:
        """Counts the conversation; True while an agent owns it."""
        with crm_session() as session:
            customer_id = tracker.get_slot("customer_id")
            record_interaction(session, customer_id=int(customer_id) if customer_id is not None else None,
                               stage=JourneyStage.START, event="conversation_started",
                               channel=sender_channel(tracker), conversation_id=tracker.sender_id)
            return get_active_handoff(session, conversation_id=tracker.sender_id) is not None

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        events: list[EventType] = [SessionStarted()]
        if (domain.get("session_config") or {}).get("carry_over_slots_to_new_session", True):
            events += [SlotSet(name, value) for name, value in tracker.slots.items()
                       if value is not None and name != "requested_slot"]
        try:
            # The CRM is blocking I/O: off the action server's event loop.
            with_agent = await asyncio.to_thread(self._record_start, tracker)
        except Exception:
            # Counting is not worth failing the customer's conversation over.
            logger.exception("could not record the start of conversation %s", tracker.sender_id)
            with_agent = False
        events.append(ActionExecuted("action_listen"))
        if with_agent:
            events.append(ConversationPaused())
        return events
