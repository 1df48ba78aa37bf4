"""What the bot answers when the customer asks about their appliances: the self-help steps for a fault, a
technician visit, and "how is my fridge?" from the latest telemetry. The proactive messages offer the first
two as buttons (``actions.proactive``); action_resume_request answers them after verification.
"""

from __future__ import annotations

from typing import Any

from rasa_sdk.events import EventType, SlotSet
from sqlalchemy.orm import Session

from actions.devices import parse_category, sentence_case
from actions.proactive import (
    Reply,
    bullet_list,
    choice_buttons,
    device_name,
    intent_payload,
    short_title,
    ticket_fault,
    when,
)
from crm_store.enums import ApplianceCategory, JourneyStage, TicketEventKind, TicketStatus
from crm_store.models import Customer, Ticket
from crm_store.repositories.customers import CustomerProfile, get_customer
from crm_store.repositories.devices import list_devices_for_customer
from crm_store.repositories.interactions import record_interaction
from crm_store.repositories.telemetry import DeviceHealth, describe_reading, device_health
from crm_store.repositories.tickets import add_ticket_event, change_ticket_status, get_ticket_by_number, list_tickets

# The readings that say most about each kind of appliance, in the order a person would want them.
RELEVANT_METRICS: dict[ApplianceCategory, list[str]] = {
    ApplianceCategory.FRIDGE: ["compartment_temp_c", "freezer_temp_c", "door_open", "leak_sensor_wet"],
    ApplianceCategory.WASHING_MACHINE: ["leak_sensor_wet", "drum_rpm", "water_temp_c", "door_open"],
    ApplianceCategory.DISHWASHER: ["leak_sensor_wet", "water_temp_c", "door_open", "power_w"],
    ApplianceCategory.BOILER: ["co_ppm", "pressure_bar", "flow_temp_c", "water_temp_c"],
    ApplianceCategory.AIR_CONDITIONER: ["room_temp_c", "refrigerant_pressure_bar", "power_w"],
}
MAX_READINGS = 4


# ---------------------------------------------------------------------------------------------------
# The choices: self-help now, book a technician. Answered by action_resume_request after verification.


def _ticket_buttons(tickets: list[Ticket], intent: str) -> list[dict[str, str]]:
    return [
        {"title": f"{t.number}: {t.title}", "payload": intent_payload(intent, ticket_number=t.number or "")}
        for t in tickets
    ]


def _not_found(session: Session, customer: CustomerProfile, number: str, intent: str) -> Reply:
    # Same answer whether the ticket does not exist or belongs to someone else.
    open_tickets = list_tickets(session, customer_id=customer.id, only_open=True, limit=5)
    text = f"I can't find a ticket {number.upper()} on your account."
    if open_tickets:
        text += " Did you mean one of these?"
    return Reply(text, _ticket_buttons(open_tickets, intent), [SlotSet("ticket_number", None)])


def self_help_reply(session: Session, customer: CustomerProfile, number: str | None) -> Reply:
    """The catalogue's self-help steps for the ticket's fault, or for the customer's latest open device fault."""
    if number:
        ticket = get_ticket_by_number(session, number=number, customer_id=customer.id)
        if ticket is None:
            return _not_found(session, customer, number, "fault_self_help")
    else:
        open_tickets = list_tickets(session, customer_id=customer.id, only_open=True)
        ticket = next((t for t in open_tickets if t.device is not None and t.fault_code), None)
        if ticket is None:
            return Reply(
                "You don't have an open fault on any of your appliances right now. If something isn't working, "
                "tell me what's happening and I'll help.",
                [{"title": "Report a problem", "payload": "/report_problem"}],
            )
    slots: list[EventType] = [SlotSet("ticket_number", ticket.number)]
    if not ticket.status.is_open:
        return Reply(
            f"Ticket {ticket.number} ({short_title(session, ticket)}) is already {ticket.status.label}. If the "
            "problem is back, tell me what's happening and I'll open a new one.",
            [{"title": "Report a problem", "payload": "/report_problem"}],
            slots,
        )
    fault = ticket_fault(session, ticket)
    if fault is None or not fault.self_help_steps:
        return Reply(
            f"I don't have do-it-yourself steps for ticket {ticket.number} ({short_title(session, ticket)}). "
            "A technician can take a look, or I can put you through to a person.",
            choice_buttons(ticket, self_help=False),
            slots,
        )
    intro = "Please do this first, for your safety" if fault.safety_critical else "Here's what you can try now"
    text = f"{intro} ({fault.title} on your {device_name(ticket)}, ticket {ticket.number}):\n"
    text += bullet_list(fault.self_help_steps)
    if fault.needs_technician:
        text += "\n\nThis fault usually needs a technician to fix it for good, so I'd book one."
    else:
        text += "\n\nIf that doesn't sort it out, I can book a technician for you."
    return Reply(text, choice_buttons(ticket, self_help=False), slots)


