"""Escalation to a person: triggers, the handoff packet, pausing the bot.

Needs in domain.yml: intents request_human and express_frustration; slot handoff_id (float, custom); form
csat_form with utter_ask_csat_score. While an agent owns a conversation it is paused (Rasa's
ConversationPaused): the customer's messages are still recorded in the tracker, the bot stays silent.
Agents' replies, the queue timeout and the handback: ``actions.agent_relay``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from rasa_sdk.events import ConversationPaused, EventType, SlotSet
from sqlalchemy.orm import Session

from actions.base import CrmAction, Turn, sender_channel
from actions.devices import parse_category
from actions.escalation_limits import REFUSED_TEXT, get_escalation_limits
from actions.transcript import (  # noqa: F401  (re-exported: the dialogue rules and tests read them here)
    INTENT_LABELS,
    bot_tried,
    fallback_streak,
    frustration_score,
    is_repetition,
    transcript,
    user_texts,
)
from actions.verification import client_key
from crm_store.enums import (
    PRIORITY_RANK,
    HandoffReason,
    HandoffStatus,
    JourneyStage,
    TicketSource,
)
from crm_store.escalation_policy import EscalationConfig, get_escalation_config
from crm_store.models import Ticket, utcnow
from crm_store.repositories.customers import CustomerProfile, get_customer
from crm_store.repositories.devices import list_devices_for_customer
from crm_store.repositories.handoffs import (
    create_handoff,
    get_active_handoff,
    queue_position,
    recent_trigger_exists,
)
from crm_store.repositories.interactions import count_ticket_contacts, record_interaction
from crm_store.repositories.telemetry import device_health
from crm_store.repositories.tickets import get_ticket_by_number, list_tickets, open_ticket, problem_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trigger:
    """Why to escalate: the reason, what exactly fired (for suppression), and the ticket concerned."""

    reason: HandoffReason
    key: str
    ticket: Ticket | None = None
    detail: str = ""


# --- CRM triggers ------------------------------------------------------------------------------------

def crm_trigger(session: Session, customer: CustomerProfile, config: EscalationConfig, now: dt.datetime | None = None) -> Trigger | None:
    """A safety fault, a high-tier customer's critical ticket or repeated contact, not escalated recently."""
    now = now or utcnow()
    since = now - dt.timedelta(hours=config.cooldown_hours)
    triggers = config.triggers
    open_tickets = list_tickets(session, customer_id=customer.id, only_open=True, limit=100)
    candidates: list[Trigger] = []
    if triggers.safety_fault.enabled:
        for ticket in open_tickets:
            fault = _fault_of(session, ticket)
            if fault is not None and fault.safety_critical:
                candidates.append(Trigger(HandoffReason.SAFETY_FAULT, f"safety_fault:{ticket.number}", ticket, fault.title))
    if triggers.vip_critical.enabled and customer.loyalty_tier in triggers.vip_critical.tiers:
        for ticket in open_tickets:
            if ticket.priority in triggers.vip_critical.ticket_priorities:
                candidates.append(Trigger(HandoffReason.VIP_CRITICAL, f"vip_critical:{ticket.number}", ticket, ticket.title))
    if triggers.repeat_contact.enabled:
        window = now - dt.timedelta(days=triggers.repeat_contact.days)
        contacts = count_ticket_contacts(session, customer_id=customer.id, since=window,
                                         events=("ticket_repeat_report", "ticket_status_asked"))
        for ticket in open_tickets:
            if contacts.get(ticket.number or "", 0) >= triggers.repeat_contact.count:
                candidates.append(Trigger(HandoffReason.REPEAT_CONTACT, f"repeat_contact:{ticket.number}", ticket,
                                          f"{contacts[ticket.number or '']} contacts in {triggers.repeat_contact.days} days"))
    for trigger in candidates:
        if not recent_trigger_exists(session, customer_id=customer.id, trigger_key=trigger.key, since=since):
            return trigger
    return None


