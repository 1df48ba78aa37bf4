"""Nobody left waiting in silence: queued conversations no agent took in time become callbacks.

A background thread of the web service moves every handoff queued for longer than
``HANDOFF_MAX_WAIT_MINUTES`` to the callbacks list and has the bot resume the conversation and tell the
customer how they will be contacted (action_queue_timeout). ``HANDOFF_SWEEP_SECONDS=0`` switches it off.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from crm_store.db import session_scope
from crm_store.models import utcnow
from crm_store.repositories.handoffs import list_overdue_handoffs, move_to_callback
from web_service.rasa_client import RasaClient, RasaError
from web_service.settings import WebSettings

logger = logging.getLogger(__name__)


def sweep_once(settings: WebSettings, now: dt.datetime | None = None) -> list[str]:
    """Moves overdue handoffs to callbacks; returns their conversation ids."""
    cutoff = (now or utcnow()) - dt.timedelta(minutes=settings.handoff_max_wait_minutes)
    with session_scope(settings.database_url) as session:
        moved = []
        for handoff in list_overdue_handoffs(session, queued_before=cutoff):
            move_to_callback(session, handoff=handoff,
                             note=f"No agent free within {settings.handoff_max_wait_minutes} minutes: moved to callbacks")
            moved.append(handoff.conversation_id)
    client = RasaClient(settings)
    for conversation_id in moved:  # after the commit, so the action sees the callback status
        try:
            client.execute(conversation_id, "action_queue_timeout")
        except RasaError as exc:
            logger.error("could not tell conversation %s about its callback: %s", conversation_id, exc)
    if moved:
        logger.info("moved %d waiting conversation(s) to callbacks", len(moved))
    return moved


def start_sweeper(settings: WebSettings) -> threading.Event | None:
    """Runs ``sweep_once`` every ``handoff_sweep_seconds``; returns the event that stops it."""
    if settings.handoff_sweep_seconds <= 0:
        return None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.handoff_sweep_seconds):
            try:
                sweep_once(settings)
            except Exception:
                logger.exception("handoff sweep failed; retrying at the next interval")

    threading.Thread(target=loop, name="handoff-sweeper", daemon=True).start()
    return stop
