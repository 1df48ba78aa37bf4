"""Support tickets: opening without duplicates, status workflow, events."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from crm_store.enums import (
    OPEN_TICKET_STATUSES,
    TicketEventKind,
    TicketPriority,
    TicketSource,
    TicketStatus,
)
from crm_store.errors import ConflictError, InvalidTransitionError
from crm_store.models import Ticket, TicketEvent, utcnow

logger = logging.getLogger(__name__)

ALLOWED_TRANSITIONS: dict[TicketStatus, frozenset[TicketStatus]] = {
    TicketStatus.OPEN: frozenset({TicketStatus.IN_PROGRESS, TicketStatus.WAITING_CUSTOMER, TicketStatus.RESOLVED, TicketStatus.CLOSED}),
    TicketStatus.IN_PROGRESS: frozenset({TicketStatus.OPEN, TicketStatus.WAITING_CUSTOMER, TicketStatus.RESOLVED, TicketStatus.CLOSED}),
    TicketStatus.WAITING_CUSTOMER: frozenset({TicketStatus.OPEN, TicketStatus.IN_PROGRESS, TicketStatus.RESOLVED, TicketStatus.CLOSED}),
    TicketStatus.RESOLVED: frozenset({TicketStatus.OPEN, TicketStatus.CLOSED}),
    TicketStatus.CLOSED: frozenset({TicketStatus.OPEN}),
}


def format_ticket_number(ticket_id: int) -> str:
    return f"T-{ticket_id:06d}"


def normalise_ticket_number(text: str) -> str | None:
    """``"t-123"``, ``"T000123"`` or ``"123"`` → ``"T-000123"``; None when there is no number."""
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits or len(digits) > 9:
        return None
    return format_ticket_number(int(digits))


def _load() -> Any:
    return (selectinload(Ticket.device), selectinload(Ticket.events))


def get_ticket_by_number(session: Session, *, number: str, customer_id: int | None = None) -> Ticket | None:
    """The ticket with this number; with ``customer_id``, only if it belongs to that customer."""
    normalised = normalise_ticket_number(number)
    if normalised is None:
        return None
    stmt = select(Ticket).where(Ticket.number == normalised).options(*_load())
    if customer_id is not None:
        stmt = stmt.where(Ticket.customer_id == customer_id)
    return session.scalar(stmt)


def get_ticket(session: Session, *, ticket_id: int) -> Ticket | None:
    return session.get(Ticket, ticket_id)


def list_tickets(
    session: Session,
    *,
    customer_id: int | None = None,
    device_id: int | None = None,
    only_open: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> list[Ticket]:
    """Tickets, newest first, filtered by customer, device and openness."""
    stmt = select(Ticket).options(*_load()).order_by(Ticket.created_at.desc(), Ticket.id.desc())
    if customer_id is not None:
        stmt = stmt.where(Ticket.customer_id == customer_id)
    if device_id is not None:
        stmt = stmt.where(Ticket.device_id == device_id)
    if only_open:
        stmt = stmt.where(Ticket.status.in_(OPEN_TICKET_STATUSES))
    return list(session.scalars(stmt.offset(offset).limit(limit)))


def find_open_ticket(session: Session, *, device_id: int | None, dedup_key: str, customer_id: int | None = None) -> Ticket | None:
    """The open ticket for the same device and problem, if any."""
    stmt = select(Ticket).where(Ticket.open_dedup_key == dedup_key)
    if device_id is not None:
        stmt = stmt.where(Ticket.device_id == device_id)
    else:
        stmt = stmt.where(Ticket.device_id.is_(None), Ticket.customer_id == customer_id)
    return session.scalar(stmt.options(*_load()))


def add_ticket_event(
    session: Session,
    *,
    ticket: Ticket,
    kind: TicketEventKind,
    author: str,
    body: str = "",
    is_private: bool = False,
    data: dict[str, Any] | None = None,
) -> TicketEvent:
    event = TicketEvent(ticket=ticket, kind=kind, author=author, body=body, is_private=is_private, data=data or {})
    session.add(event)
    ticket.updated_at = utcnow()
    session.flush()
    return event


def open_ticket(
    session: Session,
    *,
    customer_id: int | None,
    device_id: int | None,
    source: TicketSource,
    category: str,
    title: str,
    dedup_key: str,
    author: str,
    description: str = "",
    fault_code: str | None = None,
    priority: TicketPriority = TicketPriority.NORMAL,
) -> tuple[Ticket, bool]:
    """Open a ticket unless one is already open for the same device and problem.

    Returns ``(ticket, created)``. A repeated report is recorded as an event on the open ticket.
    The unique constraint on (device, open problem) makes this safe under concurrency: a
    racing insert fails and the winner's ticket is returned.
    """
    existing = find_open_ticket(session, device_id=device_id, dedup_key=dedup_key, customer_id=customer_id)
    if existing is None:
        ticket = Ticket(
            customer_id=customer_id,
            device_id=device_id,
            source=source,
            category=category,
            title=title[:200],
            description=description,
            fault_code=fault_code,
            priority=priority,
            status=TicketStatus.OPEN,
            dedup_key=dedup_key,
            open_dedup_key=dedup_key,
        )
        try:
            with session.begin_nested():
                session.add(ticket)
                session.flush()
                ticket.number = format_ticket_number(ticket.id)
                session.add(TicketEvent(ticket=ticket, kind=TicketEventKind.CREATED, author=author, body=description))
                session.flush()
        except IntegrityError:
            logger.info("concurrent ticket for device=%s key=%s; using the existing one", device_id, dedup_key)
            existing = find_open_ticket(session, device_id=device_id, dedup_key=dedup_key, customer_id=customer_id)
            if existing is None:
                raise
        else:
            logger.info("opened ticket %s (source=%s, category=%s)", ticket.number, source, category)
            return ticket, True
    add_ticket_event(
        session,
        ticket=existing,
        kind=TicketEventKind.DEVICE_EVENT if source is TicketSource.DEVICE else TicketEventKind.CUSTOMER_CONTACT,
        author=author,
        body=description,
        data={"repeat_report": True},
    )
    return existing, False


def change_ticket_status(
    session: Session, *, ticket: Ticket, status: TicketStatus, author: str, note: str = ""
) -> Ticket:
    """Move a ticket through the workflow, recording who did it."""
    if status == ticket.status:
        return ticket
    if status not in ALLOWED_TRANSITIONS[ticket.status]:
        raise InvalidTransitionError(f"cannot move a ticket from {ticket.status} to {status}")
    previous = ticket.status
    if status.is_open and not previous.is_open:
        clash = find_open_ticket(session, device_id=ticket.device_id, dedup_key=ticket.dedup_key, customer_id=ticket.customer_id)
        if clash is not None:
            raise ConflictError(f"ticket {clash.number} is already open for this problem")
        ticket.open_dedup_key = ticket.dedup_key
        ticket.resolved_at = None
    elif not status.is_open:
        ticket.open_dedup_key = None
        ticket.resolved_at = ticket.resolved_at or utcnow()
    ticket.status = status
    add_ticket_event(
        session,
        ticket=ticket,
        kind=TicketEventKind.STATUS_CHANGED,
        author=author,
        body=note,
        data={"from": previous.value, "to": status.value},
    )
    return ticket


def change_ticket_priority(session: Session, *, ticket: Ticket, priority: TicketPriority, author: str) -> Ticket:
    if priority != ticket.priority:
        previous = ticket.priority
        ticket.priority = priority
        add_ticket_event(
            session,
            ticket=ticket,
            kind=TicketEventKind.PRIORITY_CHANGED,
            author=author,
            data={"from": previous.value, "to": priority.value},
        )
    return ticket


def search_tickets(session: Session, *, text: str, limit: int = 20) -> list[Ticket]:
    pattern = f"%{text.lower()}%"
    stmt = select(Ticket).where(or_(Ticket.number.ilike(pattern), Ticket.title.ilike(pattern))).limit(limit)
    return list(session.scalars(stmt))
