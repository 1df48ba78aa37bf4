"""The agent console's and the web chat's live side: typing/sent signals, the change feed the push
connections are fed from, customers' photos, canned responses, conversation search and fault titles.

The change feed is read by one background task per web process (``web_service.live``): each read compares
the active handoffs with the previous read's snapshot and returns what is new since the cursor, so that
every replica sees every change whichever replica (or the bot) wrote it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from crm_store.enums import HandoffStatus
from crm_store.errors import ConflictError
from crm_store.id_cursor import IdCursor
from crm_store.models import (
    Attachment,
    CannedResponse,
    ConversationSignal,
    Customer,
    Device,
    FaultDefinition,
    Handoff,
    HandoffMessage,
    Ticket,
    TicketEvent,
    User,
    utcnow,
)

WATCHED = (HandoffStatus.QUEUED, HandoffStatus.ASSIGNED, HandoffStatus.CALLBACK)
SIGNAL_TTL = dt.timedelta(minutes=5)


# --- signals ------------------------------------------------------------------------------------------------

def add_signal(session: Session, *, conversation_id: str, party: str, kind: str, author: str | None = None) -> int:
    """Records ``party`` (customer | agent) ``kind`` (typing | sent) in a conversation; returns its id."""
    row = ConversationSignal(conversation_id=conversation_id, party=party, kind=kind, author=author)
    session.add(row)
    session.flush()
    return row.id


def prune_signals(session: Session, *, now: dt.datetime | None = None) -> int:
    """Deletes signals older than ``SIGNAL_TTL``; returns how many."""
    cutoff = (now or utcnow()) - SIGNAL_TTL
    return session.execute(delete(ConversationSignal).where(ConversationSignal.created_at < cutoff)).rowcount or 0


# --- change feed --------------------------------------------------------------------------------------------

@dataclass
class FeedCursor:
    """Where a reader of the feed stands: the watched handoffs' states and, per table, an :class:`IdCursor`
    (the highest id seen and the lower ids not seen yet). Not started (the first read only sets it) until
    ``messages.last`` is set."""

    handoffs: dict[int, tuple[str, int | None]] = field(default_factory=dict)  # id -> (status, assignee id)
    messages: IdCursor = field(default_factory=IdCursor)
    signals: IdCursor = field(default_factory=IdCursor)
    attachments: IdCursor = field(default_factory=IdCursor)


def _unseen(cursor: IdCursor, column: Any, now: float) -> Any:
    """Rows after the cursor's highest id, and its recent holes (ids committed late, see crm_store.id_cursor)."""
    after, holes = column > (cursor.last or 0), cursor.pending(now)
    return or_(after, column.in_(holes)) if holes else after


def read_feed(session: Session, cursor: FeedCursor, *, now: float | None = None) -> list[dict[str, Any]]:
    """Events since ``cursor`` (updated in place), oldest kinds first. Each event is a dict with ``type``:

    - ``handoff``: ``id``, ``conversation_id``, ``status``, ``assignee`` (user name or None), ``agent_name``
      (the assignee's first name) and ``change`` (new | status | assignee);
    - ``message``: ``handoff_id``, ``conversation_id``, ``kind`` (agent | note | system), ``id``;
    - ``signal``: ``id``, ``conversation_id``, ``party``, ``kind``, ``author``;
    - ``attachment``: ``id``, ``conversation_id``, ``handoff_id``.
    Ids only, no personal data: clients fetch what they may see through the authenticated API.

    A row whose transaction committed after a higher id was read is delivered at a later read (within
    ``HOLE_SECONDS``), once. ``now``: seconds on the monotonic clock (default: ``time.monotonic()``). The cursor
    changes only when every query succeeded: after an error, reading again with it delivers the same events.
    """
    now = time.monotonic() if now is None else now
    started = cursor.messages.started
    events: list[dict[str, Any]] = []
    rows = session.execute(
        select(Handoff.id, Handoff.conversation_id, Handoff.status, Handoff.assigned_user_id, User.username, User.full_name)
        .outerjoin(User, User.id == Handoff.assigned_user_id)
        .where(or_(Handoff.status.in_(WATCHED), Handoff.id.in_(list(cursor.handoffs) or [-1])))
    ).all()
    snapshot: dict[int, tuple[str, int | None]] = {}
    for hid, conv, status, assignee_id, username, full_name in rows:
        now_state = (HandoffStatus(status).value, assignee_id)
        before = cursor.handoffs.get(hid)
        if HandoffStatus(status) in WATCHED:
            snapshot[hid] = now_state
        if started and before != now_state:
            change = "new" if before is None else ("status" if before[0] != now_state[0] else "assignee")
            events.append({"type": "handoff", "id": hid, "conversation_id": conv, "status": now_state[0],
                           "assignee": username, "agent_name": (full_name or username or "").split()[0] if username else None,
                           "change": change})

    if not started:
        messages = IdCursor.at(session.scalar(select(func.max(HandoffMessage.id))))
        signals = IdCursor.at(session.scalar(select(func.max(ConversationSignal.id))))
        attachments = IdCursor.at(session.scalar(select(func.max(Attachment.id))))
    else:
        found_messages = session.execute(
            select(HandoffMessage.id, HandoffMessage.handoff_id, HandoffMessage.kind, Handoff.conversation_id)
            .join(Handoff, Handoff.id == HandoffMessage.handoff_id)
            .where(_unseen(cursor.messages, HandoffMessage.id, now)).order_by(HandoffMessage.id)
        ).all()
        events += [{"type": "message", "id": mid, "handoff_id": hid, "conversation_id": conv, "kind": str(kind.value)}
                   for mid, hid, kind, conv in found_messages]
        messages = cursor.messages.advanced([r[0] for r in found_messages], now)

        found_signals = list(session.scalars(select(ConversationSignal).where(
            _unseen(cursor.signals, ConversationSignal.id, now)).order_by(ConversationSignal.id)))
        events += [signal_event(s) for s in found_signals]
        signals = cursor.signals.advanced([s.id for s in found_signals], now)

        found_attachments = session.execute(
            select(Attachment.id, Attachment.conversation_id, Attachment.handoff_id)
            .where(_unseen(cursor.attachments, Attachment.id, now)).order_by(Attachment.id)
        ).all()
        events += [{"type": "attachment", "id": aid, "conversation_id": conv, "handoff_id": hid}
                   for aid, conv, hid in found_attachments]
        attachments = cursor.attachments.advanced([r[0] for r in found_attachments], now)
    # Only now that every query succeeded: a read that failed half-way leaves the whole cursor where it was.
    cursor.handoffs, cursor.messages, cursor.signals, cursor.attachments = snapshot, messages, signals, attachments
    return events