def _fault_of(session: Session, ticket: Ticket) -> Any:
    from crm_store.repositories.catalogue import get_fault

    if ticket.device is None or not ticket.fault_code:
        return None
    return get_fault(session, model_id=ticket.device.model_id, code=ticket.fault_code)


def record_ticket_contact(turn: Turn, number: str, event: str = "ticket_status_asked") -> None:
    """Counts a customer's contact about a ticket (for the repeat-contact trigger)."""
    if turn.customer is not None:
        record_interaction(turn.session, customer_id=turn.customer.id, stage=JourneyStage.START, event=event,
                           channel=sender_channel(turn.tracker), conversation_id=turn.tracker.sender_id,
                           data={"ticket": number})


def escalate_if_needed(turn: Turn) -> list[EventType]:
    """Escalates when a CRM trigger fires for the known customer; otherwise does nothing."""
    if turn.customer is None or get_active_handoff(turn.session, conversation_id=turn.tracker.sender_id):
        return []
    trigger = crm_trigger(turn.session, turn.customer, get_escalation_config())
    return escalate(turn, trigger) if trigger else []


# --- the handoff itself ------------------------------------------------------------------------------

def _packet(turn: Turn, trigger: Trigger, ticket: Ticket | None, tried: list[str]) -> dict[str, Any]:
    session, customer = turn.session, turn.customer
    packet: dict[str, Any] = {
        "reason": trigger.reason.value,
        "reason_label": trigger.reason.label,
        "detail": trigger.detail,
        "bot_tried": tried,
        "channel": sender_channel(turn.tracker),
        "ticket": ticket.number if ticket else None,
        "transcript": transcript(turn.tracker.events),
        "customer": None,
        "devices": [],
        "open_tickets": [],
    }
    if customer is None:
        return packet
    record = get_customer(session, customer_id=customer.id)
    packet["customer"] = {
        "id": customer.id, "name": customer.full_name, "loyalty_tier": customer.loyalty_tier.value,
        "customer_since": customer.customer_since.isoformat(), "language": customer.preferred_language,
        "purchases": customer.purchase_count, "email": record.email if record else None,
        "phone": record.phone if record else None,
    }
    open_tickets = list_tickets(session, customer_id=customer.id, only_open=True, limit=50)
    packet["open_tickets"] = [
        {"number": t.number, "title": t.title, "status": t.status.value, "priority": t.priority.value,
         "fault_code": t.fault_code, "device": t.device.serial if t.device else None,
         "opened": t.created_at.isoformat()}
        for t in open_tickets
    ]
    faults_by_device: dict[int, list[str]] = {}
    for t in open_tickets:
        if t.device_id and t.fault_code:
            faults_by_device.setdefault(t.device_id, []).append(t.fault_code)
    # Each device's latest telemetry as the agent will first see it (the console charts the rest live).
    packet["devices"] = []
    for d in list_devices_for_customer(session, customer_id=customer.id):
        health = device_health(session, d)
        packet["devices"].append({
            "serial": d.serial, "label": d.label, "category": d.model.category.value, "model": d.model.name,
            "firmware": d.firmware_version, "last_seen_at": d.last_seen_at.isoformat() if d.last_seen_at else None,
            "online": health.online, "readings": health.readings,
            "readings_at": health.reported_at.isoformat() if health.reported_at else None,
            "open_faults": faults_by_device.get(d.id, []),
        })
    return packet


def _ticket_for(turn: Turn, trigger: Trigger) -> Ticket | None:
    """The ticket the handoff is about: the trigger's, the one being discussed, or a new one; None for an
    unverified chat, which opens no ticket (nobody is accountable for it: the handoff alone, rate-limited)."""
    if trigger.ticket is not None:
        return trigger.ticket
    if turn.customer is None:
        return None
    customer_id = turn.customer.id
    number = turn.tracker.get_slot("ticket_number")
    if number:
        ticket = get_ticket_by_number(turn.session, number=str(number), customer_id=customer_id)
        if ticket is not None and ticket.status.is_open:
            return ticket
    # A known customer's escalation joins their open general problem (the key the chat and the API use for
    # a problem with no device).
    dedup_key, _fault = problem_key(turn.session, model_id=None, category="general")
    ticket, _created = open_ticket(
        turn.session, customer_id=customer_id, device_id=None, source=TicketSource.CHAT, category="escalation",
        title=f"Chat escalated to an agent: {trigger.reason.label}", dedup_key=dedup_key,
        author="bot", description=trigger.detail,
    )
    return ticket


