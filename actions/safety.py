"""Device events and ticket updates that respect the conversation's state (issue 16, cases 6, 7 and 10).

The proactive path (device worker, web service) decides *whether* to tell a customer (consent, quiet hours,
safety exceptions) and records it in the outbox; these actions are what it runs in the customer's conversation:

- ``action_safety_handoff``: right after a safety-critical fault was shown (or on its own when nothing could be
  shown), a person is brought in at once and the customer is told so. Safe to run twice: the handoff is unique per
  conversation and per fault (one open safety handoff per ticket), and the safety trigger has its cooldown.
- ``action_deliver_device_events``: for a conversation a person has (paused: Rasa predicts nothing there, so
  ``trigger_intent`` would only add a line to the transcript). The device worker runs it through
  ``POST /conversations/{id}/execute``: it tells the customer what the bot owes them at once and adds a system
  note with the ticket to the handoff, so the agent sees it at once.
- ``action_notify_ticket_update``: a staff status change (technician scheduled, resolved...) told to the customer
  in their chat, exactly once; triggered with ``EXTERNAL_ticket_update`` and entities ``proactive_id`` (the outbox
  row the web service queued with the change) and ``ticket_number``; only in a conversation linked to the
  ticket's customer.
"""

from __future__ import annotations

import logging

from rasa_sdk.events import ActiveLoop, EventType, SlotSet

from actions.base import CrmAction, Turn, customer_slots, sender_channel
from actions.settings import get_settings
from actions.handoff import Trigger, crm_trigger, escalate
from actions.proactive import ActionNotifyDevice, Reply, render_proactive
from crm_store.enums import HandoffMessageKind, HandoffReason, ProactiveKind
from crm_store.escalation_policy import get_escalation_config
from crm_store.models import ProactiveMessage, Ticket, TicketEvent
from crm_store.repositories.customers import find_customer_by_identity, get_profile
from crm_store.repositories.handoffs import add_handoff_message, get_active_handoff
from crm_store.repositories.proactive import claim_for_delivery, undelivered_for_customer
from crm_store.repositories.safety_handoffs import raise_priority

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


def ticket_update_text(ticket: Ticket, change: TicketEvent | None) -> str:
    """What a staff status change means for the customer: the status it moved to (that change's, not the
    ticket's current one: each change is told once) and the team's note when there is one."""
    to = (change.data or {}).get("to") if change is not None else None
    status = to if to in STATUS_NEWS else ticket.status.value
    news = STATUS_NEWS.get(status, f"its status is now {ticket.status.label}")
    text = f"An update on your ticket {ticket.number} ({ticket.title}): {news}."
    if change is not None and change.body and not change.is_private:
        text += f" Note from our team: {change.body}"
    return text


def agent_note(message: ProactiveMessage, text: str) -> str:
    """The system line an agent sees when the bot told their customer something on its own."""
    what = {ProactiveKind.DEVICE_FAULT: "Device fault", ProactiveKind.DEVICE_RECOVERED: "Device recovery",
            ProactiveKind.TICKET_UPDATE: "Ticket update"}[message.kind]
    urgent = " (safety-critical)" if message.safety_critical else ""
    return f"{what}{urgent} on ticket {message.ticket.number}, told to the customer: {text}"[:4000]


class ActionDeliverDeviceEvents(CrmAction):
    """Tells the customer, in a conversation a person has, what the bot owes them (device faults and
    recoveries, ticket updates); each one becomes a system note with its ticket for the agent.

    Run by the device worker through ``POST /conversations/{id}/execute`` (the conversation is paused, so a
    triggered intent would do nothing). Each message is claimed (``claim_for_delivery``: one winner, also
    against the worker's lease for another conversation) and the claims and notes committed together before
    anything is said. A safety fault moves a queued handoff up to the safety priority; if the person has
    meanwhile handed back, the safety fault brings one in as after a push.
    """

    def name(self) -> str:
        return "action_deliver_device_events"

    def act(self, turn: Turn) -> list[EventType]:
        customer, events = _customer(turn)
        if customer is None:
            return events
        sender = turn.tracker.sender_id
        channel = sender_channel(turn.tracker) or "socketio"
        handoff = get_active_handoff(turn.session, conversation_id=sender)
        safety_priority = get_escalation_config().triggers.safety_fault.priority
        claimed: list[tuple[ProactiveMessage, Reply]] = []
        for message in undelivered_for_customer(turn.session, customer_id=customer.id):  # type: ignore[attr-defined]
            reply = render_proactive(turn.session, message)
            if reply is None or not claim_for_delivery(turn.session, message, channel=channel, conversation_id=sender):
                continue
            claimed.append((message, reply))
            if handoff is not None:
                add_handoff_message(turn.session, handoff=handoff, kind=HandoffMessageKind.SYSTEM, author="bot",
                                    body=agent_note(message, reply.text))
                if message.safety_critical:
                    raise_priority(turn.session, handoff_id=handoff.id, priority=safety_priority)
        if not claimed:
            return events
        turn.session.commit()
        for message, reply in claimed:
            events += reply.send(turn.dispatcher)
            logger.info("proactive message %s delivered in conversation %s (with a person: %s)", message.id, sender,
                        handoff is not None)
        if handoff is None and any(m.safety_critical for m, _ in claimed):
            turn.customer = customer  # type: ignore[assignment]
            events += ActionSafetyHandoff().act(turn)
        return events


class ActionNotifyTicketUpdate(ActionNotifyDevice):
    """Tells the customer about a staff status change on their ticket, triggered by the device worker with
    ``EXTERNAL_ticket_update`` (entities ``proactive_id``, ``ticket_number``); exactly once, only in a
    conversation linked to the ticket's customer (see ``ActionNotifyDevice``)."""

    kind = ProactiveKind.TICKET_UPDATE

    def name(self) -> str:
        return "action_notify_ticket_update"