def signal_event(s: ConversationSignal) -> dict[str, Any]:
    return {"type": "signal", "id": s.id, "conversation_id": s.conversation_id, "party": s.party, "kind": s.kind,
            "author": s.author}


def current_agent(session: Session, *, conversation_id: str) -> str | None:
    """The first name of the agent talking in the conversation now (an assigned handoff), else None."""
    row = session.execute(
        select(User.full_name, User.username).join(Handoff, Handoff.assigned_user_id == User.id)
        .where(Handoff.conversation_id == conversation_id, Handoff.status == HandoffStatus.ASSIGNED)
        .order_by(Handoff.id.desc()).limit(1)
    ).first()
    return (row[0] or row[1]).split()[0] if row else None


# --- attachments --------------------------------------------------------------------------------------------

def latest_handoff_for(session: Session, *, conversation_id: str) -> Handoff | None:
    return session.scalars(select(Handoff).where(Handoff.conversation_id == conversation_id)
                           .order_by(Handoff.id.desc()).limit(1)).first()


def add_attachment(session: Session, *, conversation_id: str, handoff: Handoff | None, ticket: Ticket | None,
                   filename: str, content_type: str, data: bytes) -> Attachment:
    """Stores a photo (already checked by the caller) with the conversation's handoff and ticket."""
    row = Attachment(conversation_id=conversation_id, handoff_id=handoff.id if handoff else None,
                     ticket_id=ticket.id if ticket else None, filename=filename[:200], content_type=content_type,
                     size=len(data), sha256=hashlib.sha256(data).hexdigest(), data=data)
    session.add(row)
    session.flush()
    return row


def delete_attachments(session: Session, where: Any, *, marker: str, limit: int | None = None) -> int:
    """Deletes the photos matching ``where`` (at most ``limit``, oldest first) and blanks the ticket events that
    announced them (``/chat/uploads`` records one with the file name in ``body`` and ``{"attachment_id"}`` in
    ``data``): ``body`` becomes ``marker`` ("[erased]", "[expired]") and ``data`` ``{}``, so a ticket neither keeps
    the customer's file name nor points at a photo that is gone. Returns the number of photos deleted."""
    stmt = select(Attachment.id, Attachment.ticket_id).where(where).order_by(Attachment.id)
    rows = session.execute(stmt.limit(limit) if limit else stmt).all()
    if not rows:
        return 0
    ids = [r.id for r in rows]
    tickets = sorted({r.ticket_id for r in rows if r.ticket_id is not None})
    if tickets:
        # The event is on the photo's ticket (both written in one transaction): the ticket id narrows the scan
        # to the ticket_id index before the JSON is read.
        session.execute(update(TicketEvent).where(TicketEvent.ticket_id.in_(tickets),
                                                  TicketEvent.data["attachment_id"].as_integer().in_(ids))
                        .values(body=marker, data={}).execution_options(synchronize_session=False))
    return int(session.execute(delete(Attachment).where(Attachment.id.in_(ids))
                               .execution_options(synchronize_session=False)).rowcount or 0)


