"""What the devices tell the customer through the bot: proactive fault and recovery messages (pushed, or
held for the next chat) and the reply pieces they share with the answers to the customer's own questions
(the choices they offer and "how is my fridge?": ``actions.device_answers``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.base import CrmAction, Turn, customer_slots, sender_channel
from actions.settings import get_settings
from crm_store.enums import ProactiveKind, ProactiveStatus, TicketEventKind
from crm_store.models import Customer, FaultDefinition, ProactiveMessage, Ticket, utcnow
from crm_store.repositories.catalogue import get_fault
from crm_store.repositories.customers import find_customer_by_identity, get_customer, get_profile
from crm_store.repositories.proactive import claim_for_delivery, get_message, undelivered_for_customer
from crm_store.repositories.safety_handoffs import open_safety_handoff

logger = logging.getLogger(__name__)

# The web chat is the push channel the device worker uses; a trigger into a conversation that never
# had a user message carries no input channel.
DEFAULT_CHANNEL = "socketio"


@dataclass
class Reply:
    """One bot message: text, buttons, and the slot events that go with it."""

    text: str
    buttons: list[dict[str, str]] = field(default_factory=list)
    events: list[EventType] = field(default_factory=list)

    def send(self, dispatcher: CollectingDispatcher) -> list[EventType]:
        if self.buttons:
            dispatcher.utter_message(text=self.text, buttons=self.buttons)
        else:
            dispatcher.utter_message(text=self.text)
        return self.events


def intent_payload(intent: str, **entities: str) -> str:
    """``/book_technician{"ticket_number":"T-000123"}``: a button that sends an intent with its entities."""
    return f"/{intent}" + (json.dumps(entities, separators=(",", ":")) if entities else "")


def choice_buttons(ticket: Ticket, *, self_help: bool = True) -> list[dict[str, str]]:
    number = ticket.number or ""
    buttons = []
    if self_help:
        buttons.append(
            {"title": "Show me what I can do now", "payload": intent_payload("fault_self_help", ticket_number=number)}
        )
    buttons.append({"title": "Book a technician", "payload": intent_payload("book_technician", ticket_number=number)})
    # The handoff itself belongs to the escalation flow; the button only asks for it.
    buttons.append({"title": "Talk to a person", "payload": "/request_human"})
    return buttons


def _zone(customer: Customer | None) -> dt.tzinfo:
    try:
        return ZoneInfo(customer.timezone) if customer is not None and customer.timezone else dt.timezone.utc
    except (ZoneInfoNotFoundError, ValueError):
        return dt.timezone.utc


def when(ts: dt.datetime, customer: Customer | None, *, now: dt.datetime | None = None) -> str:
    """A time as the customer would say it, in their own time zone: "today at 14:05", "3 Nov at 09:12"."""
    zone = _zone(customer)
    local, today = ts.astimezone(zone), (now or utcnow()).astimezone(zone).date()
    clock = f"{local:%H:%M}"
    if local.date() == today:
        return f"today at {clock}"
    if local.date() == today - dt.timedelta(days=1):
        return f"yesterday at {clock}"
    day = f"{local.day} {local:%b}" + (f" {local.year}" if local.year != today.year else "")
    return f"{day} at {clock}"


def ticket_fault(session: Session, ticket: Ticket) -> FaultDefinition | None:
    """The catalogue entry behind a ticket, when it is a known fault of the ticket's device."""
    if ticket.device is None or not ticket.fault_code:
        return None
    return get_fault(session, model_id=ticket.device.model_id, code=ticket.fault_code)


def short_title(session: Session, ticket: Ticket) -> str:
    """The fault's own title ("Door open alarm"); ticket titles also carry the model name."""
    fault = ticket_fault(session, ticket)
    return fault.title if fault is not None else ticket.title


def device_name(ticket: Ticket) -> str:
    """How the bot names the ticket's appliance ("washing machine WashPro 8 (kitchen)"), or "appliance"."""
    return ticket.device.label if ticket.device is not None else "appliance"


