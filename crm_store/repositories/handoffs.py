"""Handoffs from the bot to human agents: the queue, claiming, agent messages, closing, skills, metrics."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from crm_store.enums import (
    PRIORITY_RANK,
    ApplianceCategory,
    HandoffMessageKind,
    HandoffReason,
    HandoffStatus,
    TicketPriority,
)
from crm_store.errors import ConflictError, InvalidTransitionError
from crm_store.models import AgentSkill, CsatRating, Handoff, HandoffMessage, Interaction, User, utcnow
from crm_store.repositories.safety_handoffs import open_safety_handoff

logger = logging.getLogger(__name__)

ACTIVE = (HandoffStatus.QUEUED, HandoffStatus.ASSIGNED)
_RANK = case({p: r for p, r in PRIORITY_RANK.items()}, value=Handoff.priority, else_=0)


def _load() -> tuple[Any, ...]:
    return (selectinload(Handoff.customer), selectinload(Handoff.ticket), selectinload(Handoff.assignee))


def create_handoff(
    session: Session,
    *,
    conversation_id: str,
    channel: str | None,
    customer_id: int | None,
    ticket_id: int | None,
    reason: HandoffReason,
    trigger_key: str,
    priority: TicketPriority,
    language: str,
    category: ApplianceCategory | None,
    summary: str,
    packet: dict[str, Any],
    first_response_due_at: dt.datetime,
    status: HandoffStatus = HandoffStatus.QUEUED,
) -> tuple[Handoff, bool]:
    """Queue a handoff unless the conversation already has an active one.

    Returns ``(handoff, created)``; the unique active key makes this safe under concurrency. A safety
    fault has at most one open handoff, whatever its conversation (``uq_handoffs_open_safety_ticket``): a
    second one returns the first, which may belong to another conversation or be a callback.
    """
    existing = get_active_handoff(session, conversation_id=conversation_id)
    if existing is None and reason is HandoffReason.SAFETY_FAULT and ticket_id is not None:
        existing = open_safety_handoff(session, ticket_id=ticket_id)
    if existing is not None:
        return existing, False
    handoff = Handoff(
        conversation_id=conversation_id, channel=channel, customer_id=customer_id, ticket_id=ticket_id,
        reason=reason, trigger_key=trigger_key[:128], status=status, priority=priority, language=language,
        category=category, summary=summary, packet=packet, first_response_due_at=first_response_due_at,
        active_key=conversation_id if status in ACTIVE else None,
    )
    try:
        with session.begin_nested():
            session.add(handoff)
            session.flush()
    except IntegrityError:
        existing = get_active_handoff(session, conversation_id=conversation_id)
        if existing is None and reason is HandoffReason.SAFETY_FAULT and ticket_id is not None:
            existing = open_safety_handoff(session, ticket_id=ticket_id)
        if existing is None:
            raise
        return existing, False
    logger.info("handoff %d queued (conversation %s, reason %s, priority %s)", handoff.id, conversation_id, reason, priority)
    return handoff, True


def get_handoff(session: Session, *, handoff_id: int) -> Handoff | None:
    return session.scalar(select(Handoff).where(Handoff.id == handoff_id).options(*_load()))


def get_active_handoff(session: Session, *, conversation_id: str) -> Handoff | None:
    return session.scalar(select(Handoff).where(Handoff.active_key == conversation_id).options(*_load()))


def get_latest_handoff(session: Session, *, conversation_id: str) -> Handoff | None:
    return session.scalar(
        select(Handoff).where(Handoff.conversation_id == conversation_id).order_by(Handoff.id.desc()).limit(1)
    )


def recent_trigger_exists(session: Session, *, customer_id: int, trigger_key: str, since: dt.datetime) -> bool:
    """Whether this exact trigger already led to a handoff for the customer since ``since``."""
    count = session.scalar(
        select(func.count(Handoff.id)).where(
            Handoff.customer_id == customer_id, Handoff.trigger_key == trigger_key, Handoff.created_at >= since
        )
    )
    return bool(count)


def list_handoffs(
    session: Session, *, statuses: Iterable[HandoffStatus] = ACTIVE, assigned_user_id: int | None = None, limit: int = 200
) -> list[Handoff]:
    """Handoffs in queue order: highest priority first, then the earliest first-response due time."""
    stmt = (
        select(Handoff)
        .where(Handoff.status.in_(list(statuses)))
        .options(*_load())
        .order_by(_RANK.desc(), Handoff.first_response_due_at, Handoff.id)
        .limit(limit)
    )
    if assigned_user_id is not None:
        stmt = stmt.where(Handoff.assigned_user_id == assigned_user_id)
    return list(session.scalars(stmt))


def queue_position(session: Session, *, handoff: Handoff) -> int:
    """1 for the next conversation an agent will take; counts queued handoffs ahead of this one."""
    rank = PRIORITY_RANK[handoff.priority]
    ahead = session.scalar(
        select(func.count(Handoff.id)).where(
            Handoff.status == HandoffStatus.QUEUED,
            Handoff.id != handoff.id,
            (_RANK > rank) | ((_RANK == rank) & (Handoff.first_response_due_at <= handoff.first_response_due_at)),
        )
    )
    return int(ahead or 0) + 1


@dataclass(frozen=True)
class Skills:
    """A user's routing skills; an empty set means "any"."""

    categories: frozenset[str] = field(default_factory=frozenset)
    languages: frozenset[str] = field(default_factory=frozenset)

    def accepts(self, handoff: Handoff) -> bool:
        category_ok = not self.categories or handoff.category is None or handoff.category.value in self.categories
        language_ok = not self.languages or handoff.language in self.languages
        return category_ok and language_ok

    def as_list(self) -> list[str]:
        return sorted(f"category:{c}" for c in self.categories) + sorted(f"lang:{lang}" for lang in self.languages)


