"""Nobody left waiting in silence: queued conversations no agent took in time become callbacks.

A background thread of the web service moves every handoff queued for longer than
``HANDOFF_MAX_WAIT_MINUTES`` to the callbacks list and has the bot resume the conversation and tell the
customer how they will be contacted (action_queue_timeout). ``HANDOFF_SWEEP_SECONDS=0`` switches it off.

Every web replica runs the thread, but a sweep runs in one replica at a time (``try_singleton``, a
PostgreSQL advisory lock), picks rows with ``FOR UPDATE SKIP LOCKED`` (a claim in progress is skipped)
and moves each with ``UPDATE … WHERE status = 'queued'``, which also makes the customer's notice due: a
fresh claim is never turned into a callback.

The notice is kept in the handoff row until the bot has told the customer
(crm_store.repositories.timeout_notices): each sweep asks Rasa for the notices due, those it just moved and
those Rasa missed before (down, restarting), which come back after a back-off. The action records the
notice told with a conditional UPDATE before it speaks, so a retry never tells anyone twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from crm_store.db import session_scope
from crm_store.locks import try_singleton
from crm_store.models import utcnow
from crm_store.repositories.handoffs import list_overdue_handoffs, move_to_callback
from crm_store.repositories.timeout_notices import (
    MAX_ATTEMPTS,
    DueNotice,
    pick_due_notices,
    record_notice_failure,
    release_notices,
    settle_notice,
)
from web_service.rasa_client import RasaClient, RasaError
from web_service.settings import WebSettings

logger = logging.getLogger(__name__)
SWEEP_JOB = "handoff-sweep"


def sweep_once(settings: WebSettings, now: dt.datetime | None = None) -> list[str]:
    """Moves overdue handoffs to callbacks and asks Rasa to tell the customers whose notice is due;
    returns the conversation ids this call moved. ``now`` (tests) is the clock of the whole sweep: the queue
    cutoff, the notices' due times and their back-off; by default each step takes the current time."""
    at = now or utcnow()
    cutoff = at - dt.timedelta(minutes=settings.handoff_max_wait_minutes)
    moved: list[str] = []
    with session_scope(settings.database_url) as session:
        if not try_singleton(session, SWEEP_JOB):
            logger.debug("another replica is sweeping the handoff queue")
            return []
        note = f"No agent free within {settings.handoff_max_wait_minutes} minutes: moved to callbacks"
        for handoff in list_overdue_handoffs(session, queued_before=cutoff, lock=True):
            if move_to_callback(session, handoff=handoff, note=note, now=at):
                moved.append(handoff.conversation_id)
        notices = pick_due_notices(session, now=at)
    # Committed (and the lock released) before calling Rasa: the action sees the callback status, and no
    # transaction waits on Rasa.
    if moved:
        logger.info("moved %d waiting conversation(s) to callbacks", len(moved))
    tell_customers(settings, notices, now=now)
    return moved


def tell_customers(settings: WebSettings, notices: list[DueNotice], *, now: dt.datetime | None = None) -> list[str]:
    """Asks Rasa to run action_queue_timeout for each notice (no transaction open meanwhile) and records the
    outcome; returns the conversations whose notice is settled. A failure's back-off counts from ``now``
    (default: when the call failed, so that a call that waited for its timeout does not eat the back-off).

    After a failure the rest wait for the next sweep: Rasa is most likely away for all of them, and each
    call could wait ``RASA_TIMEOUT_SECONDS`` while the queue goes unswept.
    """
    client = RasaClient(settings)
    settled: list[str] = []
    for i, notice in enumerate(notices):
        try:
            client.execute(notice.conversation_id, "action_queue_timeout")
        except RasaError as exc:
            with session_scope(settings.database_url) as session:
                due = record_notice_failure(session, handoff_id=notice.handoff_id, now=now)
                release_notices(session, handoff_ids=[n.handoff_id for n in notices[i + 1:]], now=now)
            if due is None:  # e.g. the action ran and recorded the notice, and only its answer was lost
                logger.warning("Rasa failed for conversation %s (%s), whose notice is no longer owed (told, "
                               "taken by an agent, or given up after %d attempts)", notice.conversation_id, exc,
                               MAX_ATTEMPTS)
            else:
                logger.warning("could not tell conversation %s about its callback (attempt %d, next at %s): %s",
                               notice.conversation_id, notice.attempts + 1, due.isoformat(), exc)
            break
        with session_scope(settings.database_url) as session:
            done = settle_notice(session, handoff_id=notice.handoff_id)
            if not done:  # Rasa answered, but the action could not record the notice (its CRM failed)
                record_notice_failure(session, handoff_id=notice.handoff_id, now=now)
        if done:
            settled.append(notice.conversation_id)
        else:
            logger.warning("conversation %s was not told about its callback; retrying later", notice.conversation_id)
    return settled


def start_job(name: str, seconds: float, job: Callable[[], Any]) -> threading.Event | None:
    """Runs ``job`` every ``seconds`` in a daemon thread; returns the event that stops it (None if off)."""
    if seconds <= 0:
        return None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds):
            try:
                job()
            except Exception:
                logger.exception("%s failed; retrying at the next interval", name)

    threading.Thread(target=loop, name=name, daemon=True).start()
    return stop


def start_sweeper(settings: WebSettings) -> threading.Event | None:
    """Runs ``sweep_once`` every ``handoff_sweep_seconds``; returns the event that stops it."""
    return start_job("handoff-sweeper", settings.handoff_sweep_seconds, lambda: sweep_once(settings))
