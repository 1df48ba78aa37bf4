"""Rasa's REST channel behind the input guard (``rasa_channels.guard``).

Same contract as ``rasa.core.channels.rest.RestInput`` (``POST /webhooks/rest/webhook`` with
``{"sender", "message"}`` → a list of ``{"recipient_id", "text", "buttons"?}``), with these differences:

- ``sender`` must be 1–128 printable characters and ``message`` a string (else ``400``);
- the client's ``input_channel`` and ``metadata`` fields are ignored: the channel is always ``rest`` and
  nothing the client claims about itself reaches the tracker;
- every message passes the guard (text bound, no typed intents, channel binding, rate limits per
  conversation and per client address); a refused one is answered with one explanatory message.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import UserMessage
from rasa.core.channels.rest import RestInput
from sanic import Blueprint
from sanic.exceptions import SanicException
from sanic.request import Request

from rasa_channels.guard import client_address, get_guard

MAX_SENDER_CHARS = 128
_client_address: contextvars.ContextVar[str | None] = contextvars.ContextVar("rest_client_address", default=None)


class GuardedRestInput(RestInput):
    """The REST channel (name ``rest``) with input validation and the guard."""

    @classmethod
    def name(cls) -> str:
        return "rest"

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
        return bp