def get_skills(session: Session, *, user_id: int) -> Skills:
    rows = list(session.scalars(select(AgentSkill.skill).where(AgentSkill.user_id == user_id)))
    return Skills(
        categories=frozenset(r.split(":", 1)[1] for r in rows if r.startswith("category:")),
        languages=frozenset(r.split(":", 1)[1] for r in rows if r.startswith("lang:")),
    )


def set_skills(session: Session, *, user_id: int, categories: Iterable[ApplianceCategory], languages: Iterable[str]) -> Skills:
    """Replace a user's skills."""
    session.execute(delete(AgentSkill).where(AgentSkill.user_id == user_id))
    skills = {f"category:{ApplianceCategory(c).value}" for c in categories}
    skills |= {f"lang:{lang.strip().lower()}" for lang in languages if lang.strip()}
    session.add_all(AgentSkill(user_id=user_id, skill=s) for s in sorted(skills))
    session.flush()
    return get_skills(session, user_id=user_id)


CLAIMABLE = (HandoffStatus.QUEUED, HandoffStatus.CALLBACK)
CLOSABLE = (HandoffStatus.QUEUED, HandoffStatus.ASSIGNED, HandoffStatus.CALLBACK)


def _reload(session: Session, handoff: Handoff) -> Handoff:
    """Re-read the row (and its customer, ticket, assignee) after a Core UPDATE changed it behind the ORM."""
    stmt = select(Handoff).where(Handoff.id == handoff.id).options(*_load()).execution_options(populate_existing=True)
    return session.scalars(stmt).one()


def _transition(session: Session, handoff: Handoff, *conditions: Any, **values: Any) -> int:
    """``UPDATE handoffs SET values WHERE id = handoff.id AND conditions``; returns the row count.

    The database decides: of two racing transitions from the same status, the second finds the row
    changed (PostgreSQL re-checks the WHERE after the first commits) and updates nothing.
    """
    stmt = (
        update(Handoff).where(Handoff.id == handoff.id, *conditions).values(**values)
        .execution_options(synchronize_session=False)
    )
    return session.execute(stmt).rowcount


def claim_handoff(session: Session, *, handoff: Handoff, user: User) -> Handoff:
    """Assign a queued (or callback) handoff to ``user``; claiming one's own again is a no-op.

    One conditional UPDATE: of racing agents exactly one wins and gets the "joined" note; the others
    get ConflictError (the API answers 409).
    """
    if handoff.status is HandoffStatus.ASSIGNED and handoff.assigned_user_id == user.id:
        return handoff
    if handoff.status not in CLAIMABLE:
        raise ConflictError(f"this conversation is {handoff.status.value}")
    try:
        with session.begin_nested():
            won = _transition(
                session, handoff, Handoff.status.in_(CLAIMABLE),
                status=HandoffStatus.ASSIGNED, assigned_user_id=user.id, claimed_at=utcnow(),
                active_key=Handoff.conversation_id,
            )
    except IntegrityError as exc:  # a callback claimed while the conversation escalated again
        raise ConflictError("this conversation already has an active handoff") from exc
    _reload(session, handoff)
    if won != 1:
        if handoff.status is HandoffStatus.ASSIGNED and handoff.assigned_user_id == user.id:
            return handoff
        raise ConflictError(f"this conversation is {handoff.status.value}")
    session.add(HandoffMessage(handoff=handoff, kind=HandoffMessageKind.SYSTEM, author=user.username,
                               body=f"{user.full_name} joined the conversation"))
    session.flush()
    return handoff


