"""Action server entry point: ``python -m actions``. Binds to loopback and requires Rasa's token."""

from __future__ import annotations

import hmac
import logging

from rasa_sdk.endpoint import create_app
from sanic import response

from actions.settings import get_settings
from crm_store.logscrub import install as install_log_scrubbing

logger = logging.getLogger(__name__)


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_scrubbing()  # no e-mail, phone, order number or serial in any log line
    app = create_app("actions", cors_origins=None)
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

    logger.info("action server on http://%s:%d", settings.action_server_host, settings.action_server_port)
    app.run(host=settings.action_server_host, port=settings.action_server_port, workers=1, access_log=False)


if __name__ == "__main__":
    main()
