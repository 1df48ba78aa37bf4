"""Rasa's Facebook Messenger channel with a configurable Graph API address.

Identical to ``rasa.core.channels.facebook.FacebookInput`` (same name, webhook and signature check) except
that the Graph API base URL comes from the ``graph-url`` credential. Production leaves it at Facebook's;
the end-to-end tests point it at a local stand-in for Facebook's servers, the one thing they cannot reach,
so that the bot's and the agents' replies to a Messenger customer can be observed.

Event-loop rule: fbmessenger posts to the Graph API with ``requests``, synchronously and without a
timeout, from inside Rasa's ``async`` output channel; one slow answer from Facebook would stall every
conversation of the Rasa server. Here every Graph API call runs in a worker thread and is bounded by
``GRAPH_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fbmessenger import MessengerClient
from rasa.core.channels.channel import UserMessage
from rasa.core.channels.facebook import FacebookInput as RasaFacebookInput
from rasa.core.channels.facebook import Messenger as RasaMessenger
from rasa.core.channels.facebook import MessengerBot as RasaMessengerBot
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from rasa_channels.guard import get_guard

logger = logging.getLogger(__name__)
FACEBOOK_GRAPH_URL = "https://graph.facebook.com"
# A Graph API call that takes longer fails (and is logged by Rasa) instead of holding a worker thread.
GRAPH_TIMEOUT_SECONDS = 10.0


class TimedMessengerClient(MessengerClient):
    """fbmessenger's client with a default timeout on the calls the output channel makes."""

    def send(self, payload: Any, recipient_id: str, messaging_type: str = "RESPONSE",
             notification_type: str = "REGULAR", timeout: float | None = None, tag: str | None = None) -> Any:
        return super().send(payload, recipient_id, messaging_type, notification_type,
                            timeout=timeout or GRAPH_TIMEOUT_SECONDS, tag=tag)

    def send_action(self, sender_action: Any, recipient_id: str, timeout: float | None = None) -> Any:
        return super().send_action(sender_action, recipient_id, timeout=timeout or GRAPH_TIMEOUT_SECONDS)


def _in_thread(coroutine: Coroutine[Any, Any, Any]) -> Awaitable[Any]:
    """Runs a coroutine whose body blocks (Rasa's MessengerBot methods) on a worker thread's own loop."""
    return asyncio.to_thread(asyncio.run, coroutine)


class MessengerBot(RasaMessengerBot):
    """Rasa's Messenger output channel with its blocking Graph API calls off the event loop."""

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        await _in_thread(super().send_response(recipient_id, message))

    async def send_action(self, recipient_id: str, sender_action: str) -> None:
        await _in_thread(super().send_action(recipient_id, sender_action))


class Messenger(RasaMessenger):
    """Rasa's Messenger webhook handler, replying through the off-loop :class:`MessengerBot`."""

    async def _handle_user_message(self, text: str, sender_id: str, metadata: dict[str, Any] | None) -> None:
        # As Rasa's, but with this module's MessengerBot (Rasa's builds its own by name).
        out_channel = MessengerBot(self.client)
        await out_channel.send_action(sender_id, sender_action="mark_seen")
        user_msg = UserMessage(text, out_channel, sender_id, input_channel=self.name(), metadata=metadata)
        await out_channel.send_action(sender_id, sender_action="typing_on")
        try:
            await self.on_new_message(user_msg)
        except Exception:
            logger.exception("Exception when trying to handle webhook for facebook message.")
        finally:
            await out_channel.send_action(sender_id, sender_action="typing_off")


class FacebookInput(RasaFacebookInput):
    """Messenger webhook at ``/webhooks/facebook/webhook``; refuses payloads without a valid X-Hub-Signature."""

    @classmethod
    def name(cls) -> str:
        return "facebook"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> FacebookInput:
        if not credentials:
            cls.raise_missing_credentials_exception()
        assert credentials is not None
        if not credentials.get("secret"):
            raise ValueError("the facebook channel needs its app secret: unsigned webhooks must never be accepted")
        return cls(credentials.get("verify"), credentials["secret"], credentials.get("page-access-token"),
                   credentials.get("graph-url") or FACEBOOK_GRAPH_URL)

    def __init__(self, fb_verify: str, fb_secret: str, fb_access_token: str, graph_url: str = FACEBOOK_GRAPH_URL) -> None:
        super().__init__(fb_verify, fb_secret, fb_access_token)
        self.graph_url = graph_url.rstrip("/")

    @staticmethod
    def validate_hub_signature(app_secret: str, request_payload: bytes, hub_signature_header: str) -> bool:
        """``sha1=`` or ``sha256=`` HMAC of the body with the app secret, compared in constant time."""
        method, _, signature = hub_signature_header.partition("=")
        if method not in ("sha1", "sha256") or not signature or not app_secret:
            return False
        expected = hmac.new(app_secret.encode(), request_payload, getattr(hashlib, method)).hexdigest()
        return hmac.compare_digest(expected, signature)

    def client(self) -> MessengerClient:
        client = TimedMessengerClient(self.fb_access_token)
        client.graph_url = f"{self.graph_url}/v{client.api_version}"
        return client

    def get_output_channel(self) -> MessengerBot:
        return MessengerBot(self.client())

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        fb_webhook = Blueprint("fb_webhook", __name__)
        guard = get_guard()
        guard.attach(fb_webhook)
        # Page-scoped ids come from Facebook's signed calls; text and postbacks still pass the guard.
        on_new_message = guard.wrap(on_new_message, self.name())

        @fb_webhook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @fb_webhook.route("/webhook", methods=["GET"])
        async def token_verification(request: Request) -> HTTPResponse:
            if request.args.get("hub.verify_token") == self.fb_verify:
                return response.text(request.args.get("hub.challenge"))
            logger.warning("invalid Messenger verify token")
            return response.text("failure, invalid token", status=403)

        @fb_webhook.route("/webhook", methods=["POST"])
        async def webhook(request: Request) -> HTTPResponse:
            signature = request.headers.get("X-Hub-Signature") or ""
            if not self.validate_hub_signature(self.fb_secret, request.body, signature):
                # 403 rather than Rasa's 200 "not validated": a forged call is refused, visibly.
                logger.warning("refused a Messenger webhook call with a wrong signature")
                return response.text("not validated", status=403)
            messenger = Messenger(self.fb_access_token, on_new_message)
            messenger.client = self.client()
            await messenger.handle(request.json, self.get_metadata(request))
            return response.text("success")

        return fb_webhook