def bullet_list(steps: list[str]) -> str:
    """The steps as a Markdown-style list, one "- step" line each."""
    return "\n".join(f"- {s}" for s in steps)


# ---------------------------------------------------------------------------------------------------
# Proactive messages: one rendering for the push and for the copy held until the next chat.


def render_proactive(session: Session, message: ProactiveMessage) -> Reply | None:
    """The bot message a proactive outbox row stands for; None if its ticket is gone."""
    ticket = message.ticket
    if ticket is None:
        return None
    customer = get_customer(session, customer_id=message.customer_id)
    slots: list[EventType] = [SlotSet("ticket_number", ticket.number)]
    if message.kind is ProactiveKind.DEVICE_RECOVERED:
        return Reply(_recovered_text(session, message, ticket, customer), events=slots)
    if message.kind is ProactiveKind.TICKET_UPDATE:
        from actions.safety import ticket_update_text  # safety imports this module

        return Reply(ticket_update_text(ticket, message.ticket_event), events=slots)

    fault = ticket_fault(session, ticket)
    what = f"{fault.title} (code {fault.code})" if fault is not None else ticket.title
    at = when(message.detected_at or ticket.created_at, customer)
    device = device_name(ticket)
    if not ticket.status.is_open:
        # Held while the customer was away and settled since: tell them, but offer nothing to do.
        return Reply(
            f"While you were away, your {device} reported a problem {at}: {what}. Ticket {ticket.number} was "
            f"opened for it and is now {ticket.status.label}.",
            events=slots,
        )
    safety = message.safety_critical or bool(fault and fault.safety_critical)
    if safety and fault is not None and fault.self_help_steps:
        # Safety steps come before anything else: the customer may read only the first lines.
        # Shown later (held: no open chat, no consent), the fault already has a person: the worker's callback.
        person = (" A person from our service team is already on it and will contact you."
                  if open_safety_handoff(session, ticket_id=ticket.id) is not None else "")
        text = (
            f"Important, please read this first: your {device} reported {what} {at}. This can be dangerous, "
            f"so please do this now:\n{bullet_list(fault.self_help_steps)}\n\n"
            f"I've opened ticket {ticket.number} for it.{person} What would you like to do next?"
        )
        return Reply(text, choice_buttons(ticket, self_help=False), slots)
    text = (
        f"Your {device} reported a problem {at}: {what}. I've already opened ticket {ticket.number} for it, "
        "so there's nothing you need to report. What would you like to do?"
    )
    return Reply(text, choice_buttons(ticket), slots)


def _recovered_text(session: Session, message: ProactiveMessage, ticket: Ticket, customer: Customer | None) -> str:
    recovered = next((e for e in reversed(ticket.events) if e.kind is TicketEventKind.DEVICE_RECOVERED), None)
    since = recovered.created_at if recovered is not None else message.created_at
    # The device worker records when the readings were confirmed normal ("at") on the recovery event.
    stamp = (recovered.data.get("normal_since") or recovered.data.get("at")) if recovered is not None else None
    if isinstance(stamp, str):
        try:
            parsed = dt.datetime.fromisoformat(stamp)
            since = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
        except ValueError:
            pass
    text = (
        f"Good news: your {device_name(ticket)} has been reading normal again since {when(since, customer)}; "
        f"ticket {ticket.number} is marked as device-verified recovery."
    )
    if ticket.status.is_open:
        text += " This kind of fault still needs a technician to check the appliance, so the ticket stays open."
    return text + " If anything still seems wrong, just tell me and I'll look into it."


