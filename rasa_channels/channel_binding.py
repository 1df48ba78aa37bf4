"""The chat input guard's one question about a conversation, read from Rasa's SQL tracker store's ``events`` table:
which channel its latest message came in on.

Answered from the conversation's latest user-message rows instead of its whole tracker, which every Rasa replica read
once per conversation for that one field (the A/B in bench/results/experiments-2026-12-02 measured no latency gain on
two cores; it reads less). Here, not in the ``nlu`` package: importing ``nlu`` applies the product's changes inside
the Rasa process (nlu/rasa_runtime.py), and the channels are also what `rasa init`'s bot is served through in
bench/bench_chat.py, which must stay Rasa as it comes.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.events import UserUttered

# latest_input_channel's answer for a store that is not (or does not wrap) an SQLTrackerStore: read the tracker.
NOT_SQL = object()


async def latest_input_channel(store: Any, sender_id: str) -> Any:
    """The ``input_channel`` (str, or None) of ``sender_id``'s latest user message that has one, in any session.

    Rasa's full tracker's ``get_latest_input_channel()`` (None when the conversation is unknown or has no user
    message), except that a latest message stored without a channel (a triggered intent, at times) gives the one
    before it's; read from at most 20 rows of Rasa's ``events`` table. Every session, not only the current one: a
    conversation keeps its channel for life, as each Rasa server's guard remembers it, so a new session (which may
    start before its first user message is stored) opens no gap for another channel. ``store`` may be wrapped
    (Rasa's ``AwaitableTrackerStore``, ``FailSafeTrackerStore``). Returns ``NOT_SQL`` when it is no
    ``SQLTrackerStore``. Raises SQLAlchemy's errors when the database fails and ``ValueError`` when a stored event
    is not JSON (Rasa's ``FailSafeTrackerStore`` would answer None).
    """
    while not isinstance(store, SQLTrackerStore) and hasattr(store, "_tracker_store"):
        store = store._tracker_store
    if not isinstance(store, SQLTrackerStore):
        return NOT_SQL
    events = SQLTrackerStore.SQLEvent.__table__
    # "id + 0": ordered by the bare primary key, PostgreSQL's planner may walk the whole table's id index
    # backwards from its newest row to this conversation's latest message (300,000 rows for a customer back after
    # others wrote that many events, on the event loop); the expression leaves it the sender_id index, so the
    # cost is this conversation's rows, as for Rasa's own read (test_sql_tracker_store).
    # A few rows, not one: a triggered intent can be stored without a channel (Rasa gives it the current
    # session's, which a session begun by an executed action lacks), and that must not unbind the conversation.
    query = (sa.select(events.c.data)
             .where(events.c.sender_id == sender_id, events.c.type_name == UserUttered.type_name)
             .order_by((events.c.id + 0).desc()).limit(20))
    with store.session_scope() as session:
        rows = session.execute(query).scalars().all()
    return next((channel for channel in (json.loads(data).get("input_channel") for data in rows) if channel), None)
