"""A person for every safety-critical device fault, exactly once per fault, whichever path gets there first.

Three paths can bring in a person for one fault (its ticket): the chat's ``action_safety_handoff`` right after
the fault was shown, the greeting's CRM trigger when a held fault is shown later, and the device worker, which
queues a callback when it cannot tell the customer in a chat (no open chat, no consent, pushes failing). The
partial unique index ``uq_handoffs_open_safety_ticket`` (one open safety handoff per ticket) decides between
them; ``create_handoff`` returns the existing one to the loser.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import and_, exists, select, update
from sqlalchemy.orm import Session, selectinload

from crm_store.enums import (
    OPEN_TICKET_STATUSES,
    PRIORITY_RANK,
    HandoffReason,
    HandoffStatus,
    ProactiveKind,
    ProactiveStatus,
    TicketPriority,
)
from crm_store.models import Customer, Handoff, ProactiveMessage, Ticket

logger = logging.getLogger(__name__)

OPEN_SAFETY = (HandoffStatus.QUEUED, HandoffStatus.ASSIGNED, HandoffStatus.CALLBACK)


def safety_trigger_key(ticket: Ticket) -> str:
    """The trigger key every path uses for a ticket's safety fault (the chat's CRM trigger uses the same)."""
    return f"safety_fault:{ticket.number}"


def open_safety_handoff(session: Session, *, ticket_id: int) -> Handoff | None:
    """The open (queued, assigned or callback) safety handoff of a ticket, if any."""
    return session.scalar(
        select(Handoff).where(Handoff.ticket_id == ticket_id, Handoff.reason == HandoffReason.SAFETY_FAULT,
                              Handoff.status.in_(OPEN_SAFETY))
    )


def safety_messages_without_person(session: Session, *, limit: int = 50, lock: bool = False) -> list[ProactiveMessage]:
    """Safety-critical fault messages the customer could not be told in a chat (held: no consent, no open
    chat, pushes failing) whose open ticket has never had a safety handoff. Oldest first.

    ``lock=True``: ``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so two workers do not both plan the same one.
    """
    has_handoff = exists().where(Handoff.ticket_id == ProactiveMessage.ticket_id,
                                 Handoff.reason == HandoffReason.SAFETY_FAULT)
    stmt = (
        select(ProactiveMessage)
        .join(Ticket, and_(Ticket.id == ProactiveMessage.ticket_id, Ticket.status.in_(list(OPEN_TICKET_STATUSES))))
        .where(ProactiveMessage.safety_critical.is_(True), ProactiveMessage.kind == ProactiveKind.DEVICE_FAULT,
               ProactiveMessage.status == ProactiveStatus.HELD, ~has_handoff)
        .order_by(ProactiveMessage.created_at, ProactiveMessage.id)
        .limit(limit)
        .options(selectinload(ProactiveMessage.ticket))
    )
    if lock:
        stmt = stmt.with_for_update(skip_locked=True, of=ProactiveMessage)
    return list(session.scalars(stmt))


def callback_packet(session: Session, ticket: Ticket, *, detail: str) -> dict[str, Any]:
    """The context an agent starts from (the shape ``actions.handoff`` gives its packets), without a chat."""
    customer = session.get(Customer, ticket.customer_id) if ticket.customer_id is not None else None
    device = ticket.device
    return {
        "reason": HandoffReason.SAFETY_FAULT.value,
        "reason_label": HandoffReason.SAFETY_FAULT.label,
        "detail": detail,
        "bot_tried": ["told nobody yet: the customer had no open chat (or no consent to messages)"],
        "channel": None,
        "ticket": ticket.number,
        "transcript": [],
        "customer": None if customer is None else {
            "id": customer.id, "name": customer.full_name, "loyalty_tier": customer.loyalty_tier.value,
            "customer_since": customer.customer_since.isoformat(), "language": customer.preferred_language,
            "purchases": len(customer.purchases), "email": customer.email, "phone": customer.phone,
        },
        "devices": [] if device is None else [{
            "serial": device.serial, "label": device.label, "category": device.model.category.value,
            "model": device.model.name, "firmware": device.firmware_version,
            "last_seen_at": device.last_seen_at.isoformat() if device.last_seen_at else None,
            "online": None, "readings": {}, "readings_at": None, "open_faults": [ticket.fault_code] if ticket.fault_code else [],
        }],
        "open_tickets": [{"number": ticket.number, "title": ticket.title, "status": ticket.status.value,
                          "priority": ticket.priority.value, "fault_code": ticket.fault_code,
                          "device": device.serial if device else None, "opened": ticket.created_at.isoformat()}],
    }


def queue_safety_callback(
    session: Session,
    *,
    message: ProactiveMessage,
    conversation_id: str | None,
    priority: TicketPriority,
    first_response_due_at: dt.datetime,
) -> tuple[Handoff, bool]:
    """A callback handoff for a safety fault nobody could be told about in a chat: ``(handoff, created)``.

    ``conversation_id``: the customer's latest chat (the agent reads its transcript), else ``ticket:<number>``.
    The handoff carries the ticket, the ticket's priority or ``priority`` (the higher), and the same
    trigger key as the chat's CRM trigger, so the customer's next chat does not queue a second one.
    """
    from crm_store.repositories.handoffs import create_handoff  # handoffs imports this module

    ticket = message.ticket
    if PRIORITY_RANK[ticket.priority] > PRIORITY_RANK[priority]:
        priority = ticket.priority
    detail = ticket.title
    device = ticket.device
    customer = session.get(Customer, ticket.customer_id) if ticket.customer_id is not None else None
    return create_handoff(
        session, conversation_id=conversation_id or f"ticket:{ticket.number}", channel=None,
        customer_id=ticket.customer_id, ticket_id=ticket.id, reason=HandoffReason.SAFETY_FAULT,
        trigger_key=safety_trigger_key(ticket), priority=priority,
        language=customer.preferred_language if customer is not None else "en",
        category=device.model.category if device is not None else None,
        summary=(f"Safety-critical fault on a device: {detail}. The customer has not been told in a chat yet "
                 f"(ticket {ticket.number}): call them."),
        packet=callback_packet(session, ticket, detail=detail),
        first_response_due_at=first_response_due_at, status=HandoffStatus.CALLBACK,
    )


def raise_priority(session: Session, *, handoff_id: int, priority: TicketPriority) -> bool:
    """Moves an open handoff up to ``priority`` (never down): one conditional UPDATE; True if it moved."""
    lower = [p for p, rank in PRIORITY_RANK.items() if rank < PRIORITY_RANK[priority]]
    stmt = (
        update(Handoff)
        .where(Handoff.id == handoff_id, Handoff.status.in_(OPEN_SAFETY), Handoff.priority.in_(lower))
        .values(priority=priority).execution_options(synchronize_session=False)
    )
    return session.execute(stmt).rowcount == 1

