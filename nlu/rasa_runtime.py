"""Rasa server speed-ups that need no change to Rasa's behaviour, applied when Rasa imports this package.

Rasa imports the `nlu` package for the custom components of every model it loads (training, `rasa run`,
`rasa test`), so whatever Rasa process serves the product's model has these applied.

Action server responses: Rasa 3.6 checks every response of the action server (each custom action and each
form validation) with `jsonschema.validate(result, schema)`, which first re-validates the constant schema
against the JSON Schema meta-schema. With jsonschema 4.17 (the newest Rasa 3.6 allows) that meta-schema check
costs ~46 ms of CPU per call on this machine against ~0.6 ms for the response itself, and it was 30-40 % of
the Rasa process's CPU under chat load (bench/bench_chat.py, py-spy). Here the same schema is checked once and
its validator reused: a response is accepted or refused exactly as before, with the same error message. The check
of the response itself still cost 8 % of the server's CPU (py-spy, 20 customers, 2026-12-01), so a response is
first checked by jsonschema-rs (a compiled validator of the same schema and draft, ~1 us): what it accepts is
accepted; anything else goes through jsonschema, which accepts or refuses it with Rasa's error.

SQLite tracker store (the default topology; production uses PostgreSQL, which this leaves alone): Rasa opens the
file with SQLite's defaults, a rollback journal synced to disk several times per commit, and it commits every
turn on its event loop, so each sync stalls every conversation (11 % of the server's samples under chat load).
Its connections use write-ahead logging with `synchronous=NORMAL` instead, as the CRM's own SQLite engine does
(crm_store/db.py): still atomic and never corrupted; a power cut may lose the last turns, not the file.

Response selection (the FAQ answers): Rasa runs a ResponseSelector on every message, though its answer is only
used for messages classified as its retrieval intent (``faq``: the ``utter_faq`` rule and
actions.dialogue.faq_answer). Here it runs only for those messages: 7 % of the server's CPU per chat turn
(py-spy, bench/bench_chat.py); other messages' parse data carry no ``response_selector`` entry.

Events read back from the tracker store: Rasa finds each event's class by walking every subclass of Event, for
every event of the conversation each time a tracker is read (4 % of the server's CPU per chat turn). Here the
class found for a name is remembered.

SQL tracker store: trackers are read and saved through SQLAlchemy Core, and a save of a tracker read a moment ago
inserts its new events without counting the stored ones first (nlu/sql_tracker_store.py).

Action server calls: over connections kept open per endpoint, not a new one per call (nlu/kept_alive_endpoints.py).

DIET at prediction time (entities and FAQ answers): a message's features joined in one step, and the compiled
prediction step called directly (nlu/model_inference.py).

Conversation locks (Rasa's lock stores, in-memory and Redis alike): a message, an executed action or a triggered
intent that finds its conversation busy waits for its turn by polling the lock, once a second by default. One
second is long against a turn of 50-200 ms: an agent's reply or a proactive message that arrived while the
previous turn was still saving its tracker waited up to a second for nothing (agent -> customer p95 1,047 ms
against p50 218 ms, bench/bench_console.py). Here a waiter polls soon, then less and less often (below); the
tickets, their order and their lifetimes are Rasa's own, so messages are still handled one at a time, in order.

Garbage collection (the servers `scripts/rasa_server.py` starts, which import this package before Rasa registers
its model load): once the model is loaded, one collection, then everything alive is moved out of the collector's
reach (`gc.freeze()`). The model (TensorFlow graphs, MiniLM, spaCy) is millions of Python objects that live as long
as the process, and a full collection walks them all: 0.6-1.2 s here, during which the server's event loop, and so
every conversation on it, stands still. Before this, each of two Rasa servers ran one within the first 35 s of chat
load (0.96 and 0.75 s; gc callbacks, bench/bench_chat.py --topology production, 20 customers, 2026-12-02); the
collection at the end of the load puts the next full one off, and the freeze keeps the model out of it when it
comes. Frozen objects are still freed when nothing refers to them; only a reference cycle among them is never
collected, and the model's own live until the process ends anyway, as long as the model is not replaced: a model
swapped in through Rasa's HTTP API (``PUT /model``; nothing in the product does it) is not frozen, and the old
model's cycles then stay in memory until the server restarts (the product's launchers load a model at start).
"""

from __future__ import annotations

from typing import Any, Dict, Text

from nlu import kept_alive_endpoints, model_inference, sql_tracker_store

_APPLIED = False
# A waiter polls after 20, 40, 80, 160 ms, then every 250 ms: a lock freed by a short turn is taken within tens of
# milliseconds, and a long queue (20 messages of one conversation) costs Redis a few GETs per waiter per second.
LOCK_FIRST_POLL_SECONDS = 0.02
LOCK_LONGEST_POLL_SECONDS = 0.25


