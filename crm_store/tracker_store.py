"""Rasa's SQL tracker store (a database of its own) as the privacy and retention jobs and the web chat's
catch-up need it.

Open-source Rasa has no API to delete a conversation; its ``SQLTrackerStore`` keeps every event of a
conversation as one row of the ``events`` table (``sender_id``, ``timestamp`` in Unix seconds, ``data`` the
event as JSON text) and rebuilds the tracker from those rows on every turn, so deleting a sender's rows is
deleting the conversation: its next message starts an anonymous one. Works on SQLite and PostgreSQL.

The location comes from the same variables as bot/endpoints.yml (``TRACKER_DIALECT``, ``TRACKER_HOST``,
``TRACKER_DB``, ``TRACKER_USER``, ``TRACKER_PASSWORD``), or ``TRACKER_STORE_URL`` (an SQLAlchemy URL) when set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, MetaData, inspect, text
from sqlalchemy.engine import URL

from crm_store.db import make_engine

EVENTS = "events"
CHUNK = 500  # sender ids per IN (...) list


def tracker_store_url(env: Mapping[str, str] | None = None) -> str | None:
    """The tracker store's SQLAlchemy URL from the environment, or None when none is configured."""
    env = os.environ if env is None else env
    if env.get("TRACKER_STORE_URL"):
        return env["TRACKER_STORE_URL"]
    dialect = (env.get("TRACKER_DIALECT") or "").strip()
    db = (env.get("TRACKER_DB") or "").strip()
    if not dialect or not db:
        return None
    if dialect == "sqlite":
        return f"sqlite:///{db}"
    host = (env.get("TRACKER_HOST") or "").strip()
    if "://" in host:
        return host
    hostname, _, port = host.partition(":")
    driver = "postgresql+psycopg" if dialect.startswith("postgres") else dialect
    return URL.create(driver, username=env.get("TRACKER_USER") or None, password=env.get("TRACKER_PASSWORD") or None,
                      host=hostname or None, port=int(port) if port else None, database=db).render_as_string(hide_password=False)


_WITH_EVENTS: set[Engine] = set()  # engines whose database has Rasa's events table


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    return make_engine(url)