def _of_handoff(handoff: Handoff) -> Any:
    """Whether an attachment belongs to the handoff: sent in its conversation or for its ticket."""
    cond = Attachment.conversation_id == handoff.conversation_id
    return or_(cond, Attachment.ticket_id == handoff.ticket_id) if handoff.ticket_id else cond


def list_attachments(session: Session, *, handoff: Handoff) -> list[Attachment]:
    """The photos of the handoff's conversation and of its ticket, oldest first (without loading bytes)."""
    return list(session.scalars(select(Attachment).where(_of_handoff(handoff)).order_by(Attachment.id)))


def get_attachment(session: Session, *, handoff: Handoff, attachment_id: int) -> Attachment | None:
    """The photo ``attachment_id`` if it belongs to ``handoff`` (as :func:`list_attachments` lists them), else None:
    whoever may read one conversation cannot reach another's photos by counting ids."""
    return session.scalar(select(Attachment).where(Attachment.id == attachment_id, _of_handoff(handoff)))


# --- canned responses ---------------------------------------------------------------------------------------

def list_canned(session: Session) -> list[CannedResponse]:
    return list(session.scalars(select(CannedResponse).order_by(CannedResponse.title)))


def save_canned(session: Session, *, title: str, body: str, author: str, canned_id: int | None = None) -> CannedResponse:
    """Creates (``canned_id`` None) or updates one. ``ConflictError`` when the title is taken; ``LookupError``
    when ``canned_id`` does not exist. The unique index decides between simultaneous saves of one title."""
    if canned_id is None:
        row = CannedResponse(title=title, body=body, updated_by=author)
        session.add(row)
    else:
        found = session.get(CannedResponse, canned_id)
        if found is None:
            raise LookupError(canned_id)
        row = found
        row.title, row.body, row.updated_by = title, body, author
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise ConflictError(f"a canned response titled {title!r} exists") from exc
    return row


def delete_canned(session: Session, *, canned_id: int) -> bool:
    return bool(session.execute(delete(CannedResponse).where(CannedResponse.id == canned_id)).rowcount)


# --- search and fault titles --------------------------------------------------------------------------------

def search_handoffs(session: Session, *, query: str, limit: int = 50) -> list[Handoff]:
    """Handoffs in any status, newest first, whose customer's name or e-mail, ticket number or conversation id
    contains ``query`` (case-insensitive)."""
    like = f"%{query.strip().lower()}%"
    stmt = (
        select(Handoff).outerjoin(Customer, Customer.id == Handoff.customer_id).outerjoin(Ticket, Ticket.id == Handoff.ticket_id)
        .where(or_(func.lower(Customer.full_name).like(like), func.lower(Customer.email).like(like),
                   func.lower(Ticket.number).like(like), func.lower(Handoff.conversation_id).like(like)))
        .options(selectinload(Handoff.customer), selectinload(Handoff.ticket), selectinload(Handoff.assignee))
        .order_by(Handoff.id.desc()).limit(limit)
    )
    return list(session.scalars(stmt))


def fault_titles(session: Session, *, serial: str) -> dict[str, str]:
    """The fault codes of the device's model with their titles (``{"E01": "Door not closed", ...}``)."""
    rows = session.execute(
        select(FaultDefinition.code, FaultDefinition.title).join(Device, Device.model_id == FaultDefinition.model_id)
        .where(Device.serial == serial)
    )
    return {code: title for code, title in rows}


def fault_history(session: Session, *, serial: str, since: dt.datetime) -> list[dict[str, Any]]:
    """Fault reports of the device since ``since``: ``[{"ts": datetime, "code": str}]``, oldest first."""
    from crm_store.enums import DeviceMessageKind
    from crm_store.models import DeviceMessage

    rows = session.execute(
        select(DeviceMessage.ts, DeviceMessage.body).join(Device, Device.id == DeviceMessage.device_id)
        .where(Device.serial == serial, DeviceMessage.kind == DeviceMessageKind.FAULT, DeviceMessage.ts >= since)
        .order_by(DeviceMessage.ts).limit(200)
    )
    return [{"ts": ts, "code": str((body or {}).get("code") or (body or {}).get("fault_code") or "?")} for ts, body in rows]


def assigned_conversations(session: Session, *, except_channel: str = "socketio") -> list[str]:
    """Conversation ids of handoffs with an agent now, on channels other than ``except_channel``."""
    return list(session.scalars(
        select(Handoff.conversation_id).where(Handoff.status == HandoffStatus.ASSIGNED,
                                              or_(Handoff.channel.is_(None), Handoff.channel != except_channel))
    ))
