"""Device events and ticket updates that respect the conversation's state (issue 16, cases 6, 7 and 10).

The proactive path (device worker, web service) decides *whether* to tell a customer (consent, quiet hours,
safety exceptions) and records it in the outbox; these actions are what it runs in the customer's conversation:

- ``action_safety_handoff``: right after a safety-critical fault was shown (or on its own when nothing could be
  shown), a person is brought in at once and the customer is told so. Safe to run twice: the handoff is unique per
  conversation and the safety trigger has its cooldown.
- ``action_deliver_device_events``: for a conversation an agent owns (paused: Rasa predicts nothing there, so
  ``trigger_intent`` would only add a fake customer line). Run through ``POST /conversations/{id}/execute``, it
  delivers the customer's undelivered proactive messages into their channel and adds a system note with the
  ticket to the handoff, so the agent sees it at once.
- ``action_notify_ticket_update``: a staff status change (technician scheduled, resolved...) told to the customer
  in their chat; triggered with ``EXTERNAL_ticket_update`` and entity ``ticket_number``; only in a conversation
  linked to the ticket's customer.
"""

from __future__ import annotations

import logging

from rasa_sdk.events import ActiveLoop, EventType, SlotSet

from actions.base import CrmAction, Turn, customer_slots, sender_channel
from actions.escalation_config import get_escalation_config
from actions.settings import get_settings
from actions.handoff import Trigger, crm_trigger, escalate
from crm_store.enums import HandoffMessageKind, HandoffReason, HandoffStatus
from crm_store.repositories.customers import find_customer_by_identity, get_profile
from crm_store.repositories.handoffs import add_handoff_message, get_active_handoff
from crm_store.repositories.tickets import get_ticket_by_number

logger = logging.getLogger(__name__)

# Ticket statuses in words a customer reads (TicketStatus.label is the agent's wording).
STATUS_NEWS = {
    "in_progress": "our team is working on it",
    "waiting_customer": "our team is waiting for an answer from you",
    "resolved": "it has been resolved",
    "closed": "it has been closed",
    "open": "it is open again",
}


def _customer(turn: Turn) -> tuple[object | None, list[EventType]]:
    """The conversation's customer: known, or found through the channel identity the chat is linked to."""
    if turn.customer is not None:
        return turn.customer, []
    channel = sender_channel(turn.tracker) or "socketio"
    linked = find_customer_by_identity(turn.session, channel=channel, external_id=turn.tracker.sender_id,
                                      verified_within=get_settings().verification_ttl)
    profile = get_profile(turn.session, customer_id=linked.id) if linked is not None else None
    return profile, customer_slots(profile) if profile is not None else []


class ActionSafetyHandoff(CrmAction):
    """A person at once for an open safety-critical fault of the conversation's customer."""

    def name(self) -> str:
        return "action_safety_handoff"

    def act(self, turn: Turn) -> list[EventType]:
        customer, events = _customer(turn)
        if customer is None or get_active_handoff(turn.session, conversation_id=turn.tracker.sender_id):
            return events
        trigger = crm_trigger(turn.session, customer, get_escalation_config())  # type: ignore[arg-type]
        if trigger is None or trigger.reason is not HandoffReason.SAFETY_FAULT:
            return events
        turn.customer = customer  # type: ignore[assignment]
        logger.info("safety fault: handing conversation %s to a person", turn.tracker.sender_id)
        handed = escalate(turn, Trigger(trigger.reason, trigger.key, trigger.ticket, trigger.detail))
        if turn.tracker.active_loop.get("name") and any(e.get("event") == "pause" for e in handed):
            # A person takes over: the form the customer was in ends (its question is not asked again).
            handed += [ActiveLoop(None), SlotSet("requested_slot", None)]
        return events + handed


class ActionDeliverDeviceEvents(CrmAction):
    """Delivers held device messages in a conversation an agent owns, with a system note for the agent."""

    def name(self) -> str:
        return "action_deliver_device_events"

    def act(self, turn: Turn) -> list[EventType]:
        from actions.proactive import deliver_held_messages  # the proactive module is another helper's

        customer, events = _customer(turn)
        if customer is None:
            return events
        handoff = get_active_handoff(turn.session, conversation_id=turn.tracker.sender_id)
        before = len(turn.dispatcher.messages)
        events += deliver_held_messages(turn, customer.id)  # type: ignore[attr-defined]
        told = [m.get("text") or "" for m in turn.dispatcher.messages[before:]]
        if handoff is not None and handoff.status in (HandoffStatus.QUEUED, HandoffStatus.ASSIGNED) and told:
            for text in told:
                add_handoff_message(turn.session, handoff=handoff, kind=HandoffMessageKind.SYSTEM, author="device",
                                    body=f"Device event told to the customer: {text}"[:4000])
        return events


class ActionNotifyTicketUpdate(CrmAction):
    """Tells the customer what changed on their ticket (a staff status change)."""

    writes = False

    def name(self) -> str:
        return "action_notify_ticket_update"

    def act(self, turn: Turn) -> list[EventType]:
        customer, events = _customer(turn)
        number = next(iter(turn.tracker.get_latest_entity_values("ticket_number")), None)
        if customer is None or not number:
            return events
        ticket = get_ticket_by_number(turn.session, number=str(number), customer_id=customer.id)  # type: ignore[attr-defined]
        if ticket is None:
            logger.warning("ticket update for a ticket not of conversation %s", turn.tracker.sender_id)
            return events
        news = STATUS_NEWS.get(ticket.status.value, f"its status is now {ticket.status.label}")
        text = f"An update on your ticket {ticket.number} ({ticket.title}): {news}."
        latest = next((e for e in reversed(ticket.events) if not e.is_private and e.body and e.author != "bot"), None)
        if latest is not None and ticket.status.is_open:
            text += f" {latest.body}"
        turn.dispatcher.utter_message(text=text)
        return events + [SlotSet("ticket_number", ticket.number)]