def escalate(turn: Turn, trigger: Trigger) -> list[EventType]:
    """Queue a handoff with its packet, tell the customer what happens next, pause the bot.

    Outside staffed hours (or when the trigger is switched off) the request becomes a callback on a
    ticket and the bot keeps serving the customer instead of leaving them waiting. An unverified chat's
    handoff has no ticket and is rate-limited per conversation and client address
    (``actions.escalation_limits``): past the limit nothing is queued and the customer is told what to do.
    """
    config = get_escalation_config()
    session, tracker = turn.session, turn.tracker
    existing = get_active_handoff(session, conversation_id=tracker.sender_id)
    if existing is not None:
        position = queue_position(session, handoff=existing) if existing.status is HandoffStatus.QUEUED else 0
        turn.dispatcher.utter_message(
            text="You're already waiting for a person from our team"
            + (f" (number {position} in the queue)." if position else ", who has your conversation.")
            + " Your messages here reach them."
        )
        return [ConversationPaused()]
    if turn.customer is None and not get_escalation_limits().admit(conversation=tracker.sender_id,
                                                                   client=client_key(tracker)).allowed:
        turn.dispatcher.utter_message(text=REFUSED_TEXT)
        return []
    now = utcnow()
    enabled = getattr(config.triggers, trigger.reason.value).enabled
    staffed = enabled and config.staffed_hours.is_open(now)
    ticket = _ticket_for(turn, trigger)
    tier = turn.customer.loyalty_tier if turn.customer else None
    priority = config.priority_for(getattr(config.triggers, trigger.reason.value).priority, tier)
    if ticket is not None and PRIORITY_RANK[ticket.priority] > PRIORITY_RANK[priority]:
        priority = ticket.priority
    category = (ticket.device.model.category if ticket is not None and ticket.device
                else parse_category(tracker.get_slot("appliance")))
    tried = bot_tried(tracker.events)
    summary = f"{trigger.reason.label.capitalize()}" + (f": {trigger.detail}" if trigger.detail else "") + ". Bot " + "; ".join(tried)
    handoff, created = create_handoff(
        session, conversation_id=tracker.sender_id, channel=sender_channel(tracker),
        customer_id=turn.customer.id if turn.customer else None, ticket_id=ticket.id if ticket else None,
        reason=trigger.reason,
        trigger_key=trigger.key, priority=priority,
        language=turn.customer.preferred_language if turn.customer else "en", category=category,
        summary=summary[:2000], packet=_packet(turn, trigger, ticket, tried),
        first_response_due_at=now + dt.timedelta(minutes=config.first_response_minutes[priority]),
        status=HandoffStatus.QUEUED if staffed else HandoffStatus.CALLBACK,
    )
    if not created and ticket is not None and handoff.active_key != tracker.sender_id:
        # This safety fault already has a person (a callback the device worker queued when it could not
        # reach the customer, or another chat of theirs): say so, and keep serving here.
        turn.dispatcher.utter_message(
            text=f"A person from our service team is already on ticket {ticket.number} and will contact you "
            "as soon as possible. In the meantime I'm still here for your appliances and tickets."
        )
        return [SlotSet("ticket_number", ticket.number)]
    record_interaction(session, customer_id=handoff.customer_id, stage=JourneyStage.MOTIVATION, event="escalated",
                       channel=handoff.channel, conversation_id=tracker.sender_id,
                       data={"handoff": handoff.id, "reason": trigger.reason.value,
                             "ticket": ticket.number if ticket else None})
    number = ticket.number if ticket else "your request"  # the two reasons that name it always have one
    intro = {
        HandoffReason.SAFETY_FAULT: f"Because {trigger.detail or 'a fault on your appliance'} can be dangerous, "
                                    "I'm bringing in a person from our service team right away.",
        HandoffReason.VIP_CRITICAL: f"Your ticket {number} is critical, so I'm bringing in a person from our service team.",
        HandoffReason.REPEAT_CONTACT: f"You've contacted us several times about {number}, so I'm bringing in "
                                      "a person from our service team to sort it out.",
        HandoffReason.FRUSTRATION: "I'm sorry this has been frustrating. I'm bringing in a person from our service team.",
        HandoffReason.REPEATED_FALLBACK: "I'm sorry I keep misunderstanding you. I'm bringing in a person from our service team.",
    }.get(trigger.reason, "Of course, I'm bringing in a person from our service team.")
    if not staffed:
        return _offer_callback(turn, handoff.id, ticket, config, now, enabled)
    position = queue_position(session, handoff=handoff)
    wait = position * config.minutes_per_conversation
    sees = f"our whole conversation and your ticket {ticket.number}" if ticket else "our whole conversation"
    turn.dispatcher.utter_message(
        text=f"{intro} You're number {position} in the queue; the expected wait is about {wait} minutes. "
        f"They'll see {sees}, so you won't have to repeat yourself. "
        "You can keep writing here in the meantime."
    )
    return [SlotSet("handoff_id", float(handoff.id)), *_ticket_slot(ticket), ConversationPaused()]