def deliver_held_messages(turn: Turn, customer_id: int) -> list[EventType]:
    """Sends what the customer has not been told yet (held, delayed or failed pushes).

    Each message is claimed (``claim_for_delivery``: a conditional UPDATE, one winner) and the claims
    committed before anything is said: a push into another tab at the same moment, or a second greeting,
    does not show it again, and a failed commit shows nothing.
    """
    channel = sender_channel(turn.tracker) or DEFAULT_CHANNEL
    claimed: list[tuple[int, Reply]] = []
    for message in undelivered_for_customer(turn.session, customer_id=customer_id):
        reply = render_proactive(turn.session, message)
        if reply is None:
            continue
        if claim_for_delivery(turn.session, message, channel=channel, conversation_id=turn.tracker.sender_id):
            claimed.append((message.id, reply))
    if not claimed:
        return []
    turn.session.commit()
    events: list[EventType] = []
    for message_id, reply in claimed:
        events += reply.send(turn.dispatcher)
        logger.info("delivered held proactive message %s in conversation %s", message_id, turn.tracker.sender_id)
    return events


def _proactive_id(tracker: Tracker) -> int | None:
    value = tracker.get_slot("proactive_id")
    if value is None:
        value = next(iter(tracker.get_latest_entity_values("proactive_id")), None)
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


class ActionNotifyDevice(CrmAction):
    """Says what the device worker asked for through ``trigger_intent`` (``EXTERNAL_device_*``).

    The intent can also be typed by anyone as ``/EXTERNAL_device_fault{...}``, so the message is only
    shown in a conversation linked to its customer. Anything wrong is logged and nothing is said: an
    unexplained message out of the blue would confuse more than silence.
    """

    kind: ProactiveKind

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        try:
            return await asyncio.to_thread(self.run_in_thread, dispatcher, tracker, domain)
        except Exception:
            logger.exception("action %s failed (conversation %s)", self.name(), tracker.sender_id)
            return [SlotSet("proactive_id", None)]

    def act(self, turn: Turn) -> list[EventType]:
        events: list[EventType] = [SlotSet("proactive_id", None)]
        sender = turn.tracker.sender_id
        channel = sender_channel(turn.tracker) or DEFAULT_CHANNEL
        customer = turn.customer
        if customer is None:
            linked = find_customer_by_identity(turn.session, channel=channel, external_id=turn.tracker.sender_id,
                                              verified_within=get_settings().verification_ttl)
            customer = get_profile(turn.session, customer_id=linked.id) if linked is not None else None
            if customer is not None:
                events += customer_slots(customer)
        message_id = _proactive_id(turn.tracker)
        message = get_message(turn.session, message_id=message_id) if message_id is not None else None
        if message is None:
            logger.warning("%s: no proactive message %r (conversation %s)", self.name(), message_id, sender)
            return events
        if customer is None or customer.id != message.customer_id:
            logger.warning("%s: proactive message %s is not for conversation %s", self.name(), message.id, sender)
            return events
        if message.status is ProactiveStatus.SENT:
            # A retried trigger must not tell the customer twice.
            logger.info("%s: proactive message %s was already sent", self.name(), message.id)
            return events
        if message.kind is not self.kind:
            logger.warning("%s: proactive message %s is a %s message", self.name(), message.id, message.kind.value)
        reply = render_proactive(turn.session, message)
        if reply is None:
            logger.warning("%s: proactive message %s has no ticket", self.name(), message.id)
            return events
        # Recorded as sent, and committed, before it is said: of racing deliveries (a greeting in another
        # tab, a retried push) exactly one shows it; if the commit fails nothing is said and the worker
        # retries (a bounded, recorded number of times).
        if not claim_for_delivery(turn.session, message, channel=channel, conversation_id=turn.tracker.sender_id):
            logger.info("%s: proactive message %s was delivered elsewhere", self.name(), message.id)
            return events
        turn.session.commit()
        return events + reply.send(turn.dispatcher)


class ActionNotifyDeviceFault(ActionNotifyDevice):
    kind = ProactiveKind.DEVICE_FAULT

    def name(self) -> str:
        return "action_notify_device_fault"


class ActionNotifyDeviceRecovered(ActionNotifyDevice):
    kind = ProactiveKind.DEVICE_RECOVERED

    def name(self) -> str:
        return "action_notify_device_recovered"
