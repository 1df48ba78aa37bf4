"""Rasa's HTTP API as the console needs it: the live transcript and running handoff actions.

Agents' replies and the handback go through ``POST /conversations/{id}/execute`` of a custom action
(action_relay_agent_messages, action_handback) with ``output_channel=latest``. Why this and not
``trigger_intent``: Rasa skips predictions for a paused conversation, so a triggered intent would do
nothing while the agent owns it, whereas ``execute`` runs the one named action and sends its messages
through the output channel of the customer's latest message (socket.io room, Messenger). The action reads
the replies from the CRM, so nothing an agent writes travels in a URL and a retry cannot send it twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any
from urllib.parse import quote

import httpx
import jwt

from web_service.settings import WebSettings

logger = logging.getLogger(__name__)


JWT_LIFETIME_SECONDS = 300


def rasa_authorization(secret: str) -> dict[str, str]:
    """The header for Rasa's HTTP API (web service, device worker, launcher, tests): a short-lived HS256 JWT with
    the admin role, signed with ``RASA_TOKEN``.

    Rasa runs with ``--jwt-secret`` (scripts/rasa_server.py reads it from the environment), so the secret
    itself never travels, and no token appears in a URL, an access log or a process list.
    """
    claims = {"user": {"username": "crm-service", "role": "admin"}, "exp": int(time.time()) + JWT_LIFETIME_SECONDS}
    return {"Authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}


class RasaError(Exception):
    """Rasa could not be reached or refused the call."""


class RasaClient:
    """Blocking calls to Rasa. Callers hold no database transaction or connection while they wait."""

    def __init__(self, settings: WebSettings) -> None:
        self.base = settings.rasa_url.rstrip("/")
        self.token = settings.rasa_token.get_secret_value()
        self.timeout = settings.rasa_timeout_seconds
        self.read_timeout = settings.rasa_transcript_timeout_seconds

    def _call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        url = f"{self.base}{path}"
        try:
            resp = httpx.request(method, url, params=kwargs.pop("params", {}), headers=rasa_authorization(self.token),
                                 timeout=timeout or self.timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise RasaError(f"Rasa unreachable: {exc.__class__.__name__}") from exc
        if not resp.is_success:  # every 3xx/4xx/5xx is a failure here
            raise RasaError(f"Rasa answered {resp.status_code}: {resp.text[:200]}")
        return resp.json()

    def execute(self, conversation_id: str, action: str) -> dict[str, Any]:
        """Run ``action`` in the conversation; its messages go to the customer's latest channel."""
        result: dict[str, Any] = self._call(
            "POST", f"/conversations/{quote(conversation_id, safe='')}/execute",
            params={"output_channel": "latest"}, json={"name": action},
        )
        return result

    def tracker_events(self, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation's events; a short timeout (a console polls it, and has the packet's copy)."""
        tracker = self._call("GET", f"/conversations/{quote(conversation_id, safe='')}/tracker",
                             params={"include_events": "ALL"}, timeout=self.read_timeout)
        return list(tracker.get("events") or [])


# What the services' ``trigger_intent`` calls stand for, in an agent's words.
EXTERNAL_EVENTS = {"EXTERNAL_device_fault": "a device fault", "EXTERNAL_device_recovered": "a device recovery",
                   "EXTERNAL_ticket_update": "a ticket update"}


def external_trigger(event: dict[str, Any]) -> str | None:
    """The ``EXTERNAL_*`` intent of a user event a service triggered (Rasa records it as a user message with
    the text "EXTERNAL: <intent>"), else None. The customer never typed it."""
    if event.get("event") != "user":
        return None
    intent = str(((event.get("parse_data") or {}).get("intent") or {}).get("name") or "")
    if intent.startswith("EXTERNAL_"):
        return intent
    text = str(event.get("text") or "")
    return text.removeprefix("EXTERNAL: ") if text.startswith("EXTERNAL: EXTERNAL_") else None


def external_note(event: dict[str, Any], intent: str) -> str:
    """A system line for a triggered event: "Proactive message: a device fault (ticket T-000123)"."""
    entities = (event.get("parse_data") or {}).get("entities") or []
    number = next((e.get("value") for e in entities if isinstance(e, dict) and e.get("entity") == "ticket_number"), None)
    return f"Proactive message: {EXTERNAL_EVENTS.get(intent, intent)}" + (f" (ticket {number})" if number else "")


def transcript_from_events(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The customer's, the bot's and the agents' messages, and whether the bot is paused now.

    Lines are ``{"from": "customer"|"bot"|"agent"|"system", "author", "text", "at"}``; an event a service
    triggered (device fault, ticket update) is a system line, never the customer's.
    """
    turns: list[dict[str, Any]] = []
    paused = False
    for event in events:
        kind = event.get("event")
        if kind == "pause":
            paused = True
        elif kind in ("resume", "restart"):
            paused = False
        at = event.get("timestamp")
        intent = external_trigger(event)
        if intent is not None:
            turns.append({"from": "system", "author": None, "text": external_note(event, intent),
                          "at": dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat() if at else None})
            continue
        if kind not in ("user", "bot") or not event.get("text"):
            continue
        metadata = event.get("metadata") or {}
        agent = (metadata.get("agent") or (metadata.get("metadata") or {}).get("agent")) if kind == "bot" else None
        turns.append({
            "from": "customer" if kind == "user" else ("agent" if agent else "bot"),
            "author": agent,
            "text": str(event["text"]),
            "at": dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat() if at else None,
        })
    return turns, paused
