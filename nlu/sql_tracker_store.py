"""Rasa's ``SQLTrackerStore`` reading and saving through SQLAlchemy Core instead of its ORM, same rows and queries.

Why: under chat load, reading and saving trackers was ~27 % of the Rasa server's CPU (py-spy, bench/bench_chat.py,
2026-12-01): the ORM building an object per stored event (8 %), a ``count()`` of the session's events before each
save to find which events are new (6 %), and building the cache keys of the ORM's queries (6 %). Here:

- a read selects only the ``data`` column, with the same filter (the events since the latest ``session_started``
  by timestamp, or every event) and order (by id), and remembers on the tracker how many events it read;
- a save of such a tracker inserts its events after that many (one multi-row ``INSERT``, the same column values
  as Rasa's) and remembers the new number. A tracker that was not read here (a new conversation's, or one read
  with every session), or whose save wrote a new ``session_started``, is saved as Rasa does: its stored events
  are counted first.

Behaviour is Rasa's whenever a conversation's turns are handled one at a time (Rasa's lock store sees to that),
with one difference on purpose: a tracker read, then erased from the store (crm_store.erase) before the turn
saved it, gets only that turn's events written back, not the erased ones again. (Were two turns of one
conversation ever to overlap, each would write its own events, where Rasa's count drops the second one's.)
Works on SQLite (the default topology) and PostgreSQL (production) alike.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

# The attribute on a tracker read here: how many of its events (from the start of its latest session) are stored,
# with the tracker's id, so that a deep copy (another object) is counted as Rasa counts it, never trusted.
STORED = "_events_stored_in_session"


def remembered(tracker: Any) -> int | None:
    """How many of ``tracker``'s events are known to be stored (int), or None: count them as Rasa does."""
    value = getattr(tracker, STORED, None)
    return value[0] if value is not None and value[1] == id(tracker) else None


def remember(tracker: Any, stored: int | None) -> None:
    """Records that ``stored`` of ``tracker``'s events are stored (None: forget, count at the next save)."""
    if stored is None:
        tracker.__dict__.pop(STORED, None)
    else:
        setattr(tracker, STORED, (stored, id(tracker)))


# Rasa's own methods, replaced by apply() (the tests compare both).
RASA: dict[str, Any] = {}

def apply() -> None:
    """Replaces ``SQLTrackerStore._retrieve``, ``save`` and ``_additional_events`` (see the module doc)."""
    import sqlalchemy as sa
    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.shared.core.events import SessionStarted
    from rasa.shared.core.trackers import DialogueStateTracker
    from rasa.shared.nlu.constants import INTENT_NAME_KEY

    if RASA:
        return
    RASA.update(_retrieve=SQLTrackerStore._retrieve, _additional_events=SQLTrackerStore._additional_events,
                save=SQLTrackerStore.save)
    events = SQLTrackerStore.SQLEvent.__table__

    def session_events(sender_id: str, fetch_events_from_all_sessions: bool, *columns: Any) -> Any:
        # Rasa's _event_query as a Core statement: the events after the latest session start, or all of them.
        query = sa.select(*columns).where(events.c.sender_id == sender_id)
        if not fetch_events_from_all_sessions:
            start = (sa.select(sa.func.max(events.c.timestamp))
                     .where(events.c.sender_id == sender_id, events.c.type_name == SessionStarted.type_name)
                     .scalar_subquery())
            query = query.where(sa.or_(events.c.timestamp >= start, start.is_(None)))
        return query

    async def _retrieve(self: SQLTrackerStore, sender_id: str,
                        fetch_events_from_all_sessions: bool) -> DialogueStateTracker | None:
        with self.session_scope() as session:
            rows = session.execute(session_events(sender_id, fetch_events_from_all_sessions, events.c.data)
                                   .order_by(events.c.id)).scalars().all()
        serialised: list[dict[str, Any]] = [json.loads(data) for data in rows]
        if not (self.domain and serialised):
            return None
        tracker = DialogueStateTracker.from_dict(sender_id, serialised, self.domain.slots)
        if not fetch_events_from_all_sessions and len(tracker.events) == len(serialised):
            remember(tracker, len(serialised))
        return tracker

    def _additional_events(self: SQLTrackerStore, session: Any, tracker: DialogueStateTracker) -> Iterator:
        stored = remembered(tracker)
        if stored is None or stored > len(tracker.events):
            stored = session.execute(session_events(tracker.sender_id, False, sa.func.count())).scalar_one()
        return itertools.islice(tracker.events, stored, len(tracker.events))

    async def save(self: SQLTrackerStore, tracker: DialogueStateTracker) -> None:
        await self.stream_events(tracker)
        rows = []
        with self.session_scope() as session:
            for event in self._additional_events(session, tracker):
                data = event.as_dict()
                rows.append({"sender_id": tracker.sender_id, "type_name": event.type_name,
                             "timestamp": data.get("timestamp"),
                             "intent_name": data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY),
                             "action_name": data.get("name"), "data": json.dumps(data)})
            if rows:
                session.execute(events.insert(), rows)
            session.commit()
        if remembered(tracker) is None:
            return  # not read here: counted again at its next save, as Rasa does
        if any(row["type_name"] == SessionStarted.type_name for row in rows):
            # The store's latest session now starts inside this tracker: count again at the next save.
            remember(tracker, None)
        else:
            remember(tracker, len(tracker.events))

    SQLTrackerStore._retrieve = _retrieve  # type: ignore[method-assign]
    SQLTrackerStore._additional_events = _additional_events  # type: ignore[method-assign]
    SQLTrackerStore.save = save  # type: ignore[method-assign]