def add_handoff_message(
    session: Session, *, handoff: Handoff, kind: HandoffMessageKind, author: str, body: str,
    client_key: str | None = None,
) -> HandoffMessage:
    """Record an agent reply or a private note; the first reply stops the first-response clock.

    ``client_key`` is the sender's idempotency key: with a key already stored on this handoff (a retried send,
    also one racing the first), the stored message is returned and nothing is added. The unique partial index
    ``uq_handoff_messages_client_key`` decides between racers; the loser's insert is undone by a savepoint.
    """
    if client_key is not None:
        known = _message_with_key(session, handoff.id, client_key)
        if known is not None:
            return known
    # By id, not by relationship: a loser's message must not stay behind in ``handoff.messages``.
    message = HandoffMessage(handoff_id=handoff.id, kind=kind, author=author, body=body, client_key=client_key)
    try:
        with session.begin_nested():
            session.add(message)
            session.flush()
        session.expire(handoff, ["messages"])
    except IntegrityError:
        known = _message_with_key(session, handoff.id, client_key) if client_key is not None else None
        if known is None:
            raise
        return known
    if kind is HandoffMessageKind.AGENT and handoff.first_response_at is None:
        # Conditional, so of two racing first replies the earlier-committed one keeps the SLA time.
        if _transition(session, handoff, Handoff.first_response_at.is_(None), first_response_at=message.created_at):
            session.refresh(handoff, attribute_names=["first_response_at"])
    return message


def _message_with_key(session: Session, handoff_id: int, client_key: str) -> HandoffMessage | None:
    return session.scalars(select(HandoffMessage).where(HandoffMessage.handoff_id == handoff_id,
                                                        HandoffMessage.client_key == client_key)).one_or_none()


def close_handoff(
    session: Session, *, handoff: Handoff, status: HandoffStatus, author: str, note: str = "",
    assigned_user_id: int | None = None,
) -> Handoff:
    """Resolve a handoff or hand the conversation back to the bot.

    A conditional UPDATE from the status read (and, with ``assigned_user_id``, only while that agent owns
    it): a racing close or claim makes this one raise ConflictError instead of closing twice.
    Raises InvalidTransitionError for a handoff that was already closed when read.
    """
    if status not in (HandoffStatus.RESOLVED, HandoffStatus.HANDED_BACK):
        raise InvalidTransitionError(f"a handoff closes as resolved or handed_back, not {status.value}")
    if handoff.status not in CLOSABLE:
        raise InvalidTransitionError(f"this conversation is already {handoff.status.value}")
    conditions = [Handoff.status == handoff.status]
    if assigned_user_id is not None:
        conditions.append(Handoff.assigned_user_id == assigned_user_id)
    won = _transition(session, handoff, *conditions, status=status, active_key=None, closed_at=utcnow())
    _reload(session, handoff)
    if won != 1:
        raise ConflictError(f"this conversation changed meanwhile: it is {handoff.status.value} now")
    body = "resolved the conversation" if status is HandoffStatus.RESOLVED else "handed the conversation back to the bot"
    session.add(HandoffMessage(handoff=handoff, kind=HandoffMessageKind.SYSTEM, author=author,
                               body=f"{author} {body}" + (f": {note}" if note else "")))
    session.flush()
    return handoff


