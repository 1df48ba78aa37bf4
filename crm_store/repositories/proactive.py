"""The bot's outbox of proactive messages: consent, quiet hours, reachability, delivery state."""

from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from crm_store.enums import Channel, ProactiveKind, ProactiveStatus, TicketEventKind
from crm_store.models import ChannelIdentity, Customer, ProactiveMessage, Ticket, TicketEvent, utcnow
from crm_store.repositories.tickets import add_ticket_event

logger = logging.getLogger(__name__)

# How recently a channel must have shown the customer present for a push to reach them. The web chat
# reports presence every 20 s while it is open; Messenger allows business messages within 24 hours.
PRESENCE_WINDOW = {Channel.SOCKETIO.value: dt.timedelta(seconds=60), Channel.FACEBOOK.value: dt.timedelta(hours=24)}
MAX_ATTEMPTS = 5
# How long a worker's push keeps a message to itself: longer than a trigger_intent call can take.
PUSH_LEASE = dt.timedelta(seconds=90)
UNDELIVERED = (ProactiveStatus.PENDING, ProactiveStatus.HELD, ProactiveStatus.FAILED)


def _zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.timezone.utc


def quiet_hours_end(customer: Customer, now: dt.datetime) -> dt.datetime | None:
    """When the customer's quiet hours end, if ``now`` falls inside them; else None."""
    start, end = customer.quiet_hours_start, customer.quiet_hours_end
    if start is None or end is None or start == end:
        return None
    local = now.astimezone(_zone(customer.timezone))
    t = local.timetz().replace(tzinfo=None)
    inside = start <= t < end if start < end else (t >= start or t < end)
    if not inside:
        return None
    end_day = local.date() if t < end else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(end_day, end, tzinfo=local.tzinfo).astimezone(dt.timezone.utc)


def queue_notification(
    session: Session,
    *,
    ticket: Ticket,
    kind: ProactiveKind,
    safety_critical: bool,
    detected_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
    ticket_event: TicketEvent | None = None,
) -> ProactiveMessage | None:
    """Queue the message a ticket owes its customer; None if there is no customer or it is queued already.

    No consent to proactive messages: held until the customer next chats. Quiet hours: due when they
    end, unless the fault is safety-critical. ``ticket_event``: the status change a ticket update tells
    (one message per change; without it, one message per ticket and kind).
    """
    if ticket.customer_id is None:
        return None
    now = now or utcnow()
    customer = session.get(Customer, ticket.customer_id)
    if customer is None:
        return None
    message = ProactiveMessage(
        customer_id=customer.id, ticket_id=ticket.id, kind=kind, safety_critical=safety_critical,
        detected_at=detected_at, created_at=now, due_at=now, status=ProactiveStatus.PENDING,
        ticket_event_id=ticket_event.id if ticket_event is not None else None,
    )
    if not customer.consent_proactive:
        message.status, message.reason = ProactiveStatus.HELD, "no_consent"
    elif not safety_critical and (until := quiet_hours_end(customer, now)) is not None:
        message.due_at, message.reason = until, "quiet_hours"
    try:
        with session.begin_nested():
            session.add(message)
            session.flush()
    except IntegrityError:
        return None  # the same ticket already owes this message: a redelivery must not notify twice
    return message


def last_status_change_id(session: Session, *, ticket_id: int) -> int:
    """The id of the ticket's latest status-change event (0 if none): read before a change, to find it after."""
    return int(session.scalar(
        select(func.max(TicketEvent.id)).where(TicketEvent.ticket_id == ticket_id,
                                               TicketEvent.kind == TicketEventKind.STATUS_CHANGED)
    ) or 0)


def queue_ticket_update(session: Session, *, ticket: Ticket, after_event_id: int,
                        now: dt.datetime | None = None) -> ProactiveMessage | None:
    """Queue the customer's message about a staff status change made in this transaction, if there was one.

    ``after_event_id``: :func:`last_status_change_id` read before the change. The change's own event (the
    first status change after it) keys the message, so a retried or racing request that changed nothing
    queues nothing, and one change is told once (``uq_proactive_messages_event``). Call it in the
    transaction of the change: both commit or neither. Consent and quiet hours as for device messages.
    """
    change = session.scalar(
        select(TicketEvent).where(TicketEvent.ticket_id == ticket.id, TicketEvent.kind == TicketEventKind.STATUS_CHANGED,
                                  TicketEvent.id > after_event_id).order_by(TicketEvent.id).limit(1)
    )
    if change is None:
        return None
    return queue_notification(session, ticket=ticket, kind=ProactiveKind.TICKET_UPDATE, safety_critical=False,
                              now=now, ticket_event=change)


