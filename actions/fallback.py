"""The helpful fallback: never silence, always what the assistant can do; a person after repeated misses."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet, UserUtteranceReverted
from rasa_sdk.executor import CollectingDispatcher

from actions.base import Turn, crm_session, resolve_customer
from actions.customers import CAPABILITY_BUTTONS
from actions.dialogue import DEVICES_LOOSE_RE, SAFETY_STEPS, escalation_trigger, sounds_like_problem
from actions.verification import EMAIL_RE
from actions.handoff import Trigger, escalate, fallback_streak, frustration_score, user_texts
from crm_store.enums import HandoffReason
from crm_store.escalation_policy import get_escalation_config

logger = logging.getLogger(__name__)

# What the fallback may offer as "did you mean", in the customer's words. Small talk (greet, thank, ...)
# and yes/no are never worth a button.
OFFERABLE_INTENTS = {
    "list_devices": "Show my appliances",
    "ask_device_status": "How my appliances are doing",
    "report_problem": "Report a problem",
    "ask_ticket_status": "Check a ticket's status",
    "book_technician": "Book a technician",
    "fault_self_help": "Self-help for a fault",
    "verify_identity": "Verify who I am",
    "request_human": "Talk to a person",
    "ask_capabilities": "What can you do?",
}
# A candidate below this confidence is noise, not a near miss.
MIN_CANDIDATE_CONFIDENCE = 0.1
MAX_CANDIDATES = 3


def closest_options(latest_message: dict[str, Any]) -> list[dict[str, str]]:
    """Buttons for the intents the classifier ranked highest under the fallback threshold, best first."""
    ranking = latest_message.get("intent_ranking") or []
    buttons = []
    for candidate in ranking:
        name, confidence = candidate.get("name"), float(candidate.get("confidence") or 0.0)
        if name in OFFERABLE_INTENTS and confidence >= MIN_CANDIDATE_CONFIDENCE:
            buttons.append({"title": OFFERABLE_INTENTS[name], "payload": f"/{name}"})
        if len(buttons) == MAX_CANDIDATES:
            break
    return buttons


class ActionFallback(Action):
    """Answers a message the assistant did not understand with what it can do."""

    def name(self) -> str:
        return "action_fallback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        intent = (tracker.latest_message or {}).get("intent") or {}
        # Log the confidence, not the text: the message may contain personal data.
        logger.info(
            "fallback in conversation %s (intent %s, confidence %.2f)",
            tracker.sender_id, intent.get("name"), float(intent.get("confidence") or 0.0),
        )
        text = str((tracker.latest_message or {}).get("text") or "")
        # A request for a person or safety words win over everything, wherever they sit in the message.
        escalation, safety = escalation_trigger(tracker)
        if escalation is None:
            escalation = self.escalation(tracker)
        if escalation is not None:
            if safety:
                dispatcher.utter_message(text=SAFETY_STEPS)
            # The misunderstood message stays in the transcript the agent reads.
            events = await self.escalate(escalation, dispatcher, tracker, domain)
            if events is not None:
                return events
        if tracker.active_loop.get("name") is None:
            # What the classifier missed but the message plainly holds: verification details in one line
            # ("anna@example.com ORD-2021-000101"), or a problem described at length or with typos.
            if EMAIL_RE.search(text):
                return [SlotSet("pending_request", "verify"), ActiveLoop("verify_form")]
            if sounds_like_problem(text):
                return [SlotSet("problem_text", text[:2000]), ActiveLoop("problem_form")]
            if DEVICES_LOOSE_RE.search(text):
                return [SlotSet("pending_request", "list_devices"), ActiveLoop("verify_form")]
        closest = closest_options(tracker.latest_message or {})
        if closest:
            # The classifier had candidates, just none sure enough: offer them rather than a generic menu.
            dispatcher.utter_message(
                text="Sorry, I'm not sure I understood. Did you mean one of these? Or say it in other words.",
                buttons=closest,
            )
        else:
            dispatcher.utter_message(
                text=(
                    "Sorry, I didn't quite get that. I can show your appliances, open a repair ticket or check "
                    "a ticket's status. Could you rephrase, or pick one of these?"
                ),
                buttons=CAPABILITY_BUTTONS,
            )
        # Revert the misunderstood message so that it does not steer the next prediction.
        return [UserUtteranceReverted()]

    @staticmethod
    def escalation(tracker: Tracker) -> Trigger | None:
        """Repeated misunderstanding or frustration (wording, shouting, repetition) calls for a person."""
        config = get_escalation_config().triggers
        streak = fallback_streak(tracker.events) + 1
        if config.repeated_fallback.enabled and streak >= config.repeated_fallback.count:
            return Trigger(HandoffReason.REPEATED_FALLBACK, "repeated_fallback", detail=f"{streak} misunderstood messages in a row")
        score = frustration_score(user_texts(tracker.events), phrases=config.frustration.phrases, said_frustrated=False)
        if config.frustration.enabled and score >= config.frustration.threshold:
            return Trigger(HandoffReason.FRUSTRATION, "frustration", detail=f"frustration score {score}")
        return None

    @staticmethod
    async def escalate(
        trigger: Trigger, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType] | None:
        """The handoff in its own CRM unit of work; None when the CRM failed (the plain fallback answers)."""

        def work() -> list[EventType]:
            with crm_session() as session:
                customer, events = resolve_customer(session, tracker)
                return events + escalate(Turn(dispatcher, tracker, domain, session, customer), trigger)

        try:
            return await asyncio.to_thread(work)
        except Exception:
            logger.exception("escalation from the fallback failed (conversation %s)", tracker.sender_id)
            return None
