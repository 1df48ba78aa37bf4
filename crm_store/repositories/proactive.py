"""The bot's outbox of proactive messages: consent, quiet hours, reachability, delivery state."""

from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from crm_store.enums import Channel, ProactiveKind, ProactiveStatus, TicketEventKind
from crm_store.models import ChannelIdentity, Customer, ProactiveMessage, Ticket, utcnow
from crm_store.repositories.tickets import add_ticket_event

logger = logging.getLogger(__name__)

# How recently a channel must have shown the customer present for a push to reach them. The web chat
# reports presence every 20 s while it is open; Messenger allows business messages within 24 hours.
PRESENCE_WINDOW = {Channel.SOCKETIO.value: dt.timedelta(seconds=60), Channel.FACEBOOK.value: dt.timedelta(hours=24)}
MAX_ATTEMPTS = 5


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
) -> ProactiveMessage | None:
    """Queue the message a ticket owes its customer; None if there is no customer or it is queued already.

    No consent to proactive messages: held until the customer next chats. Quiet hours: due when they
    end, unless the fault is safety-critical.
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


def reachable_identity(session: Session, *, customer_id: int, now: dt.datetime | None = None) -> ChannelIdentity | None:
    """The customer's most recently seen push-capable chat that is still within its presence window."""
    now = now or utcnow()
    stmt = (
        select(ChannelIdentity)
        .where(ChannelIdentity.customer_id == customer_id, ChannelIdentity.channel.in_(list(PRESENCE_WINDOW)))
        .order_by(ChannelIdentity.last_seen_at.desc())
    )
    for identity in session.scalars(stmt):
        if now - identity.last_seen_at <= PRESENCE_WINDOW[identity.channel]:
            return identity
    return None


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
    for message in session.scalars(
        select(ProactiveMessage).where(
            ProactiveMessage.customer_id == identity.customer_id,
            ProactiveMessage.status == ProactiveStatus.HELD,
            ProactiveMessage.reason.in_(["unreachable", "delivery_failed"]),
        )
    ):
        message.status, message.due_at, message.attempts = ProactiveStatus.PENDING, now, 0
    return True


def due_messages(session: Session, *, now: dt.datetime | None = None, limit: int = 50) -> list[ProactiveMessage]:
    now = now or utcnow()
    stmt = (
        select(ProactiveMessage)
        .where(ProactiveMessage.status == ProactiveStatus.PENDING, ProactiveMessage.due_at <= now)
        .order_by(ProactiveMessage.safety_critical.desc(), ProactiveMessage.due_at)
        .options(selectinload(ProactiveMessage.ticket))
        .limit(limit)
    )
    return list(session.scalars(stmt))


def undelivered_for_customer(session: Session, *, customer_id: int) -> list[ProactiveMessage]:
    """What the customer has not been told yet (held, or still waiting for the end of quiet hours)."""
    stmt = (
        select(ProactiveMessage)
        .where(
            ProactiveMessage.customer_id == customer_id,
            ProactiveMessage.status.in_([ProactiveStatus.HELD, ProactiveStatus.PENDING, ProactiveStatus.FAILED]),
        )
        .order_by(ProactiveMessage.created_at)
        .options(selectinload(ProactiveMessage.ticket))
    )
    return list(session.scalars(stmt))


def mark_sent(session: Session, message: ProactiveMessage, *, channel: str, conversation_id: str, now: dt.datetime | None = None) -> None:
    message.status, message.channel, message.conversation_id = ProactiveStatus.SENT, channel, conversation_id
    message.sent_at = now or utcnow()
    message.attempts += 1
    add_ticket_event(
        session, ticket=message.ticket, kind=TicketEventKind.CUSTOMER_NOTIFIED, author="bot",
        body=f"Customer told about the {message.kind.value.replace('_', ' ')} on {channel}.",
        data={"proactive_message_id": message.id, "channel": channel},
    )


def mark_held(message: ProactiveMessage, *, reason: str) -> None:
    message.status, message.reason = ProactiveStatus.HELD, reason


def mark_failed(message: ProactiveMessage, *, error: str, retry_at: dt.datetime) -> None:
    """A failed push is retried a few times, then held for the customer's next chat."""
    message.attempts += 1
    message.last_error = error[:300]
    if message.attempts >= MAX_ATTEMPTS:
        message.status, message.reason = ProactiveStatus.HELD, "delivery_failed"
    else:
        message.due_at = retry_at


def get_message(session: Session, *, message_id: int) -> ProactiveMessage | None:
    return session.get(ProactiveMessage, message_id, options=[selectinload(ProactiveMessage.ticket)])