def reachable_identity(session: Session, *, customer_id: int, verified_within: dt.timedelta,
                       now: dt.datetime | None = None) -> ChannelIdentity | None:
    """The customer's most recently seen push-capable chat that is still within its presence window and
    whose verification is younger than ``verified_within`` (an expired chat is anonymous again: a push there
    would show account data to whoever holds that conversation now)."""
    now = now or utcnow()
    stmt = (
        select(ChannelIdentity)
        .where(ChannelIdentity.customer_id == customer_id, ChannelIdentity.channel.in_(list(PRESENCE_WINDOW)),
               ChannelIdentity.verified_at >= now - verified_within)
        .order_by(ChannelIdentity.last_seen_at.desc())
    )
    for identity in session.scalars(stmt):
        if now - identity.last_seen_at <= PRESENCE_WINDOW[identity.channel]:
            return identity
    return None


def latest_identity(session: Session, *, customer_id: int) -> ChannelIdentity | None:
    """The customer's most recently seen chat (any channel, however long ago), for an agent to read."""
    return session.scalar(
        select(ChannelIdentity).where(ChannelIdentity.customer_id == customer_id)
        .order_by(ChannelIdentity.last_seen_at.desc(), ChannelIdentity.id.desc()).limit(1)
    )


def touch_presence(session: Session, *, channel: str, external_id: str, now: dt.datetime | None = None) -> bool:
    """Record that a chat is open right now; False if the chat is not linked to a customer.

    Messages held because the customer could not be reached become due again, so the open chat gets them.
    """
    now = now or utcnow()
    identity = session.scalar(
        select(ChannelIdentity).where(ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id)
    )
    if identity is None:
        return False
    identity.last_seen_at = now
    # One conditional UPDATE, not read-then-write: a message the greeting delivered meanwhile stays sent.
    session.execute(
        update(ProactiveMessage)
        .where(
            ProactiveMessage.customer_id == identity.customer_id,
            ProactiveMessage.status == ProactiveStatus.HELD,
            ProactiveMessage.reason.in_(["unreachable", "delivery_failed"]),
        )
        .values(status=ProactiveStatus.PENDING, due_at=now, attempts=0)
        .execution_options(synchronize_session=False)
    )
    return True


def _unleased(now: dt.datetime, conversation_id: str | None = None):  # type: ignore[no-untyped-def]
    """Not taken by a push in flight (or taken for ``conversation_id`` itself, or the lease ran out)."""
    free = [ProactiveMessage.claimed_until.is_(None), ProactiveMessage.claimed_until < now]
    if conversation_id is not None:
        free.append(ProactiveMessage.claimed_by == conversation_id)
    return or_(*free)


def due_messages(session: Session, *, now: dt.datetime | None = None, limit: int = 50, lock: bool = False) -> list[ProactiveMessage]:
    """Pending messages due now and not being pushed by another worker, safety-critical first.

    ``lock=True`` takes the rows with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL): a worker planning a push
    skips the rows another worker is planning, instead of waiting and pushing them again.
    """
    now = now or utcnow()
    stmt = (
        select(ProactiveMessage)
        .where(ProactiveMessage.status == ProactiveStatus.PENDING, ProactiveMessage.due_at <= now, _unleased(now))
        .order_by(ProactiveMessage.safety_critical.desc(), ProactiveMessage.due_at, ProactiveMessage.id)
        .limit(limit)
    )
    if lock:
        stmt = stmt.with_for_update(skip_locked=True, of=ProactiveMessage)
    return list(session.scalars(stmt.options(selectinload(ProactiveMessage.ticket))))


def undelivered_for_customer(session: Session, *, customer_id: int) -> list[ProactiveMessage]:
    """What the customer has not been told yet (held, or still waiting for the end of quiet hours)."""
    stmt = (
        select(ProactiveMessage)
        .where(
            ProactiveMessage.customer_id == customer_id,
            ProactiveMessage.status.in_(UNDELIVERED),
        )
        .order_by(ProactiveMessage.created_at, ProactiveMessage.id)
        .options(selectinload(ProactiveMessage.ticket))
    )
    return list(session.scalars(stmt))


