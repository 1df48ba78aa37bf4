"""Delivery of agents' replies to the customer: which are waiting, taking them for delivery exactly once, and
counting failed relays. Replies are written by ``crm_store.repositories.handoffs.add_handoff_message``."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from crm_store.enums import HandoffMessageKind
from crm_store.models import Handoff, HandoffMessage, utcnow


def pending_agent_messages(session: Session, *, conversation_id: str) -> list[HandoffMessage]:
    """Agent replies of the conversation's handoffs not yet delivered, oldest first."""
    stmt = (
        select(HandoffMessage)
        .join(HandoffMessage.handoff)
        .where(
            Handoff.conversation_id == conversation_id,
            HandoffMessage.kind == HandoffMessageKind.AGENT,
            HandoffMessage.delivered_at.is_(None),
        )
        .order_by(HandoffMessage.id)
    )
    return list(session.scalars(stmt))


def claim_agent_messages(session: Session, *, conversation_id: str, now: dt.datetime | None = None) -> list[HandoffMessage]:
    """Take the conversation's undelivered agent replies for delivery, oldest first; each is taken once.

    Each reply is marked delivered by ``UPDATE … WHERE id = :id AND delivered_at IS NULL``; only the
    replies whose row count is 1 are returned, so of two racing relays each reply goes out through one.
    The caller commits before showing them (a reply is never shown without being recorded).
    """
    now = now or utcnow()
    claimed = []
    for message in pending_agent_messages(session, conversation_id=conversation_id):
        stmt = (
            update(HandoffMessage)
            .where(HandoffMessage.id == message.id, HandoffMessage.delivered_at.is_(None))
            .values(delivered_at=now, delivery_attempts=HandoffMessage.delivery_attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if session.execute(stmt).rowcount == 1:
            claimed.append(message)
    for message in claimed:
        session.refresh(message)
    return claimed


def conversations_with_undelivered_replies(session: Session, *, since: dt.datetime, limit: int = 100) -> list[str]:
    """Conversations holding agent replies written after ``since`` that no relay has delivered yet."""
    stmt = (
        select(Handoff.conversation_id)
        .join(HandoffMessage, HandoffMessage.handoff_id == Handoff.id)
        .where(HandoffMessage.kind == HandoffMessageKind.AGENT, HandoffMessage.delivered_at.is_(None),
               HandoffMessage.created_at >= since)
        .group_by(Handoff.conversation_id)
        .order_by(func.min(HandoffMessage.id))
        .limit(limit)
    )
    return list(session.scalars(stmt))


def record_relay_failure(session: Session, *, conversation_id: str, error: str) -> None:
    """Count a failed relay on each undelivered reply of the conversation (shown to supervisors)."""
    ids = [m.id for m in pending_agent_messages(session, conversation_id=conversation_id)]
    if ids:
        session.execute(
            update(HandoffMessage).where(HandoffMessage.id.in_(ids), HandoffMessage.delivered_at.is_(None))
            .values(delivery_attempts=HandoffMessage.delivery_attempts + 1, last_delivery_error=error[:300])
            .execution_options(synchronize_session=False)
        )
