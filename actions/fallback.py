"""The helpful fallback: never silence, always what the assistant can do."""

from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, UserUtteranceReverted
from rasa_sdk.executor import CollectingDispatcher

from actions.customers import CAPABILITY_BUTTONS

logger = logging.getLogger(__name__)


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
        dispatcher.utter_message(
            text=(
                "Sorry, I didn't quite get that. I can show your appliances, open a repair ticket or check "
                "a ticket's status. Could you rephrase, or pick one of these?"
            ),
            buttons=CAPABILITY_BUTTONS,
        )
        # Revert the misunderstood message so that it does not steer the next prediction.
        return [UserUtteranceReverted()]