def _update(session: Session, message_id: int, *conditions: object, **values: object) -> bool:
    stmt = (
        update(ProactiveMessage).where(ProactiveMessage.id == message_id, *conditions).values(**values)  # type: ignore[arg-type]
        .execution_options(synchronize_session=False)
    )
    return session.execute(stmt).rowcount == 1


def claim_for_push(session: Session, *, message_id: int, conversation_id: str, now: dt.datetime | None = None,
                   lease: dt.timedelta = PUSH_LEASE) -> bool:
    """A worker takes a due message to push it into ``conversation_id``; True for one worker only.

    ``UPDATE … WHERE status = 'pending' AND (no lease or lease expired)``. Until the lease ends, only the
    action running in ``conversation_id`` may show the message (``claim_for_delivery``).
    """
    now = now or utcnow()
    return _update(session, message_id, ProactiveMessage.status == ProactiveStatus.PENDING, _unleased(now),
                   claimed_by=conversation_id, claimed_until=now + lease)


def claim_for_delivery(session: Session, message: ProactiveMessage, *, channel: str, conversation_id: str,
                       now: dt.datetime | None = None) -> bool:
    """The bot is about to show ``message`` in ``conversation_id``: True for exactly one caller.

    ``UPDATE … SET status = 'sent' WHERE id = :id AND status <> 'sent' AND sent_at IS NULL AND`` (no push
    of another conversation in flight). The caller must commit before showing the message, so a message
    is never shown without being recorded as sent (a failed commit shows nothing, and is retried).
    """
    now = now or utcnow()
    won = _update(
        session, message.id, ProactiveMessage.status.in_(UNDELIVERED), ProactiveMessage.sent_at.is_(None),
        _unleased(now, conversation_id),
        status=ProactiveStatus.SENT, sent_at=now, channel=channel, conversation_id=conversation_id,
        attempts=ProactiveMessage.attempts + 1, claimed_by=None, claimed_until=None,
    )
    session.refresh(message)
    if won:
        add_ticket_event(
            session, ticket=message.ticket, kind=TicketEventKind.CUSTOMER_NOTIFIED, author="bot",
            body=f"Customer told about the {message.kind.value.replace('_', ' ')} on {channel}.",
            data={"proactive_message_id": message.id, "channel": channel},
        )
    return won


def mark_sent(session: Session, message: ProactiveMessage, *, channel: str, conversation_id: str, now: dt.datetime | None = None) -> bool:
    """Record ``message`` as sent (``claim_for_delivery``); False if it was sent already."""
    return claim_for_delivery(session, message, channel=channel, conversation_id=conversation_id, now=now)


def mark_held(session: Session, message: ProactiveMessage, *, reason: str) -> bool:
    """Hold a pending message for the customer's next chat (conditional: not one that was sent meanwhile)."""
    won = _update(session, message.id, ProactiveMessage.status == ProactiveStatus.PENDING,
                  status=ProactiveStatus.HELD, reason=reason)
    session.refresh(message)
    return won


def release_push(session: Session, *, message_id: int, conversation_id: str, error: str, retry_at: dt.datetime) -> bool:
    """A push that did not show the message gives it back: one more recorded attempt, retried at
    ``retry_at``, held for the customer's next chat after ``MAX_ATTEMPTS``. Only the lease holder's
    release counts, and never for a message that was sent."""
    won = _update(
        session, message_id, ProactiveMessage.status == ProactiveStatus.PENDING,
        ProactiveMessage.claimed_by == conversation_id,
        attempts=ProactiveMessage.attempts + 1, last_error=error[:300], due_at=retry_at,
        claimed_by=None, claimed_until=None,
    )
    if won:
        _update(session, message_id, ProactiveMessage.status == ProactiveStatus.PENDING,
                ProactiveMessage.attempts >= MAX_ATTEMPTS, status=ProactiveStatus.HELD, reason="delivery_failed")
    return won


def get_message(session: Session, *, message_id: int) -> ProactiveMessage | None:
    return session.get(ProactiveMessage, message_id,
                       options=[selectinload(ProactiveMessage.ticket), selectinload(ProactiveMessage.ticket_event)])
