"""Delivers the bot's proactive messages: the customer's reachable chat gets a message from the bot,
through Rasa's ``trigger_intent`` with an ``EXTERNAL_`` intent, so the conversation can go on from it.

Exactly once: the worker first takes each due message with a lease for the conversation it pushes into
(``claim_for_push``, a conditional UPDATE on rows picked with ``FOR UPDATE SKIP LOCKED``) and commits;
then it calls Rasa, with no transaction open. The bot's action records the message as sent and commits
before it says it (``claim_for_delivery``). A push that did not show it releases the lease with one
more recorded attempt (``release_push``); after ``MAX_ATTEMPTS`` it is held for the customer's next chat.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from urllib.parse import quote

import httpx

from crm_store.enums import ProactiveKind
from crm_store.models import utcnow
from crm_store.repositories.customers import DEFAULT_VERIFICATION_TTL_MINUTES
from crm_store.repositories.proactive import claim_for_push, due_messages, mark_held, reachable_identity, release_push
from device_hooks.pipeline import Pipeline
from web_service.rasa_client import rasa_authorization

logger = logging.getLogger(__name__)

INTENTS = {ProactiveKind.DEVICE_FAULT: "EXTERNAL_device_fault", ProactiveKind.DEVICE_RECOVERED: "EXTERNAL_device_recovered"}
RETRY_AFTER = dt.timedelta(seconds=30)
TRIGGER_TIMEOUT = 30.0  # seconds; shorter than the push lease (crm_store.repositories.proactive.PUSH_LEASE)


class Notifier:
    """Pushes due outbox messages; holds those nobody can receive now (shown when the customer next chats)."""

    def __init__(self, pipeline: Pipeline, rasa_url: str, rasa_token: str, client: httpx.AsyncClient,
                 verification_ttl: dt.timedelta = dt.timedelta(minutes=DEFAULT_VERIFICATION_TTL_MINUTES)) -> None:
        self.sessions = pipeline.sessions
        self.verification_ttl = verification_ttl
        self.rasa_url = rasa_url.rstrip("/")
        self.rasa_token = rasa_token
        self.client = client

    def _plan(self) -> list[tuple[int, str, str, str]]:
        """Due messages taken for a push, with where to send them; unreachable ones are held right away."""
        plans = []
        with self.sessions() as session, session.begin():
            for message in due_messages(session, lock=True):
                identity = reachable_identity(session, customer_id=message.customer_id,
                                              verified_within=self.verification_ttl)
                if identity is None:
                    if mark_held(session, message, reason="unreachable"):
                        logger.info("proactive message %d held: customer %d has no open chat", message.id, message.customer_id)
                    continue
                if claim_for_push(session, message_id=message.id, conversation_id=identity.external_id):
                    plans.append((message.id, identity.channel, identity.external_id, INTENTS[message.kind]))
        return plans

    def _after(self, message_id: int, conversation_id: str, error: str | None) -> None:
        with self.sessions() as session, session.begin():
            # The bot's action marks the message sent (and drops the lease) when it shows it; a message
            # still leased to this push was not shown: a failure, retried later.
            if release_push(session, message_id=message_id, conversation_id=conversation_id,
                            error=error or "the bot did not confirm the message", retry_at=utcnow() + RETRY_AFTER):
                logger.warning("proactive message %d not delivered: %s", message_id, error or "not confirmed")

    async def run_once(self) -> int:
        """Sends what is due now; returns how many were attempted."""
        plans = await asyncio.to_thread(self._plan)
        # Different customers' conversations are independent in Rasa: send a few at once.
        limit = asyncio.Semaphore(8)

        async def send(plan: tuple[int, str, str, str]) -> None:
            async with limit:
                await self._send(*plan)

        await asyncio.gather(*(send(plan) for plan in plans))
        return len(plans)

    async def _send(self, message_id: int, channel: str, conversation_id: str, intent: str) -> None:
        error = None
        try:
            resp = await self.client.post(
                f"{self.rasa_url}/conversations/{quote(conversation_id, safe='')}/trigger_intent",
                params={"output_channel": channel}, headers=rasa_authorization(self.rasa_token),
                json={"name": intent, "entities": {"proactive_id": str(message_id)}},
                timeout=TRIGGER_TIMEOUT,
            )
            if resp.status_code != 200:
                error = f"Rasa answered {resp.status_code}: {resp.text[:200]}"
        except httpx.HTTPError as err:
            error = f"Rasa unreachable: {type(err).__name__}"
        await asyncio.to_thread(self._after, message_id, conversation_id, error)
