"""Problems and tickets: which device, what symptom, opening a ticket once, ticket status."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.base import CrmAction, CrmFormValidationAction, Turn, crm_session, sender_channel
from actions.devices import parse_category, sentence_case
from actions.dialogue import appliance_of, check_turn, describes_problem
from actions.handoff import escalate_if_needed
from actions.verification import VerificationMixin
from crm_store.enums import FaultSeverity, JourneyStage, TicketEventKind, TicketPriority, TicketSource
from crm_store.models import Device, Ticket
from crm_store.repositories.catalogue import match_fault
from crm_store.repositories.customers import CustomerProfile
from crm_store.repositories.devices import list_devices_for_customer
from crm_store.repositories.interactions import record_interaction
from crm_store.repositories.tickets import get_ticket_by_number, list_tickets, open_ticket, problem_key

logger = logging.getLogger(__name__)

# device_serial value for a customer with no registered device: the ticket is opened without one.
NO_DEVICE = "unregistered"
SYMPTOM_MAX_CHARS = 2000
ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3, "fifth": 4, "last": -1}
PROBLEM_SLOTS = ["device_serial", "symptom"]
TEAM_UPDATES = (TicketEventKind.STATUS_CHANGED, TicketEventKind.NOTE)


def ticket_line(ticket: Ticket) -> str:
    updated = ticket.updated_at.strftime("%d %b %Y")
    return f"- {ticket.number}: {ticket.title}, {ticket.status.label} (last update {updated})"


def describe_ticket_status(session: Session, customer: CustomerProfile, number: str | None) -> str:
    """The status of one of the customer's tickets, or of all their open ones."""
    if number:
        ticket = get_ticket_by_number(session, number=number, customer_id=customer.id)
        if ticket is None:
            # Same answer whether the ticket does not exist or belongs to someone else.
            return f"I can't find a ticket {number.upper()} on your account. " + _open_tickets_text(session, customer)
        text = f"Ticket {ticket.number} ({ticket.title}) is {ticket.status.label}."
        if ticket.resolved_at is not None and not ticket.status.is_open:
            text += f" It was resolved on {ticket.resolved_at:%d %b %Y}."
        # Only what the team wrote counts as an update, not the customer's own report.
        latest = next(
            (e for e in reversed(ticket.events) if e.kind in TEAM_UPDATES and not e.is_private and e.body), None
        )
        if latest is not None:
            text += f" Latest update: {latest.body}"
        return text
    return _open_tickets_text(session, customer)


def ticket_asked_about(session: Session, customer: CustomerProfile, number: str | None) -> str | None:
    """The customer's ticket a status question is about: the one named, or their only open one."""
    if number:
        ticket = get_ticket_by_number(session, number=number, customer_id=customer.id)
        return ticket.number if ticket else None
    open_tickets = list_tickets(session, customer_id=customer.id, only_open=True, limit=2)
    return open_tickets[0].number if len(open_tickets) == 1 else None


def _open_tickets_text(session: Session, customer: CustomerProfile) -> str:
    open_tickets = list_tickets(session, customer_id=customer.id, only_open=True)
    if open_tickets:
        return "Your open tickets:\n" + "\n".join(ticket_line(t) for t in open_tickets)
    recent = list_tickets(session, customer_id=customer.id, limit=1)
    if recent:
        return f"You have no open tickets. The most recent one, {recent[0].number} ({recent[0].title}), is {recent[0].status.label}."
    return "You have no tickets with us."


def _candidates(devices: list[Device], appliance: Any) -> list[Device]:
    category = parse_category(appliance) if appliance else None
    if category is None:
        return devices
    return [d for d in devices if d.model.category == category] or devices


def shown_devices_event(session: Session, customer_id: int, appliance: Any) -> EventType:
    """Remembers the list of devices the bot just showed, in its order, for "the second one"."""
    shown = _candidates(list_devices_for_customer(session, customer_id=customer_id), appliance)
    return SlotSet("shown_devices", [d.serial for d in shown])


def _shown(devices: list[Device], serials: Any) -> list[Device]:
    by_serial = {d.serial: d for d in devices}
    listed = [by_serial[s] for s in serials or [] if s in by_serial]
    return listed or devices


def _pick_device(devices: list[Device], text: str, entities: list[dict[str, Any]],
                 listed: list[Device] | None = None) -> Device | None:
    """The device the customer means in ``text``: serial, model name, location, type or "the second" (counted in
    ``listed``, the list the customer was shown, when given)."""
    serials = {d.serial.upper(): d for d in devices}
    for entity in entities:
        if entity.get("entity") == "serial_number" and str(entity.get("value", "")).upper() in serials:
            return serials[str(entity["value"]).upper()]
    # The NLU's product_model entity carries the catalogue's full name for short forms ("my thermacore 30").
    named = {str(e.get("value", "")).lower() for e in entities if e.get("entity") == "product_model"}
    by_model = [d for d in devices if d.model.name.lower() in named]
    if len(by_model) == 1:
        return by_model[0]
    lowered = text.lower()
    for serial, device in serials.items():
        if serial.lower() in lowered:
            return device
    for matcher in (
        lambda d: d.model.name.lower() in lowered,
        lambda d: bool(d.location) and d.location.lower() in lowered,
        lambda d: d.model.category.label in lowered,
    ):
        found = [d for d in devices if matcher(d)]
        if len(found) == 1:
            return found[0]
    listed = listed or devices
    for word, index in ORDINALS.items():
        if re.search(rf"\b{re.escape(word)}\b", lowered) and -len(listed) <= index < len(listed):
            return listed[index]
    number = re.fullmatch(r"\s*(?:number\s*|no\.?\s*|#)?(\d)\s*\.?\s*", lowered)
    if number and 1 <= int(number.group(1)) <= len(listed):
        return listed[int(number.group(1)) - 1]
    return None


