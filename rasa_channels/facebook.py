"""Rasa's Facebook Messenger channel with a configurable Graph API address.

Identical to ``rasa.core.channels.facebook.FacebookInput`` (same name, webhook and signature check) except
that the Graph API base URL comes from the ``graph-url`` credential. Production leaves it at Facebook's;
the end-to-end tests point it at a local stand-in for Facebook's servers, the one thing they cannot reach,
so that the bot's and the agents' replies to a Messenger customer can be observed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fbmessenger import MessengerClient
from rasa.core.channels.channel import UserMessage
from rasa.core.channels.facebook import FacebookInput as RasaFacebookInput
from rasa.core.channels.facebook import Messenger, MessengerBot
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from rasa_channels.guard import get_guard

logger = logging.getLogger(__name__)
FACEBOOK_GRAPH_URL = "https://graph.facebook.com"


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
        client = MessengerClient(self.fb_access_token)
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
