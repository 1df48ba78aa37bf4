"""Engine and session factories for the CRM database (SQLite by default, PostgreSQL in production).

Two kinds of unit of work:

* **write** (``session_scope(url)``, the default): on SQLite ``BEGIN IMMEDIATE`` takes the database's
  single write lock up front, so concurrent writers queue on ``busy_timeout`` instead of failing half way
  when a read transaction tries to upgrade to a write.
  Within one process, ``session_scope``'s write units of work on SQLite first take turns on a lock of their own
  (:func:`sqlite_writer_turn`): a waiting thread is woken the moment the writer before it finishes, where
  SQLite's busy handler sleeps 1, 2, 5 … up to 100 ms between tries.
* **read-only** (``session_scope(url, write=False)``, ``read_session_factory``): on SQLite a deferred
  ``BEGIN`` (WAL readers never wait for the writer and never block it) with ``PRAGMA query_only``; on
  PostgreSQL ``SET TRANSACTION READ ONLY``. A write in a read-only unit of work fails at once
  (``sqlalchemy.exc.OperationalError``/``InternalError``) instead of silently taking the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///var/crm.db"
# SQLite's busy_timeout: how long a writer waits for the write lock (and, first, for its turn in its process).
SQLITE_BUSY_TIMEOUT_MS = 10000


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (SQLAlchemy would pick psycopg2)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINTs; SQLAlchemy emits BEGIN itself (below).
    dbapi_conn.isolation_level = None
    # WAL + busy timeout: the action server, the API and the device worker write concurrently.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _record.info["busy_timeout_ms"] = SQLITE_BUSY_TIMEOUT_MS
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


# The execution option that marks a read-only engine view (see read_engine).
WRITE_OPTION = "crm_write"


def _set_busy_timeout(conn: Any, busy_ms: int) -> None:
    # The pooled connection's info remembers its busy timeout: the PRAGMA runs only when it changes.
    if conn.info.get("busy_timeout_ms") != busy_ms:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {busy_ms}")
        conn.info["busy_timeout_ms"] = busy_ms


def _sqlite_begin(conn: Any) -> None:
    if conn.get_execution_options().get(WRITE_OPTION, True):
        # IMMEDIATE takes the write lock up front, so concurrent writers wait (busy_timeout) instead of
        # failing when a read transaction later tries to write. A unit of work that already waited for its turn
        # in this process (sqlite_writer_turn) waits here only for what is left of the busy timeout.
        deadline, _turn_deadline.value = getattr(_turn_deadline, "value", None), None
        busy_ms = SQLITE_BUSY_TIMEOUT_MS if deadline is None else max(1, round((deadline - time.monotonic()) * 1000))
        _set_busy_timeout(conn, busy_ms)
        conn.exec_driver_sql("PRAGMA query_only = 0")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        # Deferred: a reader takes no lock in WAL mode. query_only turns an accidental write into an
        # error here rather than a lock upgrade that can fail under load (SQLITE_BUSY_SNAPSHOT). The whole busy
        # timeout again if a writer before it on this pooled connection shortened it.
        _set_busy_timeout(conn, SQLITE_BUSY_TIMEOUT_MS)
        conn.exec_driver_sql("PRAGMA query_only = 1")
        conn.exec_driver_sql("BEGIN")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with the settings this project relies on."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            import pathlib

            pathlib.Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine per URL per process."""
    return make_engine(url)


def read_engine(url: str) -> Engine:
    """A read-only view of ``get_engine(url)`` (same pool, cheap to make): deferred BEGIN on SQLite, READ ONLY on PostgreSQL."""
    engine = get_engine(url)
    if engine.dialect.name == "postgresql":
        return engine.execution_options(**{WRITE_OPTION: False}, postgresql_readonly=True)
    return engine.execution_options(**{WRITE_OPTION: False})


def session_factory(url: str, *, write: bool = True) -> sessionmaker[Session]:
    """Sessions whose transactions may write (``write=True``) or are read-only (see the module doc)."""
    return sessionmaker(bind=get_engine(url) if write else read_engine(url), expire_on_commit=False)


def read_session_factory(url: str) -> sessionmaker[Session]:
    """Read-only sessions: they never take SQLite's write lock."""
    return session_factory(url, write=False)


_writer_turns: dict[str, threading.RLock] = {}
_writer_turns_guard = threading.Lock()
# Per thread: when the busy timeout of the unit of work that just got its turn ends (time.monotonic()); read and
# cleared by that unit of work's BEGIN IMMEDIATE (_sqlite_begin).
_turn_deadline = threading.local()