class ValidateProblemForm(VerificationMixin, CrmFormValidationAction):
    """Collects which device and what symptom; verifies the customer first when needed."""

    def name(self) -> str:
        return "validate_problem_form"

    def interrupt(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType] | None:
        return check_turn("problem_form", dispatcher, tracker, domain)

    async def required_slots(
        self, domain_slots: list[str], dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[str]:
        if self.needs_verification(tracker):
            return self.VERIFY_SLOTS + PROBLEM_SLOTS
        if tracker.get_slot("customer_id") is None:
            return []  # verification locked: action_open_ticket explains what to do instead
        return PROBLEM_SLOTS

    def closing_action(self) -> CrmAction:
        return ActionOpenTicket()

    async def _extract_validation_events(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        events = await self.get_validation_events(dispatcher, tracker, domain)
        tracker.add_slots(events)
        if any(e.get("event") == "slot" and e.get("name") == "customer_id" and e.get("value") is not None
               for e in events):
            # Verified by this message: the device and symptom the customer named before are known now too
            # (extraction ran before verification), so don't ask for them again.
            found = await self.get_extraction_events(dispatcher, tracker, domain)
            tracker.add_slots(found)
            events += found
        next_slot = await self.next_requested_slot(dispatcher, tracker, domain)
        if next_slot:
            events.append(next_slot)
        return events

    def extract_device_serial(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        customer_id = tracker.get_slot("customer_id")
        if tracker.get_slot("device_serial") or customer_id is None:
            return {}
        asked = tracker.get_slot("requested_slot") == "device_serial"
        with crm_session(write=False) as session:
            devices = list_devices_for_customer(session, customer_id=int(customer_id))
            if not devices:
                return {"device_serial": NO_DEVICE}
            appliance = appliance_of(tracker)
            candidates = _candidates(devices, appliance)
            latest = tracker.latest_message or {}
            # Asked with buttons: "the second one" counts in the list shown, never in all the customer's devices.
            shown = _shown(devices, tracker.get_slot("shown_devices")) if asked else candidates
            listed = shown if asked or not tracker.get_slot("shown_devices") else _shown(
                devices, tracker.get_slot("shown_devices"))
            picked = _pick_device(shown if asked else candidates, latest.get("text") or "",
                                  latest.get("entities") or [], listed)
            if picked is None and asked:
                # Named by something the buttons did not show ("my boiler" after the fridges): any device.
                picked = _pick_device(devices, latest.get("text") or "", latest.get("entities") or [], listed)
            if picked is None and len(candidates) == 1 and (len(devices) == 1 or appliance):
                picked = candidates[0]
            if picked is not None:
                return {"device_serial": picked.serial}
        if asked:
            dispatcher.utter_message(text="Sorry, I couldn't tell which appliance you mean.")
            return {"device_serial": None}
        return {}

    def extract_symptom(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        # "my fridge is not cooling" already says what is wrong: don't ask again when the first
        # message matches the device's fault catalogue.
        serial, first = tracker.get_slot("device_serial"), tracker.get_slot("problem_text")
        if tracker.get_slot("symptom") or not serial or serial == NO_DEVICE or not first:
            return {}
        with crm_session(write=False) as session:
            devices = {d.serial: d for d in list_devices_for_customer(session, customer_id=int(tracker.get_slot("customer_id")))}
            device = devices.get(serial)
            if device is not None and match_fault(session, model_id=device.model_id, text=first) is not None:
                return {"symptom": first}
        # No catalogue match, but the customer said what is wrong: the ticket takes their own words.
        if describes_problem(first):
            return {"symptom": first}
        return {}

    def validate_symptom(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        text = str(slot_value or "").strip()
        if sum(ch.isalnum() for ch in text) < 3:
            dispatcher.utter_message(text="Could you describe the problem in a few words? For example: \"it doesn't drain\".")
            return {"symptom": None}
        return {"symptom": text[:SYMPTOM_MAX_CHARS]}


class ActionAskDeviceSerial(CrmAction):
    """Asks which appliance, offering the customer's devices as buttons."""

    writes = False

    def name(self) -> str:
        return "action_ask_device_serial"

    def act(self, turn: Turn) -> list[EventType]:
        if turn.customer is None:
            return []
        devices = list_devices_for_customer(turn.session, customer_id=turn.customer.id)
        appliance = appliance_of(turn.tracker)
        category = parse_category(appliance)
        shown = _candidates(devices, appliance)
        intro = "Which appliance is it?"
        if category is not None and all(d.model.category != category for d in devices):
            intro = f"I don't see a {category.label} registered to you. Which of your appliances is it?"
        events = [SlotSet("shown_devices", [d.serial for d in shown])]
        turn.dispatcher.utter_message(
            text=intro,
            buttons=[
                {
                    "title": f"{sentence_case(d.label)} ({d.serial})",
                    "payload": "/inform" + json.dumps({"serial_number": d.serial}),
                }
                for d in shown
            ],
        )
        return events


def _priority(severity: FaultSeverity | None, safety_critical: bool) -> TicketPriority:
    if safety_critical:
        return TicketPriority.URGENT
    if severity is FaultSeverity.CRITICAL:
        return TicketPriority.HIGH
    return TicketPriority.NORMAL


class ActionOpenTicket(CrmAction):
    """Opens a ticket for the described problem, or points to the one already open for it."""

    def name(self) -> str:
        return "action_open_ticket"

    def act(self, turn: Turn) -> list[EventType]:
        reset = [SlotSet(s, None) for s in ("device_serial", "symptom", "problem_text", "appliance", "verify_email",
                                            "verify_reference", "form_interrupted")]
        if turn.tracker.get_slot("form_interrupted"):
            return reset  # the form was stopped for a person: nothing to open here
        if turn.customer is None:
            turn.dispatcher.utter_message(
                text=(
                    "I can only open a ticket for a verified customer. Please contact our service team, "
                    "who can check your details another way."
                )
            )
            return reset
        serial = turn.tracker.get_slot("device_serial")
        symptom = str(turn.tracker.get_slot("symptom") or "").strip()
        device = next(
            (d for d in list_devices_for_customer(turn.session, customer_id=turn.customer.id) if d.serial == serial),
            None,
        )
        # The duplicate key every source uses (fault:<code> from the device's catalogue, else topic:general),
        # so this report joins a ticket the device or staff opened for the same problem.
        dedup, fault = problem_key(turn.session, model_id=device.model_id if device else None, category="general",
                                   text=symptom)
        if fault is not None:
            category, title = fault.code, f"{fault.title} ({device.model.name})"  # type: ignore[union-attr]
        else:
            what = device.model.category.label if device else "appliance"
            category, title = "general", f"{what.capitalize()} problem reported in chat"
        ticket, created = open_ticket(
            turn.session,
            customer_id=turn.customer.id,
            device_id=device.id if device else None,
            source=TicketSource.CHAT,
            category=category,
            title=title,
            dedup_key=dedup,
            author="bot",
            description=symptom,
            fault_code=fault.code if fault else None,
            priority=_priority(fault.severity if fault else None, bool(fault and fault.safety_critical)),
        )
        record_interaction(
            turn.session, customer_id=turn.customer.id, stage=JourneyStage.START,
            event="ticket_opened" if created else "ticket_repeat_report", channel=sender_channel(turn.tracker),
            conversation_id=turn.tracker.sender_id, data={"ticket": ticket.number},
        )
        if not created:
            turn.dispatcher.utter_message(
                text=(
                    f"You already have ticket {ticket.number} open for this ({ticket.title}, {ticket.status.label}, "
                    f"opened {ticket.created_at:%d %b %Y}), so I haven't opened a second one. "
                    "I've added what you told me to it."
                )
            )
            return reset + [SlotSet("ticket_number", ticket.number)] + escalate_if_needed(turn)
        parts = [f"I've opened ticket {ticket.number} for your {device.label if device else 'appliance'}: {title}."]
        if fault is not None and fault.safety_critical:
            parts.insert(0, "This can be dangerous. Please do this now:\n" + "\n".join(f"- {s}" for s in fault.self_help_steps))
        elif fault is not None and fault.self_help_steps:
            parts.append("While you wait, this often helps:\n" + "\n".join(f"- {s}" for s in fault.self_help_steps))
        if fault is not None and fault.needs_technician:
            parts.append("A technician will need to look at it; our team will contact you to book a visit.")
        buttons: list[dict[str, str]] = []
        if fault is None:
            # Not in the catalogue: the customer's own words are on the ticket; a person or a technician is next.
            parts.append("I've put your description on the ticket as you wrote it. Our team will look at it and get "
                         "back to you; if you like, I can book a technician now or bring in a person.")
            buttons = [{"title": "Book a technician", "payload": f'/book_technician{{"ticket_number":"{ticket.number}"}}'},
                       {"title": "Talk to a person", "payload": "/request_human"}]
        parts.append(f"You can ask me about {ticket.number} any time.")
        if buttons:
            turn.dispatcher.utter_message(text="\n\n".join(parts), buttons=buttons)
        else:
            turn.dispatcher.utter_message(text="\n\n".join(parts))
        return reset + [SlotSet("ticket_number", ticket.number)] + escalate_if_needed(turn)