def claim_bot_resume(session: Session, *, handoff_id: int) -> bool:
    """The bot's handback (and CSAT question) is shown once: True for the one caller that records it.

    ``bot_resumed_at`` is set by a conditional UPDATE on a closed handoff that has not resumed yet.
    """
    stmt = (
        update(Handoff)
        .where(Handoff.id == handoff_id, Handoff.bot_resumed_at.is_(None),
               Handoff.status.in_([HandoffStatus.RESOLVED, HandoffStatus.HANDED_BACK]))
        .values(bot_resumed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return session.execute(stmt).rowcount == 1


def sla_breached(handoff: Handoff, now: dt.datetime | None = None) -> bool:
    """No first reply by the due time (still waiting past it, or answered late)."""
    answered = handoff.first_response_at
    if answered is not None:
        return answered > handoff.first_response_due_at
    if handoff.status in (HandoffStatus.QUEUED, HandoffStatus.ASSIGNED):
        return (now or utcnow()) > handoff.first_response_due_at
    return False


def handoff_metrics(session: Session, *, since: dt.datetime, now: dt.datetime | None = None) -> dict[str, Any]:
    """Supervisor figures since ``since``: queue load, SLA, CSAT, escalation and containment rates."""
    now = now or utcnow()
    active = list_handoffs(session, statuses=ACTIVE, limit=10_000)
    recent = list(session.scalars(select(Handoff).where(Handoff.created_at >= since)))
    conversations = set(
        session.scalars(
            select(Interaction.conversation_id).where(
                Interaction.event == "conversation_started", Interaction.occurred_at >= since,
                Interaction.conversation_id.is_not(None),
            )
        )
    )
    escalated = {h.conversation_id for h in recent}
    conversations |= escalated  # a conversation that escalated certainly happened
    scores = list(session.scalars(select(CsatRating.score).where(CsatRating.created_at >= since)))
    by_reason: dict[str, int] = {r.value: 0 for r in HandoffReason}
    for h in recent:
        by_reason[h.reason.value] += 1
    load: dict[str, dict[str, int]] = {p.value: {"queued": 0, "assigned": 0} for p in TicketPriority}
    for h in active:
        load[h.priority.value][h.status.value] += 1
    total = len(conversations)
    return {
        "since": since,
        "queue": {"queued": sum(h.status is HandoffStatus.QUEUED for h in active),
                  "assigned": sum(h.status is HandoffStatus.ASSIGNED for h in active), "by_priority": load},
        "sla_breaches": {"active": sum(sla_breached(h, now) for h in active),
                         "period": sum(sla_breached(h, now) for h in recent)},
        "csat": {"count": len(scores), "average": round(sum(scores) / len(scores), 2) if scores else None,
                 "distribution": {str(s): scores.count(s) for s in range(1, 6)}},
        "conversations": total,
        "escalations": len(escalated),
        "escalation_rate": round(len(escalated) / total, 3) if total else None,
        "containment_rate": round(1 - len(escalated) / total, 3) if total else None,
        "escalations_by_reason": by_reason,
    }


def list_overdue_handoffs(session: Session, *, queued_before: dt.datetime, lock: bool = False) -> list[Handoff]:
    """Handoffs still waiting for an agent since before ``queued_before``.

    ``lock=True`` (a sweep about to move them) takes their rows with ``FOR UPDATE SKIP LOCKED``: a row an
    agent is claiming right now is skipped, not waited for (PostgreSQL; SQLite serialises writers anyway).
    """
    stmt = select(Handoff).where(Handoff.status == HandoffStatus.QUEUED, Handoff.created_at < queued_before)
    stmt = stmt.options(*_load()).order_by(Handoff.id)
    if lock:
        stmt = stmt.with_for_update(skip_locked=True, of=Handoff)
    return list(session.scalars(stmt))


def move_to_callback(session: Session, *, handoff: Handoff, note: str, now: dt.datetime | None = None) -> bool:
    """Nobody took the conversation in time: it leaves the live queue and becomes a callback.

    ``UPDATE … WHERE status = 'queued'``: True only for the caller whose update moved it. The same UPDATE makes
    the customer's "everyone is busy" notice due at ``now`` (default: the current time), so the notice is
    recorded with the move and retried until told (crm_store.repositories.timeout_notices). A handoff claimed
    meanwhile stays with its agent (False).
    """
    if handoff.status is not HandoffStatus.QUEUED:
        raise InvalidTransitionError(f"only a queued conversation becomes a callback, not a {handoff.status.value} one")
    won = _transition(session, handoff, Handoff.status == HandoffStatus.QUEUED,
                      status=HandoffStatus.CALLBACK, active_key=None, timeout_notice_due_at=now or utcnow())
    _reload(session, handoff)
    if won != 1:
        return False
    session.add(HandoffMessage(handoff=handoff, kind=HandoffMessageKind.SYSTEM, author="system", body=note))
    session.flush()
    return True
