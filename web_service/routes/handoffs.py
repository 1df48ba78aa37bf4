"""The agent console's conversations: queue, claim, live transcript, reply, notes, resolve, hand back."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, status

from crm_store.enums import HandoffMessageKind, HandoffStatus, TicketEventKind, UserRole
from crm_store.errors import ConflictError, InvalidTransitionError
from crm_store.models import Handoff, User, utcnow
from crm_store.repositories.agent_replies import record_relay_failure
from crm_store.repositories.handoffs import (
    ACTIVE,
    add_handoff_message,
    claim_bot_resume,
    claim_handoff,
    close_handoff,
    get_handoff,
    get_skills,
    list_handoffs,
    sla_breached,
)
from crm_store.repositories.tickets import add_ticket_event, change_ticket_status
from web_service import errors
from web_service.deps import SessionDep, StaffUser
from web_service.handoff_access import Action, authorize
from web_service.rasa_client import RasaClient, RasaError, transcript_from_events
from web_service.schemas import (
    AgentReply,
    AgentReplyResult,
    HandoffClose,
    HandoffCloseResult,
    HandoffCustomer,
    HandoffDetail,
    HandoffMessagePublic,
    HandoffNote,
    HandoffPublic,
    TranscriptLine,
)
from web_service.settings import WebSettings, get_settings

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/handoffs", tags=["handoffs"])
SUPERVISING = (UserRole.SUPERVISOR, UserRole.ADMIN)
VIEWS = {
    "queue": ACTIVE,
    "callbacks": (HandoffStatus.CALLBACK,),
    "closed": (HandoffStatus.RESOLVED, HandoffStatus.HANDED_BACK),
}


def rasa(settings: Annotated[WebSettings, Depends(get_settings)]) -> RasaClient:
    return RasaClient(settings)


RasaDep = Annotated[RasaClient, Depends(rasa)]


def to_public(handoff: Handoff) -> HandoffPublic:
    now = utcnow()
    end = handoff.first_response_at or handoff.closed_at or now
    return HandoffPublic(
        id=handoff.id, conversation_id=handoff.conversation_id, channel=handoff.channel, status=handoff.status,
        reason=handoff.reason, reason_label=handoff.reason.label, priority=handoff.priority,
        language=handoff.language, category=handoff.category, summary=handoff.summary,
        customer=HandoffCustomer.model_validate(handoff.customer) if handoff.customer else None,
        ticket=handoff.ticket.number if handoff.ticket else None,
        assignee=handoff.assignee.username if handoff.assignee else None,
        created_at=handoff.created_at, first_response_due_at=handoff.first_response_due_at,
        first_response_at=handoff.first_response_at, claimed_at=handoff.claimed_at, closed_at=handoff.closed_at,
        bot_resumed_at=handoff.bot_resumed_at,
        sla_breached=sla_breached(handoff, now), waiting_seconds=max(0, int((end - handoff.created_at).total_seconds())),
    )


def _get(session: SessionDep, handoff_id: int) -> Handoff:
    handoff = get_handoff(session, handoff_id=handoff_id)
    if handoff is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.HANDOFF_NOT_FOUND)
    return handoff


def release(session: SessionDep) -> None:
    """End the request's transaction before calling Rasa.

    Rasa can be slow or hang; no database transaction (SQLite's write lock) or pooled connection may wait
    with it, or /health and every other route would queue behind a frozen Rasa. Objects stay readable
    (sessions do not expire them on commit).
    """
    session.commit()


@router.get("", response_model=list[HandoffPublic])
def read_queue(
    session: SessionDep,
    user: StaffUser,
    view: Annotated[str, Query(pattern="^(queue|mine|callbacks|closed)$")] = "queue",
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
) -> list[HandoffPublic]:
    """Queue order: priority, then first-response due time. Agents see what their skills cover."""
    if view == "mine":
        handoffs = list_handoffs(session, statuses=ACTIVE, assigned_user_id=user.id, limit=limit)
    else:
        handoffs = list_handoffs(session, statuses=VIEWS[view], limit=limit)
    if user.role is UserRole.AGENT and view != "mine":
        skills = get_skills(session, user_id=user.id)
        handoffs = [h for h in handoffs if h.assigned_user_id == user.id or skills.accepts(h)]
    return [to_public(h) for h in handoffs]


@router.get("/{handoff_id}", response_model=HandoffDetail)
def read_handoff(handoff_id: int, session: SessionDep, user: StaffUser, client: RasaDep) -> HandoffDetail:
    """The packet, the agents' messages and the live transcript from Rasa's tracker.

    The CRM part is read first and the transaction ended; then the tracker is read with a short timeout,
    falling back to the packet's transcript.
    """
    handoff = _get(session, handoff_id)
    authorize(session, handoff, user, Action.READ)
    public = to_public(handoff)
    messages = [HandoffMessagePublic.model_validate(m) for m in handoff.messages]
    packet, conversation_id = handoff.packet, handoff.conversation_id
    release(session)
    live, paused = True, None
    try:
        turns, paused = transcript_from_events(client.tracker_events(conversation_id))
    except RasaError as exc:
        logger.warning("live transcript of handoff %d unavailable: %s", handoff_id, exc)
        live = False
        turns = list(packet.get("transcript") or [])
    return HandoffDetail(
        **public.model_dump(), packet=packet, messages=messages,
        transcript=[TranscriptLine.model_validate(t) for t in turns], transcript_live=live, bot_paused=paused,
    )


@router.post("/{handoff_id}/claim", response_model=HandoffPublic)
def claim(handoff_id: int, session: SessionDep, user: StaffUser) -> HandoffPublic:
    """Take a queued conversation (or a callback). Of agents claiming at once, one gets it; the others 409."""
    handoff = _get(session, handoff_id)
    authorize(session, handoff, user, Action.CLAIM)
    try:
        claim_handoff(session, handoff=handoff, user=user)
    except ConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.commit()
    return to_public(handoff)


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=64)]


@router.post("/{handoff_id}/messages", response_model=AgentReplyResult, status_code=status.HTTP_201_CREATED)
def reply(handoff_id: int, body: AgentReply, session: SessionDep, user: StaffUser, client: RasaDep,
          idempotency_key: IdempotencyKey = None) -> AgentReplyResult:
    """Saves the reply, then has the bot deliver it to the customer's channel.

    If Rasa cannot take it now, the reply stays undelivered and the relay job retries it (web_service.relay).
    A repeated send with the same ``Idempotency-Key`` header (1-64 characters; the console sends one per reply)
    answers with the reply stored the first time and sends nothing again; the load balancer retries such a send
    on another replica when the first one died before answering.
    """
    handoff = _get(session, handoff_id)
    authorize(session, handoff, user, Action.REPLY)
    text = body.body.strip()
    message = add_handoff_message(session, handoff=handoff, kind=HandoffMessageKind.AGENT, author=user.username,
                                  body=text, client_key=idempotency_key)
    if message.author != user.username or message.body != text:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "this Idempotency-Key was used for another reply")
    session.commit()  # also ends the transaction before the call to Rasa
    error = None
    try:
        # Also for a repeated send whose reply is still undelivered; the relay delivers each reply at most once.
        if message.delivered_at is None:
            client.execute(handoff.conversation_id, "action_relay_agent_messages")
    except RasaError as exc:
        logger.warning("reply %d of handoff %d not delivered yet: %s", message.id, handoff.id, exc)
        error = errors.RASA_UNAVAILABLE
        record_relay_failure(session, conversation_id=handoff.conversation_id, error=str(exc))
        session.commit()
    session.refresh(message)
    result = AgentReplyResult(message=HandoffMessagePublic.model_validate(message),
                              delivered=message.delivered_at is not None, delivery_error=error)
    session.commit()
    return result


@router.post("/{handoff_id}/notes", response_model=HandoffMessagePublic, status_code=status.HTTP_201_CREATED)
def add_note(handoff_id: int, body: HandoffNote, session: SessionDep, user: StaffUser) -> HandoffMessagePublic:
    """A private note: on the handoff and, privately, on its ticket. Never shown to the customer."""
    handoff = _get(session, handoff_id)
    authorize(session, handoff, user, Action.NOTE)
    note = add_handoff_message(session, handoff=handoff, kind=HandoffMessageKind.NOTE, author=user.username,
                               body=body.body.strip())
    if handoff.ticket is not None:
        add_ticket_event(session, ticket=handoff.ticket, kind=TicketEventKind.NOTE, author=user.username,
                         body=body.body.strip(), is_private=True)
    session.commit()
    return HandoffMessagePublic.model_validate(note)


def _close(handoff_id: int, body: HandoffClose, session: SessionDep, user: User, client: RasaClient,
           outcome: HandoffStatus) -> HandoffCloseResult:
    handoff = _get(session, handoff_id)
    closed_before = handoff.status in (HandoffStatus.RESOLVED, HandoffStatus.HANDED_BACK)
    if closed_before and handoff.bot_resumed_at is None and (handoff.assigned_user_id == user.id or user.role in SUPERVISING):
        # Closed, but Rasa did not confirm the handback last time: only retry giving the bot the conversation.
        return _resume(handoff, session, client)
    if closed_before:
        raise HTTPException(status.HTTP_409_CONFLICT, f"this conversation is already {handoff.status.value}")
    authorize(session, handoff, user, Action.CLOSE)
    owner_only = handoff.status is not HandoffStatus.CALLBACK and user.role not in SUPERVISING
    try:
        # The handoff first: its conditional UPDATE decides which of two racing closes goes on.
        close_handoff(session, handoff=handoff, status=outcome, author=user.username, note=body.note,
                      assigned_user_id=user.id if owner_only else None)
        if body.ticket_status is not None and handoff.ticket is not None:
            change_ticket_status(session, ticket=handoff.ticket, status=body.ticket_status, author=user.username,
                                 note=body.note)
    except InvalidTransitionError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except ConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.commit()
    return _resume(handoff, session, client)


def _resume(handoff: Handoff, session: SessionDep, client: RasaClient) -> HandoffCloseResult:
    """The bot resumes and asks for CSAT. On failure the handoff stays closed and the call can be repeated.

    action_handback itself records ``bot_resumed_at`` (conditionally) before it speaks, so repeated or
    racing calls show the customer the handback once.
    """
    release(session)
    error = None
    try:
        client.execute(handoff.conversation_id, "action_handback")
    except RasaError as exc:
        logger.error("handback of handoff %d failed: %s", handoff.id, exc)
        error = str(exc)
    else:
        claim_bot_resume(session, handoff_id=handoff.id)  # no-op when the action recorded it already
        session.commit()
    session.refresh(handoff)
    result = HandoffCloseResult(handoff=to_public(handoff), bot_resumed=error is None, resume_error=error)
    session.commit()
    return result


@router.post("/{handoff_id}/resolve", response_model=HandoffCloseResult)
def resolve(handoff_id: int, body: HandoffClose, session: SessionDep, user: StaffUser, client: RasaDep) -> HandoffCloseResult:
    """The customer's request is solved: the bot resumes and asks for a rating."""
    return _close(handoff_id, body, session, user, client, HandoffStatus.RESOLVED)


@router.post("/{handoff_id}/handback", response_model=HandoffCloseResult)
def hand_back(handoff_id: int, body: HandoffClose, session: SessionDep, user: StaffUser, client: RasaDep) -> HandoffCloseResult:
    """The bot can take it from here: it resumes and asks for a rating."""
    return _close(handoff_id, body, session, user, client, HandoffStatus.HANDED_BACK)
