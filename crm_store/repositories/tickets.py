"""Support tickets: opening without duplicates, status workflow, events."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, selectinload

from crm_store.enums import (
    OPEN_TICKET_STATUSES,
    TicketEventKind,
    TicketPriority,
    TicketSource,
    TicketStatus,
)
from crm_store.errors import ConflictError, InvalidTransitionError
from crm_store.models import FaultDefinition, Ticket, TicketEvent, utcnow
from crm_store.repositories.catalogue import get_fault, match_fault

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
    # ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses (a 500 found by make fuzz).
    digits = "".join(ch for ch in text if "0" <= ch <= "9")
    if not digits or len(digits) > 9:
        return None
    return format_ticket_number(int(digits))


def _load() -> Any:
    # The device (one per ticket) joined into the ticket's own statement; the events (many) in one more.
    return (joinedload(Ticket.device), selectinload(Ticket.events))


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


def ticket_scope(*, device_id: int | None, customer_id: int | None) -> str:
    """Whose problem a ticket is about, for duplicates: the device, else the customer, else nobody known."""
    if device_id is not None:
        return f"device:{device_id}"
    if customer_id is not None:
        return f"customer:{customer_id}"
    return "anonymous"


def problem_key(session: Session, *, model_id: int | None, category: str, text: str = "") -> tuple[str, FaultDefinition | None]:
    """The one duplicate key every source (API, chat, device, escalation) gives the same problem.

    ``fault:<code>`` when the device's fault catalogue knows it (the category is one of its codes, or the
    words match a fault: "drainage", "won't drain" → ``fault:E21`` on a washing machine, the key the device
    itself reports under); otherwise ``topic:<category>`` ("topic:general"). Returns the key and the fault.
    """
    fault = None
    if model_id is not None:
        fault = get_fault(session, model_id=model_id, code=category) if category.strip() else None
        fault = fault or match_fault(session, model_id=model_id, text=f"{category} {text}")
    if fault is not None:
        return f"fault:{fault.code}", fault
    topic = "-".join(category.strip().lower().split()) or "general"
    return f"topic:{topic}"[:128], None


def find_open_ticket(session: Session, *, device_id: int | None, dedup_key: str, customer_id: int | None = None) -> Ticket | None:
    """The open ticket for the same problem of the same device (or, without a device, the same customer)."""
    scope = ticket_scope(device_id=device_id, customer_id=customer_id)
    stmt = select(Ticket).where(Ticket.dedup_scope == scope, Ticket.open_dedup_key == dedup_key)
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
    for _attempt in range(3):
        if existing is not None:
            break
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
            dedup_scope=ticket_scope(device_id=device_id, customer_id=customer_id),
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
            # PostgreSQL made this insert wait for the racing one and refused it once that committed; a
            # new statement (READ COMMITTED) sees the winner. Had the winner closed already, insert again.
            logger.info("concurrent ticket for device=%s key=%s; using the existing one", device_id, dedup_key)
            existing = find_open_ticket(session, device_id=device_id, dedup_key=dedup_key, customer_id=customer_id)
        else:
            logger.info("opened ticket %s (source=%s, category=%s)", ticket.number, source, category)
            return ticket, True
    if existing is None:
        raise ConflictError("could not open a ticket for this problem: it keeps changing; try again")
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
    """Move a ticket through the workflow, recording who did it.

    A conditional ``UPDATE … WHERE id = :id AND status = <status read>``: of two racing changes one wins.
    The loser gets ConflictError, except when both leave the ticket closed (nothing to redo). Reopening
    while another ticket is open for the same problem raises ConflictError (the partial unique index).
    """
    if status == ticket.status:
        return ticket
    if status not in ALLOWED_TRANSITIONS[ticket.status]:
        raise InvalidTransitionError(f"cannot move a ticket from {ticket.status} to {status}")
    previous = ticket.status
    now = utcnow()
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if status.is_open and not previous.is_open:
        values.update(open_dedup_key=Ticket.dedup_key, resolved_at=None)
    elif not status.is_open:
        values.update(open_dedup_key=None, resolved_at=ticket.resolved_at or now)
    stmt = (
        update(Ticket).where(Ticket.id == ticket.id, Ticket.status == previous).values(**values)
        .execution_options(synchronize_session=False)
    )
    try:
        with session.begin_nested():
            won = session.execute(stmt).rowcount == 1
    except IntegrityError as exc:
        clash = find_open_ticket(session, device_id=ticket.device_id, dedup_key=ticket.dedup_key, customer_id=ticket.customer_id)
        number = clash.number if clash is not None else "another ticket"
        raise ConflictError(f"ticket {number} is already open for this problem") from exc
    session.refresh(ticket)
    if not won:
        if not ticket.status.is_open and not status.is_open:
            return ticket  # closed by someone else meanwhile: the ticket is where this change wanted it
        raise ConflictError(f"ticket {ticket.number} changed meanwhile: it is {ticket.status.label} now")
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
    """Sets the ticket's priority, recording who did it (an event with ``{"from", "to"}``).

    A conditional ``UPDATE … WHERE id = :id AND priority = <priority read>``, as for the status: of two racing
    changes one wins, and the history's "from" is always the value it replaced. The loser gets ConflictError,
    unless the ticket already has the priority it wanted (then nothing is recorded)."""
    previous = ticket.priority
    if priority == previous:
        return ticket
    stmt = (update(Ticket).where(Ticket.id == ticket.id, Ticket.priority == previous)
            .values(priority=priority, updated_at=utcnow()).execution_options(synchronize_session=False))
    won = session.execute(stmt).rowcount == 1
    session.refresh(ticket)
    if not won:
        if ticket.priority == priority:
            return ticket
        raise ConflictError(f"ticket {ticket.number} changed meanwhile: its priority is {ticket.priority.value} now")
    add_ticket_event(session, ticket=ticket, kind=TicketEventKind.PRIORITY_CHANGED, author=author,
                     data={"from": previous.value, "to": priority.value})
    return ticket


def search_tickets(session: Session, *, text: str, limit: int = 20) -> list[Ticket]:
    pattern = f"%{text.lower()}%"
    stmt = select(Ticket).where(or_(Ticket.number.ilike(pattern), Ticket.title.ilike(pattern))).limit(limit)
    return list(session.scalars(stmt))
