"""Delivers the bot's proactive messages: the customer's reachable chat gets a message from the bot.

How, depends on the conversation's state:

- the bot has it (no active handoff): Rasa's ``trigger_intent`` with an ``EXTERNAL_`` intent (entities
  ``proactive_id`` and ``ticket_number``), so the conversation can go on from it (choices, forms resumed,
  a person at once for a safety fault through the rule's ``action_safety_handoff``);
- a person has it (a queued or assigned handoff: Rasa's ``pause``, so it predicts nothing and a triggered
  intent would only add a line to the transcript): ``POST /conversations/{id}/execute`` of
  ``action_deliver_device_events``, which tells the customer at once and adds a system note with the
  ticket to the handoff for the agent;
- nobody reachable (no open chat): held for the customer's next chat. A safety-critical fault held for
  any reason (no open chat, no consent, pushes failing) gets a person anyway: a callback handoff on its
  ticket, queued here (``queue_safety_callback``; at most one open per fault).

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
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from sqlalchemy.orm import Session

# The queue priority and first-response target of a safety fault come from the one escalation policy.
from crm_store.enums import ProactiveKind
from crm_store.escalation_policy import get_escalation_config
from crm_store.models import utcnow
from crm_store.repositories.customers import DEFAULT_VERIFICATION_TTL_MINUTES
from crm_store.repositories.handoffs import get_active_handoff
from crm_store.repositories.proactive import (
    claim_for_push,
    due_messages,
    latest_identity,
    mark_held,
    reachable_identity,
    release_push,
)
from crm_store.repositories.safety_handoffs import queue_safety_callback, safety_messages_without_person
from device_hooks.pipeline import Pipeline
from web_service.rasa_client import rasa_authorization

logger = logging.getLogger(__name__)

INTENTS = {ProactiveKind.DEVICE_FAULT: "EXTERNAL_device_fault", ProactiveKind.DEVICE_RECOVERED: "EXTERNAL_device_recovered",
           ProactiveKind.TICKET_UPDATE: "EXTERNAL_ticket_update"}
# Runs in a conversation a person has (paused): delivers the customer's undelivered messages, notes them for the agent.
DELIVER_ACTION = "action_deliver_device_events"
RETRY_AFTER = dt.timedelta(seconds=30)
TRIGGER_TIMEOUT = 30.0  # seconds; shorter than the push lease (crm_store.repositories.proactive.PUSH_LEASE)


@dataclass(frozen=True)
class Push:
    """One leased message and how to deliver it: ``intent`` through trigger_intent, or the delivering action
    through execute when ``to_agent_chat`` (the conversation has an active handoff)."""

    message_id: int
    channel: str
    conversation_id: str
    intent: str
    ticket_number: str
    to_agent_chat: bool


class Notifier:
    """Pushes due outbox messages; holds those nobody can receive now (shown when the customer next chats)."""

    def __init__(self, pipeline: Pipeline, rasa_url: str, rasa_token: str, client: httpx.AsyncClient,
                 verification_ttl: dt.timedelta = dt.timedelta(minutes=DEFAULT_VERIFICATION_TTL_MINUTES)) -> None:
        self.sessions = pipeline.sessions
        self.verification_ttl = verification_ttl
        self.rasa_url = rasa_url.rstrip("/")
        self.rasa_token = rasa_token
        self.client = client

    def _plan(self) -> list[Push]:
        """Due messages taken for a push, with where to send them; unreachable ones are held right away,
        and held safety faults get a person (a callback), in the same transaction."""
        plans = []
        with self.sessions() as session, session.begin():
            for message in due_messages(session, lock=True):
                identity = reachable_identity(session, customer_id=message.customer_id,
                                              verified_within=self.verification_ttl)
                if identity is None:
                    if mark_held(session, message, reason="unreachable"):
                        logger.info("proactive message %d held: customer %d has no open chat", message.id, message.customer_id)
                    continue
                with_agent = get_active_handoff(session, conversation_id=identity.external_id) is not None
                if claim_for_push(session, message_id=message.id, conversation_id=identity.external_id):
                    plans.append(Push(message.id, identity.channel, identity.external_id, INTENTS[message.kind],
                                      message.ticket.number or "", with_agent))
            self._callbacks_for_held_safety_faults(session)
        return plans

    def _callbacks_for_held_safety_faults(self, session: Session) -> None:
        """A person for each safety fault the customer could not be told about in a chat (at most one per fault)."""
        try:
            config = get_escalation_config()
        except (OSError, ValueError) as exc:
            # A broken escalation.yml must not stop the pushes themselves; the action server refuses to start
            # with it, so this is noticed.
            logger.error("escalation policy unreadable, no callbacks for held safety faults: %s", exc)
            return
        if not config.triggers.safety_fault.enabled:
            return  # switched off in escalation.yml: no person for safety faults from any path
        now = utcnow()
        for message in safety_messages_without_person(session, lock=True):
            latest = latest_identity(session, customer_id=message.customer_id)
            priority = config.triggers.safety_fault.priority
            handoff, created = queue_safety_callback(
                session, message=message, conversation_id=latest.external_id if latest is not None else None,
                priority=priority, first_response_due_at=now + dt.timedelta(minutes=config.first_response_minutes[priority]),
            )
            if created:
                logger.info("safety fault on ticket %s: callback handoff %d queued (proactive message %d %s)",
                            message.ticket.number, handoff.id, message.id, message.reason)

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

        async def send(plan: Push) -> None:
            async with limit:
                await self._send(plan)

        await asyncio.gather(*(send(plan) for plan in plans))
        return len(plans)

    async def _send(self, push: Push) -> None:
        error = None
        conversation = quote(push.conversation_id, safe="")
        if push.to_agent_chat:
            # Paused for a person: only an executed action reaches the customer (its messages go out through
            # the channel named here); the action finds the leased message itself, nothing travels in the call.
            url, body = f"{self.rasa_url}/conversations/{conversation}/execute", {"name": DELIVER_ACTION}
        else:
            entities = {"proactive_id": str(push.message_id)}
            if push.ticket_number:
                entities["ticket_number"] = push.ticket_number
            url, body = f"{self.rasa_url}/conversations/{conversation}/trigger_intent", {"name": push.intent, "entities": entities}
        try:
            resp = await self.client.post(url, params={"output_channel": push.channel},
                                          headers=rasa_authorization(self.rasa_token), json=body, timeout=TRIGGER_TIMEOUT)
            if resp.status_code != 200:
                error = f"Rasa answered {resp.status_code}: {resp.text[:200]}"
        except httpx.HTTPError as err:
            error = f"Rasa unreachable: {type(err).__name__}"
        await asyncio.to_thread(self._after, push.message_id, push.conversation_id, error)