def _ticket_slot(ticket: Ticket | None) -> list[EventType]:
    return [SlotSet("ticket_number", ticket.number)] if ticket is not None else []


def _offer_callback(turn: Turn, handoff_id: int, ticket: Ticket | None, config: EscalationConfig, now: dt.datetime,
                    enabled: bool) -> list[EventType]:
    record = get_customer(turn.session, customer_id=turn.customer.id) if turn.customer else None
    if not enabled:
        opening = "Live chat with our team isn't available for this"
    else:
        back = config.staffed_hours.next_opening(now)
        opening = "Our service team is offline right now" + (f" (back {back:%A %H:%M})" if back else "")
    if ticket is None:  # an unverified chat: no ticket, and no contact details to call back on
        turn.dispatcher.utter_message(
            text=f"{opening}. I've passed our conversation on, and an agent will reply here as soon as they can. "
            "If you're a customer, say \"link my account\" so they can also call or e-mail you. In the meantime "
            "I'm still here to help."
        )
        return [SlotSet("handoff_id", float(handoff_id))]
    how = (f"call you back on {record.phone}" if record and record.phone
           else f"e-mail you at {record.email}" if record else "get back to you")
    turn.dispatcher.utter_message(
        text=f"{opening}. I've passed everything we discussed to them on ticket {ticket.number}, and an agent will "
        f"{how} as soon as they can. In the meantime I'm still here for your appliances and tickets."
    )
    return [SlotSet("handoff_id", float(handoff_id)), SlotSet("ticket_number", ticket.number)]


class ActionEscalate(CrmAction):
    """The customer asked for a person, or sounds frustrated: hand over, or offer a person first."""

    def name(self) -> str:
        return "action_escalate"

    def act(self, turn: Turn) -> list[EventType]:
        config = get_escalation_config()
        intent = ((turn.tracker.latest_message or {}).get("intent") or {}).get("name")
        if intent == "express_frustration":
            trigger = config.triggers.frustration
            score = frustration_score(user_texts(turn.tracker.events), phrases=trigger.phrases, said_frustrated=True)
            if not trigger.enabled or score < trigger.threshold:
                turn.dispatcher.utter_message(
                    text="I'm sorry about that. Would you like to talk to a person from our team, or shall we try again?",
                    buttons=[{"title": "Talk to a person", "payload": "/request_human"},
                             {"title": "Try again", "payload": "/ask_capabilities"}],
                )
                return []
            return escalate(turn, Trigger(HandoffReason.FRUSTRATION, "frustration", detail=f"frustration score {score}"))
        return escalate(turn, Trigger(HandoffReason.CUSTOMER_REQUEST, "customer_request"))
