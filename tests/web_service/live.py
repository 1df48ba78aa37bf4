"""The web service as a real HTTP server in this process (uvicorn on a free loopback port)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from tests.web_service.conftest import PASSWORDS
from web_service.settings import get_settings
from scripts.topology import free_port



@contextmanager
def live_server(monkeypatch: pytest.MonkeyPatch, database_url: str, rasa_url: str, **env: str) -> Iterator[str]:
    """Serves ``web_service.main:create_app`` against ``database_url`` with Rasa at ``rasa_url``.

    Background jobs are off unless ``env`` switches them on; the actions the Rasa stand-in runs use the
    same database.
    """
    from actions.settings import get_settings as action_settings

    values = {"DATABASE_URL": database_url, "SECRET_KEY": "k" * 40, "RASA_URL": rasa_url,
              "ACTION_SERVER_TOKEN": "test-token", "HANDOFF_SWEEP_SECONDS": "0", "RELAY_RETRY_SECONDS": "0", **env}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    action_settings.cache_clear()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config("web_service.main:create_app", factory=True, host="127.0.0.1", port=port,
                                           log_level="warning", ws="none", lifespan="on"))
    thread = threading.Thread(target=server.run, name="web-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the web service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        get_settings.cache_clear()
        action_settings.cache_clear()


def bearer(base: str, username: str) -> dict[str, str]:
    resp = httpx.post(f"{base}/api/auth/token", json={"username": username, "password": PASSWORDS[username]}, timeout=10)
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Polls ``condition()`` until it is truthy (returns it) or fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
