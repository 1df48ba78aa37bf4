"""Action server entry point: ``python -m actions``. Binds to loopback and requires Rasa's token."""

from __future__ import annotations

import hmac
import logging

from rasa_sdk.endpoint import create_app
from sanic import Sanic, response

from actions.settings import ActionSettings, get_settings
from crm_store.logscrub import install as install_log_scrubbing
from crm_store.redis_auth import verify_redis_password

logger = logging.getLogger(__name__)


# How long the action server keeps an idle connection open. Rasa keeps its connections to the action server for
# 2 s idle (nlu/kept_alive_endpoints.py); a server that closed first (Sanic's default is 5 s) could close one just as
# a late-running Rasa sends a call on it, and that customer's turn would fail.
KEEP_ALIVE_SECONDS = 60


def build_app(settings: ActionSettings) -> Sanic:
    """rasa-sdk's Sanic app with the product's actions, the bearer-token check and the keep-alive above."""
    app = create_app("actions", cors_origins=None)
    app.config.KEEP_ALIVE_TIMEOUT = KEEP_ALIVE_SECONDS
    expected = f"Bearer {settings.action_server_token.get_secret_value()}"

    @app.middleware("request")
    async def require_token(request):  # type: ignore[no-untyped-def]
        # Anyone who can call the action server can read the CRM through crafted trackers.
        if request.path == "/health":
            return None
        if not hmac.compare_digest(request.headers.get("authorization", ""), expected):
            logger.warning("refused an action call without a valid token from %s", request.ip)
            return response.json({"error": "unauthorized"}, status=401)
        return None

    return app


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_scrubbing()  # no e-mail, phone, order number or serial in any log line
    # A refused REDIS_PASSWORD would leave the anonymous-escalation limits off: refuse to start instead.
    verify_redis_password(settings.redis_url.get_secret_value(), settings.redis_password.get_secret_value())
    app = build_app(settings)
    logger.info("action server on http://%s:%d", settings.action_server_host, settings.action_server_port)
    app.run(host=settings.action_server_host, port=settings.action_server_port, workers=1, access_log=False)


if __name__ == "__main__":
    main()