@lru_cache(maxsize=32)
def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database (one write lock for the whole file)."""
    return make_url(normalise_url(url)).get_backend_name() == "sqlite"


@contextmanager
def sqlite_writer_turn(url: str) -> Iterator[None]:
    """On SQLite, lets one write unit of work of this process at a time proceed (no-op on other databases).

    Why: the action server runs its units of work in worker threads. When several wanted SQLite's single write
    lock at once, all but one slept in SQLite's busy handler, whose naps grow to 25-100 ms: under chat load 48 % of
    the CRM actions' time went to waiting in ``BEGIN IMMEDIATE`` (py-spy, bench/bench_chat.py), mostly asleep
    after the lock was free. Here they wait on a lock that wakes the next one at once; SQLite's own lock still
    arbitrates between processes (the web service, the device worker). Re-entrant, so a unit of work that opens
    another in the same thread behaves as before. The wait for the turn counts against SQLite's busy timeout
    (10 s in all, as before); a unit of work whose turn did not come in that time goes on to SQLite, which then
    decides as it always did: this lock only changes who waits where, never what is committed.
    """
    if not is_sqlite(url):
        yield
        return
    with _writer_turns_guard:
        turn = _writer_turns.setdefault(url, threading.RLock())
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    acquired = turn.acquire(blocking=False)
    if not acquired:  # only a unit of work that waited for its turn has less of the busy timeout left
        acquired = turn.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        _turn_deadline.value = deadline
    try:
        yield
    finally:
        _turn_deadline.value = None
        if acquired:
            turn.release()


@contextmanager
def session_scope(url: str, *, write: bool = True) -> Iterator[Session]:
    """A unit of work: commits on success, rolls back on error. ``write=False``: read-only (see the module doc).

    On SQLite a write unit of work first waits for its turn in this process (:func:`sqlite_writer_turn`)."""
    with sqlite_writer_turn(url) if write else nullcontext():
        session = session_factory(url, write=write)()
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise
        finally:
            session.close()


def ping(session: Session) -> str:
    """Runs ``SELECT 1`` in the session's transaction and returns the dialect's name ("sqlite" or
    "postgresql"). Raises ``sqlalchemy.exc.OperationalError`` (or another DBAPIError) when the database
    cannot be reached or does not answer."""
    session.execute(text("SELECT 1"))
    return session.get_bind().dialect.name


def error_summary(exc: BaseException) -> str:
    """The first line (at most 200 characters) of a database error's driver message, for one log line instead
    of a traceback while the database is away. Log only: it may name the host; never send it to a client."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def create_missing_databases(url: str, names: list[str]) -> None:
    """Creates each PostgreSQL database of ``names`` that does not exist yet on the server of ``url``,
    connecting to that server's ``postgres`` database (AUTOCOMMIT: CREATE DATABASE cannot run in a
    transaction). The role in ``url`` needs CREATEDB for a missing one; errors are
    ``sqlalchemy.exc.OperationalError``/``ProgrammingError``."""
    with _server_admin(url) as conn:
        for name in names:
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                conn.execute(text(f"CREATE DATABASE {_quoted(name)}"))


def drop_databases(url: str, names: list[str]) -> None:
    """Drops each PostgreSQL database of ``names`` on the server of ``url`` if it exists, closing its open
    connections first (``WITH (FORCE)``, PostgreSQL 13+), through that server's ``postgres`` database. For
    throw-away databases (benchmarks); errors as for :func:`create_missing_databases`."""
    with _server_admin(url) as conn:
        for name in names:
            conn.execute(text(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)"))


@contextmanager
def _server_admin(url: str) -> Iterator[Connection]:
    # The server's own ``postgres`` database, in AUTOCOMMIT: CREATE/DROP DATABASE cannot run in a transaction.
    admin = create_engine(make_url(normalise_url(url)).set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            yield conn
    finally:
        admin.dispose()


def _quoted(name: str) -> str:
    """``name`` as a quoted PostgreSQL identifier inside a ``text()`` statement. Raises ValueError for an empty name
    or one over 63 bytes (PostgreSQL would cut it short and then find a different database)."""
    # A database name is an identifier, not a value: it cannot be a bound parameter. Quoted as PostgreSQL quotes
    # identifiers, so an operator's name with a hyphen or a capital works and none can end the statement; a colon
    # is escaped, or text() would read ":x" as a bound parameter.
    if not name or len(name.encode()) > 63:
        raise ValueError(f"not a PostgreSQL database name (1 to 63 bytes): {name!r}")
    return '"' + name.replace('"', '""').replace(":", "\\:") + '"'
