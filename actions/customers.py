"""Knowing the customer: greeting by name, verifying an anonymous chat, answering after verification."""

from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.base import CrmAction, CrmFormValidationAction, Turn, resolving_writes, sender_channel
from actions.device_answers import book_technician_reply, device_status_reply, self_help_reply
from actions.devices import describe_devices
from actions.handoff import escalate_if_needed, record_ticket_contact
from actions.privacy import PRIVACY_REQUESTS, privacy_reply
from actions.proactive import deliver_held_messages
from actions.dialogue import check_turn, request_in
from actions.tickets import describe_ticket_status, shown_devices_event, ticket_asked_about
from actions.verification import VerificationMixin
from crm_store.enums import JourneyStage, LoyaltyTier
from crm_store.repositories.customers import CustomerProfile
from crm_store.repositories.interactions import record_interaction

logger = logging.getLogger(__name__)

CAPABILITY_BUTTONS = [
    {"title": "My devices", "payload": "/list_devices"},
    {"title": "Report a problem", "payload": "/report_problem"},
    {"title": "Ticket status", "payload": "/ask_ticket_status"},
]


def greeting_for(profile: CustomerProfile) -> str:
    """A greeting by name that thanks loyal and repeat customers."""
    text = f"Hi {profile.first_name}, welcome back!"
    if profile.loyalty_tier in (LoyaltyTier.GOLD, LoyaltyTier.PLATINUM):
        text += (
            f" Thank you for being a {profile.loyalty_tier.value.capitalize()} member since "
            f"{profile.customer_since.year}."
        )
    elif profile.purchase_count >= 2:
        text += f" Thanks for choosing us again: {profile.purchase_count} purchases so far."
    return text + " How can I help you today?"


class ActionGreet(CrmAction):
    def name(self) -> str:
        return "action_greet"

    def writes_in(self, tracker: Tracker) -> bool:
        # A known customer's greeting records the visit and delivers held messages; a visitor's only reads.
        return tracker.get_slot("customer_id") is not None or resolving_writes(tracker)

    def act(self, turn: Turn) -> list[EventType]:
        if turn.customer is None:
            turn.dispatcher.utter_message(
                text=(
                    "Hi! I'm the service assistant. I can show the appliances registered to you, open a "
                    "repair ticket or tell you a ticket's status. Already a customer? Say \"link my account\"."
                ),
                buttons=CAPABILITY_BUTTONS,
            )
            return []
        turn.dispatcher.utter_message(text=greeting_for(turn.customer), buttons=CAPABILITY_BUTTONS)
        record_interaction(
            turn.session,
            customer_id=turn.customer.id,
            stage=JourneyStage.START,
            event="chat_greeted",
            channel=sender_channel(turn.tracker),
            conversation_id=turn.tracker.sender_id,
        )
        # What the appliances reported while the customer was away comes right after the greeting; then a
        # safety fault or a critical ticket of a high-tier customer goes to a person straight away.
        held = deliver_held_messages(turn, turn.customer.id)
        return held + escalate_if_needed(turn)


class ValidateVerifyForm(VerificationMixin, CrmFormValidationAction):
    def name(self) -> str:
        return "validate_verify_form"

    def interrupt(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType] | None:
        return check_turn("verify_form", dispatcher, tracker, domain)

    async def required_slots(
        self, domain_slots: list[str], dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[str]:
        return self.VERIFY_SLOTS if self.needs_verification(tracker) else []

    def closing_action(self) -> CrmAction:
        return ActionResumeRequest()


class ActionResumeRequest(CrmAction):
    """Answers what the customer asked for before verification (devices, ticket status, device health,
    self-help or a technician for a fault), then anything the appliances reported that they haven't heard."""

    def name(self) -> str:
        return "action_resume_request"

    @staticmethod
    def _request(tracker: Tracker) -> tuple[str | None, str | None]:
        """What to answer, and for a problem described while verifying, its words."""
        request = tracker.get_slot("pending_request")
        if request in (None, "verify"):
            # Verified by details in a message that also asked for something: answer that too.
            asked, rest = request_in(str((tracker.latest_message or {}).get("text") or ""))
            return asked or request, rest if asked == "report_problem" else None
        return request, None

    def answers_in_place(self, tracker: Tracker) -> bool:
        # A problem report starts problem_form, which only the form's rule can activate after verify_form.
        return bool(tracker.get_slot("form_interrupted")) or self._request(tracker)[0] != "report_problem"

    def act(self, turn: Turn) -> list[EventType]:
        done = [SlotSet("pending_request", None), SlotSet("verify_email", None), SlotSet("verify_reference", None)]
        if turn.tracker.get_slot("form_interrupted"):
            return done + [SlotSet("form_interrupted", None)]  # verification was stopped for a person
        if turn.customer is None:
            turn.dispatcher.utter_message(
                text=(
                    "I can only do that for a verified customer. You can still ask me general questions, "
                    "or contact our service team directly."
                )
            )
            return done
        dispatcher, number = turn.dispatcher, turn.tracker.get_slot("ticket_number")
        request, problem_text = self._request(turn.tracker)
        if request == "report_problem":
            # A problem described while verifying: the problem report starts now, asking only what is missing.
            if problem_text is not None:
                done.append(SlotSet("problem_text", problem_text))
            return done + [ActiveLoop("problem_form")]
        if request == "list_devices":
            turn.dispatcher.utter_message(text=describe_devices(turn.session, turn.customer))
            done.append(shown_devices_event(turn.session, turn.customer.id, None))
        elif request == "ticket_status":
            number = turn.tracker.get_slot("ticket_number")
            turn.dispatcher.utter_message(text=describe_ticket_status(turn.session, turn.customer, number))
            asked_about = ticket_asked_about(turn.session, turn.customer, number)
            if asked_about:
                record_ticket_contact(turn, asked_about)
            done.append(SlotSet("ticket_number", None))
            done += escalate_if_needed(turn)
        elif request == "device_status":
            appliance = turn.tracker.get_slot("appliance")
            done += device_status_reply(turn.session, turn.customer, appliance).send(dispatcher)
        elif request == "fault_self_help":
            done += self_help_reply(turn.session, turn.customer, number).send(dispatcher)
        elif request == "book_technician":
            reply = book_technician_reply(
                turn.session, turn.customer, number,
                channel=sender_channel(turn.tracker), conversation_id=turn.tracker.sender_id,
            )
            done += reply.send(dispatcher)
        elif request in PRIVACY_REQUESTS:
            done += privacy_reply(turn, request)
        else:
            turn.dispatcher.utter_message(
                text=f"You're all set, {turn.customer.first_name}. What can I do for you?", buttons=CAPABILITY_BUTTONS
            )
        return done + deliver_held_messages(turn, turn.customer.id)
