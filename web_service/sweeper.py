"""Nobody left waiting in silence: queued conversations no agent took in time become callbacks.

A background thread of the web service moves every handoff queued for longer than
``HANDOFF_MAX_WAIT_MINUTES`` to the callbacks list and has the bot resume the conversation and tell the
customer how they will be contacted (action_queue_timeout). ``HANDOFF_SWEEP_SECONDS=0`` switches it off.

Every web replica runs the thread, but a sweep runs in one replica at a time (``try_singleton``, a
PostgreSQL advisory lock), picks rows with ``FOR UPDATE SKIP LOCKED`` (a claim in progress is skipped)
and moves each with ``UPDATE … WHERE status = 'queued'``: only a move whose row count is 1 tells the
customer, so nobody hears "everyone is busy" twice and a fresh claim is never turned into a callback.
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
from web_service.rasa_client import RasaClient, RasaError
from web_service.settings import WebSettings

logger = logging.getLogger(__name__)
SWEEP_JOB = "handoff-sweep"


def sweep_once(settings: WebSettings, now: dt.datetime | None = None) -> list[str]:
    """Moves overdue handoffs to callbacks; returns the conversation ids this call moved (and told)."""
    cutoff = (now or utcnow()) - dt.timedelta(minutes=settings.handoff_max_wait_minutes)
    moved: list[str] = []
    with session_scope(settings.database_url) as session:
        if not try_singleton(session, SWEEP_JOB):
            logger.debug("another replica is sweeping the handoff queue")
            return []
        note = f"No agent free within {settings.handoff_max_wait_minutes} minutes: moved to callbacks"
        for handoff in list_overdue_handoffs(session, queued_before=cutoff, lock=True):
            if move_to_callback(session, handoff=handoff, note=note):
                moved.append(handoff.conversation_id)
    # Committed (and the lock released) before calling Rasa: the action sees the callback status, and no
    # transaction waits on Rasa.
    client = RasaClient(settings)
    for conversation_id in moved:
        try:
            client.execute(conversation_id, "action_queue_timeout")
        except RasaError as exc:
            logger.error("could not tell conversation %s about its callback: %s", conversation_id, exc)
    if moved:
        logger.info("moved %d waiting conversation(s) to callbacks", len(moved))
    return moved


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
