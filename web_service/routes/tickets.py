"""Tickets: list, open (without duplicates), read, update status and priority, add notes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from crm_store.enums import TicketEventKind, TicketSource
from crm_store.errors import ConflictError, InvalidTransitionError
from crm_store.repositories.customers import get_customer
from crm_store.repositories.devices import get_device_by_serial
from crm_store.repositories.proactive import last_status_change_id, queue_ticket_update
from crm_store.repositories.tickets import (
    add_ticket_event,
    change_ticket_priority,
    change_ticket_status,
    get_ticket_by_number,
    list_tickets,
    open_ticket,
    problem_key,
)
from web_service import errors
from web_service.deps import SessionDep, StaffUser
from web_service.schemas import TicketCreate, TicketDetail, TicketNoteCreate, TicketPublic, TicketUpdate

router = APIRouter(prefix="/api/tickets", tags=["tickets"])


@router.get("", response_model=list[TicketPublic])
def read_tickets(
    session: SessionDep,
    _user: StaffUser,
    customer_id: int | None = None,
    only_open: bool = False,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[TicketPublic]:
    tickets = list_tickets(session, customer_id=customer_id, only_open=only_open, offset=offset, limit=limit)
    return [TicketPublic.model_validate(t) for t in tickets]


@router.post("", response_model=TicketDetail, status_code=status.HTTP_201_CREATED)
def create_ticket(body: TicketCreate, session: SessionDep, user: StaffUser, response: Response) -> TicketDetail:
    """Open a ticket; answers 200 with the existing ticket when the same problem is already open."""
    if get_customer(session, customer_id=body.customer_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.CUSTOMER_NOT_FOUND)
    device = None
    if body.device_serial:
        device = get_device_by_serial(session, serial=body.device_serial)
        if device is None or device.customer_id != body.customer_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, errors.DEVICE_NOT_FOUND)
    # The same duplicate key the chat and the device use: staff's "drainage" ticket and the customer's
    # "my washing machine won't drain" are one problem (fault:E21 on that washing machine).
    dedup_key, fault = problem_key(session, model_id=device.model_id if device else None, category=body.category,
                                   text=f"{body.title} {body.description}")
    try:
        ticket, created = open_ticket(
            session, customer_id=body.customer_id, device_id=device.id if device else None, source=TicketSource.API,
            category=body.category, title=body.title, dedup_key=dedup_key, author=user.username,
            description=body.description, priority=body.priority, fault_code=fault.code if fault else None,
        )
    except ConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.commit()
    if not created:
        response.status_code = status.HTTP_200_OK
    return TicketDetail.model_validate(ticket)


@router.get("/{number}", response_model=TicketDetail)
def read_ticket(number: str, session: SessionDep, _user: StaffUser) -> TicketDetail:
    ticket = get_ticket_by_number(session, number=number)
    if ticket is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.TICKET_NOT_FOUND)
    return TicketDetail.model_validate(ticket)


@router.patch("/{number}", response_model=TicketDetail)
def update_ticket(number: str, body: TicketUpdate, session: SessionDep, user: StaffUser) -> TicketDetail:
    """Change priority and/or status. A status change is told to the customer through the bot's proactive
    path (queued in this transaction, so with the change or not at all; consent and quiet hours apply)."""
    ticket = get_ticket_by_number(session, number=number)
    if ticket is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.TICKET_NOT_FOUND)
    try:
        if body.priority is not None:
            change_ticket_priority(session, ticket=ticket, priority=body.priority, author=user.username)
        if body.status is not None:
            seen = last_status_change_id(session, ticket_id=ticket.id)
            change_ticket_status(session, ticket=ticket, status=body.status, author=user.username, note=body.note)
            queue_ticket_update(session, ticket=ticket, after_event_id=seen)
    except InvalidTransitionError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except ConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.commit()
    session.refresh(ticket)
    return TicketDetail.model_validate(ticket)


@router.post("/{number}/notes", response_model=TicketDetail, status_code=status.HTTP_201_CREATED)
def add_note(number: str, body: TicketNoteCreate, session: SessionDep, user: StaffUser) -> TicketDetail:
    ticket = get_ticket_by_number(session, number=number)
    if ticket is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.TICKET_NOT_FOUND)
    add_ticket_event(session, ticket=ticket, kind=TicketEventKind.NOTE, author=user.username, body=body.body,
                     is_private=body.is_private)
    session.commit()
    session.refresh(ticket)
    return TicketDetail.model_validate(ticket)