def book_technician_reply(
    session: Session, customer: CustomerProfile, number: str | None, *, channel: str | None, conversation_id: str
) -> Reply:
    """Requests a technician visit on the customer's ticket, or asks which ticket when none is known."""
    if not number:
        open_tickets = list_tickets(session, customer_id=customer.id, only_open=True, limit=5)
        if not open_tickets:
            return Reply(
                "You don't have an open ticket yet. Tell me what's wrong with your appliance: I'll open a ticket "
                "and we can book a technician for it.",
                [{"title": "Report a problem", "payload": "/report_problem"}],
            )
        # Booking a visit commits our team: ask rather than guess, even with one open ticket.
        return Reply(
            "Which repair is the technician for?",
            _ticket_buttons(open_tickets, "book_technician")
            + [{"title": "Something else", "payload": "/report_problem"}],
        )
    ticket = get_ticket_by_number(session, number=number, customer_id=customer.id)
    if ticket is None:
        return _not_found(session, customer, number, "book_technician")
    slots: list[EventType] = [SlotSet("ticket_number", ticket.number)]
    what = short_title(session, ticket)
    if not ticket.status.is_open:
        return Reply(
            f"Ticket {ticket.number} ({what}) is already {ticket.status.label}. If the problem is back, "
            "tell me what's happening and I'll open a new ticket for the technician.",
            [{"title": "Report a problem", "payload": "/report_problem"}],
            slots,
        )
    if any(e.kind is TicketEventKind.TECHNICIAN_REQUESTED for e in ticket.events):
        return Reply(
            f"A technician visit is already requested for ticket {ticket.number}, so you don't need to do anything "
            "else. A technician will call you within one working day to agree on a time.",
            events=slots,
        )
    add_ticket_event(
        session, ticket=ticket, kind=TicketEventKind.TECHNICIAN_REQUESTED, author="bot",
        body="The customer asked for a technician visit in the chat.",
        data={"channel": channel, "conversation_id": conversation_id},
    )
    if ticket.status is TicketStatus.OPEN:
        change_ticket_status(session, ticket=ticket, status=TicketStatus.IN_PROGRESS, author="bot",
                             note="Technician visit requested by the customer.")
    record_interaction(
        session, customer_id=customer.id, stage=JourneyStage.START, event="technician_requested",
        channel=channel, conversation_id=conversation_id, data={"ticket": ticket.number},
    )
    text = (
        f"Done: I've asked for a technician for ticket {ticket.number} ({what}). Here's what happens next: "
        "a technician will call you within one working day on the phone number we have for you to agree on a "
        "visit time. You don't need to do anything until then."
    )
    fault = ticket_fault(session, ticket)
    if fault is not None and fault.safety_critical:
        text += " Until the visit, please keep following the safety steps and don't use the appliance."
    return Reply(text, events=slots)


# ---------------------------------------------------------------------------------------------------
# "How is my fridge doing?"


def _readings_text(health: DeviceHealth) -> str:
    readings = health.readings
    relevant = [m for m in RELEVANT_METRICS.get(health.device.model.category, []) if m in readings]
    # Fill up with whatever else the device reports when its usual metrics are missing.
    shown = relevant[:MAX_READINGS] or sorted(readings)[:3]
    if len(shown) < 2:
        shown += [m for m in sorted(readings) if m not in shown][: 2 - len(shown)]
    return ", ".join(describe_reading(m, readings[m]) for m in shown)


def _device_status_line(health: DeviceHealth, customer: Customer | None) -> str:
    name = sentence_case(health.device.label)
    if not health.has_telemetry:
        line = f"- {name}: it hasn't sent us any readings yet, so I can't see how it's doing from here."
    else:
        assert health.reported_at is not None
        state = "online" if health.online else "offline"
        readings = _readings_text(health)
        line = f"- {name}: {state}, last report {when(health.reported_at, customer)}"
        line += f": {readings}." if readings else "."
    if health.open_tickets:
        faults = "; ".join(f"{t.number} ({t.title}, {t.status.label})" for t in health.open_tickets)
        line += f" Open ticket{'s' if len(health.open_tickets) > 1 else ''}: {faults}."
    elif health.has_telemetry:
        line += " No faults reported."
    return line


def device_status_reply(session: Session, customer: CustomerProfile, appliance: Any) -> Reply:
    """How the customer's appliances (or the ones of the named kind) are doing, from their latest telemetry."""
    done: list[EventType] = [SlotSet("appliance", None)]
    devices = list_devices_for_customer(session, customer_id=customer.id)
    if not devices:
        return Reply(
            "I don't see any appliances registered to you yet, so I have no readings to show. You can register "
            "one with the serial number from its rating plate on our website.",
            events=done,
        )
    category = parse_category(appliance) if appliance else None
    chosen = [d for d in devices if category is not None and d.model.category == category]
    intro = "Here's how your appliances are doing:" if len(devices) > 1 else "Here's how your appliance is doing:"
    if category is not None and not chosen:
        intro = f"I don't see a {category.label} registered to you. " + intro
    elif category is not None:
        intro = f"Here's the latest from your {category.label}" + ("s:" if len(chosen) > 1 else ":")
    owner = get_customer(session, customer_id=customer.id)
    lines = [_device_status_line(device_health(session, d), owner) for d in (chosen or devices)]
    return Reply(intro + "\n" + "\n".join(lines), events=done)