def apply() -> None:
    """Installs the speed-ups once per process (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    _reuse_action_response_validator()
    _sqlite_write_ahead_log()
    _prompt_lock_polling()
    _response_selection_only_for_its_intent()
    _event_classes_by_name()
    sql_tracker_store.apply()  # tracker reads and saves without the ORM (nlu/sql_tracker_store.py)
    kept_alive_endpoints.apply()  # one kept-alive connection pool per endpoint (nlu/kept_alive_endpoints.py)
    model_inference.apply()  # DIET's input built and its compiled step called with less Python (nlu/model_inference.py)
    _model_frozen_after_loading()
    _APPLIED = True


def freeze_what_is_alive() -> int:
    """Collects the garbage there is, then moves every object still alive to the collector's permanent generation
    (``gc.freeze``), where no collection looks at it again. Returns how many objects are frozen in all."""
    import gc

    gc.collect()  # garbage frozen now would never be collected
    gc.freeze()
    return gc.get_freeze_count()


def _model_frozen_after_loading() -> None:
    import logging

    import rasa.core.run as rasa_run

    rasa_load = rasa_run.load_agent_on_start  # serve_application looks the name up when the server starts

    async def load_agent_on_start(*args: Any, **kwargs: Any) -> Any:
        loaded = await rasa_load(*args, **kwargs)
        frozen = freeze_what_is_alive()
        logging.getLogger(__name__).info("model loaded: %d objects kept out of garbage collection", frozen)
        return loaded

    rasa_run.load_agent_on_start = load_agent_on_start


def _event_classes_by_name() -> None:
    from rasa.shared.core.events import Event

    rasa_resolve = Event.resolve_by_type  # a staticmethod: the plain function
    known: Dict[Text, Any] = {}

    def resolve_by_type(type_name: Text, default: Any = None) -> Any:
        found = known.get(type_name)
        if found is None:
            found = rasa_resolve(type_name, default)  # Rasa's scan: the same answer, default or error
            if found is not None and found is not default:
                known[type_name] = found
        return found

    Event.resolve_by_type = staticmethod(resolve_by_type)  # type: ignore[method-assign]


def _response_selection_only_for_its_intent() -> None:
    import functools

    from rasa.nlu.selectors.response_selector import ResponseSelector
    from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY

    rasa_process = ResponseSelector.process

    # wraps: Rasa validates a graph component's `process` by resolving its type hints (training and loading a
    # model); the wrapper carries Rasa's own annotations and, through __wrapped__, the module they resolve in.
    @functools.wraps(rasa_process)
    def process(self: Any, messages: Any) -> Any:
        if not self.retrieval_intent:  # a selector for every intent: Rasa's own behaviour
            return rasa_process(self, messages)
        asked = [m for m in messages if (m.get(INTENT) or {}).get(INTENT_NAME_KEY) == self.retrieval_intent]
        if asked:
            rasa_process(self, asked)
        return messages

    ResponseSelector.process = process  # type: ignore[method-assign]


def _prompt_lock_polling() -> None:
    import asyncio

    from rasa.core.lock_store import LockError, LockStore, TicketLock

    def update_lock(self: LockStore, conversation_id: Text) -> None:
        # Rasa's update_lock (called only by _acquire_lock, between polls) writes the lock back on every poll.
        # That read-modify-write is not atomic, so with several Rasa servers on one Redis a poll could overwrite
        # a ticket another server had just issued or finished; polling more often would make that likelier. Here
        # it writes only when a ticket expired (a server died holding it); is_locked already skips expired
        # tickets on the copy it reads.
        lock = self.get_lock(conversation_id)
        if lock:
            before = len(lock.tickets)
            lock.remove_expired_tickets()
            if len(lock.tickets) != before:
                self.save_lock(lock)

    async def _acquire_lock(self: LockStore, conversation_id: Text, ticket: int,
                            wait_time_in_seconds: float) -> TicketLock:
        # As LockStore._acquire_lock in Rasa 3.6, with a wait that starts short and doubles up to the longest.
        wait = min(LOCK_FIRST_POLL_SECONDS, wait_time_in_seconds)
        while True:
            lock = self.get_lock(conversation_id)  # fetched each time: it may have expired
            if not lock:
                break
            if not lock.is_locked(ticket):
                return lock
            await asyncio.sleep(wait)
            wait = min(wait * 2, LOCK_LONGEST_POLL_SECONDS, wait_time_in_seconds)
            self.update_lock(conversation_id)
        raise LockError(f"Could not acquire lock for conversation_id '{conversation_id}'.")

    LockStore.update_lock = update_lock  # type: ignore[method-assign]
    LockStore._acquire_lock = _acquire_lock  # type: ignore[method-assign]


def _sqlite_write_ahead_log() -> None:
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # In the Rasa process only the SQL tracker store opens SQLite databases.
        if isinstance(dbapi_conn, sqlite3.Connection):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    event.listen(Engine, "connect", on_connect)


def _reuse_action_response_validator() -> None:
    import jsonschema_rs
    from jsonschema import ValidationError
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for
    from rasa.core.actions.action import DOCS_BASE_URL, RemoteAction

    schema = RemoteAction.action_response_format_spec()
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)  # what jsonschema.validate does on every call, done once here
    validator = validator_class(schema)
    # The same draft in jsonschema-rs (Rasa's schema names none: both take 2020-12), compiled once.
    accepts = getattr(jsonschema_rs, validator_class.__name__)(schema).is_valid

    def _validate_action_result(self: RemoteAction, result: Dict[Text, Any]) -> bool:
        # As RemoteAction._validate_action_result in Rasa 3.6, with the validator built once. A response
        # jsonschema-rs accepts is accepted at once (~1 us against ~1.2 ms); any other is judged, and its error
        # worded, by jsonschema as before.
        if accepts(result):
            return True
        try:
            error = best_match(validator.iter_errors(result))  # the error jsonschema.validate raises
            if error is not None:
                raise error
            return True
        except ValidationError as e:
            e.message += (
                f". Failed to validate Action server response from API, "
                f"make sure your response from the Action endpoint is valid. "
                f"For more information about the format visit "
                f"{DOCS_BASE_URL}/custom-actions"
            )
            raise e

    RemoteAction._validate_action_result = _validate_action_result  # type: ignore[method-assign]
