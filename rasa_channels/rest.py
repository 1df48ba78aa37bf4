"""Rasa's REST channel behind the input guard (``rasa_channels.guard``).

Same contract as ``rasa.core.channels.rest.RestInput`` (``POST /webhooks/rest/webhook`` with
``{"sender", "message"}`` → a list of ``{"recipient_id", "text", "buttons"?}``), with these differences:

- ``sender`` must be 1–128 printable characters and ``message`` a string (else ``400``);
- the client's ``input_channel`` and ``metadata`` fields are ignored: the channel is always ``rest`` and
  nothing the client claims about itself reaches the tracker;
- every message passes the guard (text bound, no typed intents, channel binding, rate limits per
  conversation and per client address); a refused one is answered with one explanatory message;
- with a ``token`` in its credentials (``token: ${REST_CHANNEL_TOKEN}``) a POST needs
  ``Authorization: Bearer <token>`` (else ``401``, counted and logged, before anything is parsed): a ``sender``
  is a conversation's only credential, so only a trusted back end that authenticates its own users may name
  one. ``scripts/run_stack.py`` adds the channel (``bot/credentials.rest.yml``) only with ``REST_CHANNEL_TOKEN``
  set, in both topologies; without a token the class serves as Rasa's own open channel does, and says so.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Text

from rasa.core.channels.channel import UserMessage
from rasa.core.channels.rest import RestInput
from sanic import Blueprint, response
from sanic.exceptions import SanicException
from sanic.request import Request
from sanic.response import HTTPResponse

from rasa_channels.guard import client_address, get_guard

logger = logging.getLogger(__name__)

MAX_SENDER_CHARS = 128
MIN_TOKEN_CHARS = 32
_client_address: contextvars.ContextVar[str | None] = contextvars.ContextVar("rest_client_address", default=None)


class GuardedRestInput(RestInput):
    """The REST channel (name ``rest``) with input validation and the guard."""

    def __init__(self, token: str = "") -> None:
        # Rasa expands ${REST_CHANNEL_TOKEN} in credentials.yml into this value: no secret in the file itself.
        token = (token or "").strip()
        if token and len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"the REST channel's token must have at least {MIN_TOKEN_CHARS} characters")
        self.token = token
        self.refused = 0  # POSTs without the right bearer token
        if not token:
            logger.warning("REST channel: no token, so anyone who can reach this server may post as any sender")

    @classmethod
    def name(cls) -> str:
        return "rest"

    @classmethod
    def from_credentials(cls, credentials: dict[Text, Any] | None) -> GuardedRestInput:
        return cls(token=str((credentials or {}).get("token") or ""))

    def unauthorized(self, request: Request) -> HTTPResponse | None:
        """``401`` for a POST without ``Authorization: Bearer <token>`` when the channel has a token; else None."""
        if not self.token or request.method != "POST":
            return None
        scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return None
        self.refused += 1
        logger.warning("REST channel: a POST without a valid bearer token was refused (total %d)", self.refused)
        return response.json({"error": "unauthorized", "message": "this channel needs a bearer token"}, status=401,
                             headers={"WWW-Authenticate": "Bearer"})

    async def _extract_sender(self, req: Request) -> str:
        body = req.json if isinstance(req.json, dict) else {}
        sender = body.get("sender")
        if not isinstance(sender, str) or not (0 < len(sender) <= MAX_SENDER_CHARS) or not sender.isprintable():
            raise SanicException(f"'sender' must be 1 to {MAX_SENDER_CHARS} printable characters", status_code=400)
        if not isinstance(body.get("message"), str):
            raise SanicException("'message' must be a string", status_code=400)
        # The request's task also runs on_new_message: the guard reads the address from here.
        _client_address.set(client_address(req.ip, req.headers.get("X-Forwarded-For")))
        return sender

    def _extract_input_channel(self, req: Request) -> str:
        return self.name()

    def get_metadata(self, request: Request) -> dict[str, Any] | None:
        return None

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        guard = get_guard()
        bp = super().blueprint(guard.wrap(on_new_message, self.name(), lambda _m: _client_address.get()))
        guard.attach(bp)

        async def authenticate(request: Request) -> HTTPResponse | None:
            return self.unauthorized(request)

        # Blueprint middleware runs for this channel's routes only, before the body is read as JSON.
        bp.middleware("request")(authenticate)
        return bp
