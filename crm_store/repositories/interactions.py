"""Customer-journey interactions and CSAT ratings."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_store.enums import JourneyStage
from crm_store.models import CsatRating, Interaction


def record_interaction(
    session: Session,
    *,
    customer_id: int | None,
    stage: JourneyStage,
    event: str,
    channel: str | None = None,
    conversation_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> Interaction:
    interaction = Interaction(
        customer_id=customer_id,
        stage=stage,
        event=event,
        channel=channel,
        conversation_id=conversation_id,
        data=data or {},
    )
    session.add(interaction)
    session.flush()
    return interaction


def list_interactions(session: Session, *, customer_id: int, limit: int = 50) -> list[Interaction]:
    stmt = (
        select(Interaction)
        .where(Interaction.customer_id == customer_id)
        .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def record_csat(
    session: Session,
    *,
    score: int,
    customer_id: int | None,
    ticket_id: int | None = None,
    conversation_id: str | None = None,
    comment: str | None = None,
) -> CsatRating:
    if not 1 <= score <= 5:
        raise ValueError("a CSAT score is between 1 and 5")
    rating = CsatRating(
        score=score, customer_id=customer_id, ticket_id=ticket_id, conversation_id=conversation_id, comment=comment
    )
    session.add(rating)
    session.flush()
    return rating


def record_handoff_csat(
    session: Session,
    *,
    handoff_id: int,
    score: int,
    customer_id: int | None,
    ticket_id: int | None = None,
    conversation_id: str | None = None,
    comment: str | None = None,
) -> tuple[CsatRating, bool]:
    """The rating of one handoff, stored once: ``(rating, created)``.

    The unique index on ``csat_ratings.handoff_id`` decides between racing or repeated answers; the
    later ones get the stored rating back with ``created`` False.
    """
    if not 1 <= score <= 5:
        raise ValueError("a CSAT score is between 1 and 5")
    rating = CsatRating(score=score, customer_id=customer_id, ticket_id=ticket_id, conversation_id=conversation_id,
                        comment=comment, handoff_id=handoff_id)
    try:
        with session.begin_nested():
            session.add(rating)
            session.flush()
    except IntegrityError:
        existing = session.scalar(select(CsatRating).where(CsatRating.handoff_id == handoff_id))
        if existing is None:
            raise
        return existing, False
    return rating, True


def count_ticket_contacts(
    session: Session, *, customer_id: int, since: dt.datetime, events: tuple[str, ...]
) -> dict[str, int]:
    """How often the customer got in touch about each ticket since ``since`` (interactions naming a ticket)."""
    stmt = select(Interaction.data).where(
        Interaction.customer_id == customer_id, Interaction.occurred_at >= since, Interaction.event.in_(events)
    )
    counts: dict[str, int] = {}
    for data in session.scalars(stmt):
        number = (data or {}).get("ticket")
        if number:
            counts[number] = counts.get(number, 0) + 1
    return counts
