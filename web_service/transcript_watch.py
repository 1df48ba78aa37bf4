"""New customer messages on channels without a page of ours (Messenger, REST) for the consoles' push.

The web chat tells the console itself when the customer sent something (``/chat/signal``); Messenger and
REST customers talk to Rasa only. While a console listens to this process, one task reads the trackers of
the conversations that are with an agent on those channels every ``interval`` seconds and publishes a
customer ``sent`` signal when one has a new user message. Server-side, bounded by the number of such
conversations; browsers still never poll.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from crm_store.db import session_scope
from crm_store.repositories.console import assigned_conversations
from web_service.live import Hub
from web_service.rasa_client import RasaClient, RasaError, external_trigger
from web_service.settings import WebSettings

logger = logging.getLogger(__name__)


def user_messages(events: list[dict[str, Any]]) -> int:
    """How many messages the customer sent (an ``EXTERNAL_*`` event a service triggered is not one)."""
    return sum(1 for e in events if e.get("event") == "user" and external_trigger(e) is None)


async def watch_transcripts(hub: Hub, settings: WebSettings, *, interval: float = 1.0) -> None:
    """Runs until cancelled; a conversation's first read only records its count (no event)."""
    client = RasaClient(settings)
    seen: dict[str, int] = {}

    def conversations() -> list[str]:
        with session_scope(settings.database_url, write=False) as session:
            return assigned_conversations(session)

    while True:
        await asyncio.sleep(interval)
        if not any(True for _ in hub.subscribers):
            seen.clear()
            continue
        try:
            current = await asyncio.to_thread(conversations)
        except Exception as exc:  # the database is down: try again next round
            logger.warning("transcript watch: conversations unavailable (%s)", type(exc).__name__)
            continue
        for conversation in current:
            try:
                count = user_messages(await asyncio.to_thread(client.tracker_events, conversation))
            except RasaError as exc:
                logger.warning("transcript watch: tracker unavailable (%s)", exc)
                break
            if conversation in seen and count > seen[conversation]:
                hub.publish({"type": "signal", "id": -1, "conversation_id": conversation, "party": "customer",
                             "kind": "sent", "author": None})
            seen[conversation] = count
        for gone in set(seen) - set(current):
            del seen[gone]
