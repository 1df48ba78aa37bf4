"""The "everyone is busy" notice of a queue timeout: told to the customer once, also when Rasa was away.

The sweeper (``web_service.sweeper``) moves an overdue handoff to callbacks and, in the same conditional
UPDATE, makes its notice due (``handoffs.timeout_notice_due_at``, see ``handoffs.move_to_callback``). Then,
with its transaction committed, it asks Rasa to run action_queue_timeout for each notice it picked:

- Rasa failed (down, restarting, 5xx, timeout): :func:`record_notice_failure` counts the attempt and makes the
  notice due again after a back-off (15 s, doubling, at most 10 min), until an agent takes the callback;
- the action speaks only if :func:`mark_told` wins (``UPDATE … WHERE timeout_told_at IS NULL``), committed
  before it speaks: of a retry and a slow first call, one tells the customer; a call whose answer was lost
  has set ``timeout_told_at``, so the notice is no longer picked;
- Rasa answered: :func:`settle_notice` clears the due time, unless the action could not record the notice
  (the CRM failed in the action server), which then counts as a failed attempt.

Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from crm_store.enums import HandoffStatus
from crm_store.models import Handoff, utcnow

FIRST_RETRY = dt.timedelta(seconds=15)
MAX_RETRY = dt.timedelta(minutes=10)
# A picked notice is not picked again for this long (another replica's sweep would call Rasa for it a second
# time while the first call waits); if its picker dies before recording the outcome, it is due again after.
LEASE = dt.timedelta(minutes=2)
# After this many failed attempts (about an hour and a half of back-off) the notice is given up: "everyone is
# busy" hours late would be wrong, and the callback itself stays on the agents' list.
MAX_ATTEMPTS = 12


@dataclass(frozen=True)
class DueNotice:
    """A notice to ask Rasa for: the handoff, its conversation and the failed attempts before this one."""

    handoff_id: int
    conversation_id: str
    attempts: int


def retry_delay(attempts: int) -> dt.timedelta:
    """The wait after ``attempts`` failed attempts (≥ 1): 15 s, 30 s, 60 s, … capped at 10 minutes."""
    doublings = min(max(attempts - 1, 0), 16)  # 15 s × 2**16 is far past the cap: no overflow for a huge count
    return min(FIRST_RETRY * (1 << doublings), MAX_RETRY)


def _owed() -> tuple[ColumnElement[bool], ...]:
    """Conditions of a notice still owed: not told, and the handoff still a callback (no agent took it)."""
    return Handoff.timeout_told_at.is_(None), Handoff.status == HandoffStatus.CALLBACK


def pick_due_notices(session: Session, *, now: dt.datetime | None = None, lease: dt.timedelta = LEASE,
                     limit: int = 100) -> list[DueNotice]:
    """Notices due by ``now`` (default: the current time), earliest first; each one's due time moves to
    ``now + lease``.

    Rows are taken ``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite serialises writers) and leased, so a sweep
    in another replica neither waits for them nor picks them again while this one calls Rasa. The caller
    commits before calling Rasa.
    """
    now = now or utcnow()
    rows = session.execute(
        select(Handoff.id, Handoff.conversation_id, Handoff.timeout_notice_attempts)
        .where(Handoff.timeout_notice_due_at <= now, *_owed())
        .order_by(Handoff.timeout_notice_due_at, Handoff.id).limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if rows:
        session.execute(update(Handoff).where(Handoff.id.in_([r[0] for r in rows]))
                        .values(timeout_notice_due_at=now + lease).execution_options(synchronize_session=False))
    return [DueNotice(handoff_id=hid, conversation_id=conv, attempts=attempts) for hid, conv, attempts in rows]


def record_notice_failure(session: Session, *, handoff_id: int, now: dt.datetime | None = None) -> dt.datetime | None:
    """Rasa could not tell the customer: one more failed attempt, due again after :func:`retry_delay`.

    Returns the new due time; None when the notice is no longer owed (told meanwhile, e.g. by a call whose
    answer was lost, or taken by an agent), which is then left as it is, or when this was attempt
    :data:`MAX_ATTEMPTS` (the notice is given up: no longer due).
    """
    now = now or utcnow()
    attempts = session.scalar(
        select(Handoff.timeout_notice_attempts)
        .where(Handoff.id == handoff_id, Handoff.timeout_notice_due_at.is_not(None), *_owed())
        .with_for_update()
    )
    if attempts is None:
        return None
    if attempts + 1 >= MAX_ATTEMPTS:
        session.execute(update(Handoff).where(Handoff.id == handoff_id)
                        .values(timeout_notice_attempts=attempts + 1, timeout_notice_due_at=None)
                        .execution_options(synchronize_session=False))
        return None
    due = now + retry_delay(attempts + 1)
    session.execute(update(Handoff).where(Handoff.id == handoff_id)
                    .values(timeout_notice_attempts=attempts + 1, timeout_notice_due_at=due)
                    .execution_options(synchronize_session=False))
    return due


def release_notices(session: Session, *, handoff_ids: Iterable[int], now: dt.datetime | None = None) -> int:
    """Picked notices the sweep did not try (it stopped at a Rasa failure): due at ``now`` again, no attempt
    counted, instead of waiting for their lease. Returns how many were still owed."""
    ids = list(handoff_ids)
    if not ids:
        return 0
    stmt = (update(Handoff).where(Handoff.id.in_(ids), Handoff.timeout_notice_due_at.is_not(None), *_owed())
            .values(timeout_notice_due_at=now or utcnow()).execution_options(synchronize_session=False))
    return session.execute(stmt).rowcount or 0


def owed_notice(session: Session, *, conversation_id: str) -> Handoff | None:
    """The conversation's handoff whose notice is owed (the sweeper made it due, nobody told it yet, still a
    callback), oldest first; None if there is none. Not simply the latest handoff: a newer one (a safety
    callback opened meanwhile, a new request) would be told in its place and the owed one retried for ever."""
    return session.scalars(
        select(Handoff).where(Handoff.conversation_id == conversation_id, Handoff.timeout_notice_due_at.is_not(None),
                              *_owed()).order_by(Handoff.id).limit(1)
    ).first()


def mark_told(session: Session, *, handoff_id: int, now: dt.datetime | None = None) -> bool:
    """The bot is about to tell the customer: True for the one caller that may speak.

    ``UPDATE handoffs SET timeout_told_at = now, timeout_notice_due_at = NULL WHERE id = :id AND
    timeout_told_at IS NULL AND status = 'callback'``: of racing or repeated runs of the action one wins; a
    callback an agent took meanwhile is not told either. The caller commits before speaking.
    """
    stmt = (update(Handoff).where(Handoff.id == handoff_id, *_owed())
            .values(timeout_told_at=now or utcnow(), timeout_notice_due_at=None)
            .execution_options(synchronize_session=False))
    return session.execute(stmt).rowcount == 1


def settle_notice(session: Session, *, handoff_id: int) -> bool:
    """Rasa ran the action: True (and the due time cleared) if the customer was told or an agent took the
    callback; False if the notice is still owed (the action could not record it), for the caller to count as
    a failed attempt."""
    stmt = (update(Handoff)
            .where(Handoff.id == handoff_id,
                   or_(Handoff.timeout_told_at.is_not(None), Handoff.status != HandoffStatus.CALLBACK))
            .values(timeout_notice_due_at=None).execution_options(synchronize_session=False))
    return session.execute(stmt).rowcount == 1