class TrackerStore:
    """Reads and deletes conversations in Rasa's ``events`` table. Every method is one transaction."""

    def __init__(self, url: str) -> None:
        self.engine = _engine(url)

    def _has_events(self) -> bool:
        # Rasa creates the table on its first start; before that there is nothing to read or delete. Once seen it
        # stays (nothing here drops it), so the web chat's frequent reads skip the catalogue query.
        if self.engine in _WITH_EVENTS:
            return True
        found = inspect(self.engine).has_table(EVENTS)
        if found:
            _WITH_EVENTS.add(self.engine)
        return found

    def conversation_events(self, sender_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """{sender id: [event, ...]} in order, each event as Rasa stored it (its JSON ``data``)."""
        out: dict[str, list[dict[str, Any]]] = {}
        ids = sorted(set(sender_ids))
        if not ids or not self._has_events():
            return out
        with self.engine.connect() as conn:
            for i in range(0, len(ids), CHUNK):
                rows = conn.execute(
                    text(f"SELECT sender_id, data FROM {EVENTS} WHERE sender_id IN :ids ORDER BY id")
                    .bindparams(_expanding("ids")), {"ids": ids[i:i + CHUNK]})
                for sender_id, data in rows:
                    out.setdefault(sender_id, []).append(_load(data))
        return out

    def bot_messages(self, sender_id: str, *, after: float, limit: int = 50) -> list[dict[str, Any]]:
        """The bot's messages in one conversation whose timestamp (Unix seconds) is later than ``after``: the first
        ``limit`` of them in timestamp order (ask again after the last one's timestamp for more), each the bot event as
        Rasa stored it (``text``, ``timestamp``, ``data`` with ``buttons``, ``image`` ..., ``metadata``). One indexed
        read; [] before Rasa created its table."""
        if not self._has_events():
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(f"SELECT data FROM {EVENTS} WHERE sender_id = :s AND type_name = 'bot' AND timestamp > :after "
                     "ORDER BY timestamp, id LIMIT :n"), {"s": sender_id, "after": after, "n": limit}).all()
        return [_load(data) for (data,) in rows]

    def senders_mentioning(self, needles: Iterable[str]) -> set[str]:
        """Sender ids of conversations whose events contain any of ``needles`` (case-insensitive substrings)."""
        needles = [n.lower() for n in needles if n and len(n) >= 4]
        if not needles or not self._has_events():
            return set()
        found: set[str] = set()
        with self.engine.connect() as conn:
            for needle in needles:
                rows = conn.execute(text(f"SELECT DISTINCT sender_id FROM {EVENTS} WHERE lower(data) LIKE :p ESCAPE '!'"),
                                    {"p": f"%{_escape_like(needle)}%"})
                found.update(r[0] for r in rows)
        return found

    def delete_conversations(self, sender_ids: Iterable[str]) -> int:
        """Deletes every event of these conversations; returns the number of rows deleted (0 when re-run)."""
        ids = sorted(set(sender_ids))
        if not ids or not self._has_events():
            return 0
        deleted = 0
        with self.engine.begin() as conn:
            for i in range(0, len(ids), CHUNK):
                deleted += conn.execute(text(f"DELETE FROM {EVENTS} WHERE sender_id IN :ids")
                                        .bindparams(_expanding("ids")), {"ids": ids[i:i + CHUNK]}).rowcount
        return deleted

    def delete_inactive(self, *, before_unix: float) -> tuple[int, int]:
        """Deletes conversations whose latest event is older than ``before_unix``; returns (conversations, rows)."""
        if not self._has_events():
            return 0, 0
        with self.engine.begin() as conn:
            stale = [r[0] for r in conn.execute(
                text(f"SELECT sender_id FROM {EVENTS} GROUP BY sender_id HAVING max(timestamp) < :t"), {"t": before_unix})]
        return len(stale), self.delete_conversations(stale)

    def count_rows(self) -> int:
        if not self._has_events():
            return 0
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {EVENTS}")).scalar() or 0)

    def create_schema(self) -> None:
        """Creates Rasa's ``events`` table with Rasa's columns (tests and tools that run without Rasa)."""
        import sqlalchemy as sa

        meta = MetaData()
        sa.Table(EVENTS, meta, sa.Column("id", sa.Integer, primary_key=True),
                 sa.Column("sender_id", sa.String(255), nullable=False, index=True),
                 sa.Column("type_name", sa.String(255), nullable=False), sa.Column("timestamp", sa.Float),
                 sa.Column("intent_name", sa.String(255)), sa.Column("action_name", sa.String(255)),
                 sa.Column("data", sa.Text))
        meta.create_all(self.engine)

    def append(self, sender_id: str, events: Iterable[dict[str, Any]]) -> None:
        """Appends events as Rasa's SQLTrackerStore would (tests, benchmarks)."""
        rows = [{"sender_id": sender_id, "type_name": e.get("event", "user"), "timestamp": e.get("timestamp", 0.0),
                 "intent_name": (e.get("parse_data") or {}).get("intent", {}).get("name"), "action_name": e.get("name"),
                 "data": json.dumps(e)} for e in events]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(text(f"INSERT INTO {EVENTS} (sender_id, type_name, timestamp, intent_name, action_name, data) "
                                  "VALUES (:sender_id, :type_name, :timestamp, :intent_name, :action_name, :data)"), rows)


def _expanding(name: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import bindparam

    return bindparam(name, expanding=True)


def _escape_like(value: str) -> str:
    return value.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _load(data: str | None) -> dict[str, Any]:
    try:
        return json.loads(data or "{}")
    except ValueError:
        return {"unparsed": data}
