"""Agent replies reach the customer even when Rasa was down when they were written.

A background thread of the web service looks for agent replies that no relay has delivered (written in
the last ``RELAY_MAX_AGE``) and asks Rasa to run action_relay_agent_messages in their conversations, every
``RELAY_RETRY_SECONDS`` until they go out. The pick runs in one replica at a time (``try_singleton``);
delivery is exactly once and in order because the action claims each reply with a conditional UPDATE and
commits before showing it (crm_store.repositories.agent_replies.claim_agent_messages). No transaction is open
while Rasa is called.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from crm_store.db import session_scope
from crm_store.locks import try_singleton
from crm_store.models import utcnow
from crm_store.repositories.agent_replies import conversations_with_undelivered_replies, record_relay_failure
from web_service.rasa_client import RasaClient, RasaError
from web_service.settings import WebSettings
from web_service.sweeper import start_job

logger = logging.getLogger(__name__)
RELAY_JOB = "agent-reply-relay"
RELAY_MAX_AGE = dt.timedelta(hours=24)


def relay_once(settings: WebSettings, now: dt.datetime | None = None) -> list[str]:
    """Asks Rasa to deliver pending agent replies; returns the conversations Rasa accepted the relay for."""
    with session_scope(settings.database_url) as session:
        if not try_singleton(session, RELAY_JOB):
            return []
        conversations = conversations_with_undelivered_replies(session, since=(now or utcnow()) - RELAY_MAX_AGE)
    client = RasaClient(settings)
    relayed = []
    for conversation_id in conversations:
        try:
            client.execute(conversation_id, "action_relay_agent_messages")
        except RasaError as exc:
            logger.warning("agent replies in conversation %s still not delivered: %s", conversation_id, exc)
            with session_scope(settings.database_url) as session:
                record_relay_failure(session, conversation_id=conversation_id, error=str(exc))
            continue
        relayed.append(conversation_id)
    if relayed:
        logger.info("relayed pending agent replies in %d conversation(s)", len(relayed))
    return relayed


def start_relay(settings: WebSettings) -> threading.Event | None:
    """Runs ``relay_once`` every ``relay_retry_seconds``; returns the event that stops it."""
    return start_job("agent-reply-relay", settings.relay_retry_seconds, lambda: relay_once(settings))
