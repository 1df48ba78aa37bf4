"""/health (liveness) and /health/ready (readiness) with each dependency down: a port nothing listens on."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.live import free_port
from web_service.health import action_server_health_url
from web_service.main import create_app
from web_service.settings import get_settings


@pytest.fixture
def app_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """``app_with(**env)`` → a TestClient of the web service configured by ``env``."""
    clients: list[TestClient] = []

    def make(**env: str) -> TestClient:
        base = {"SECRET_KEY": "k" * 40, "HANDOFF_SWEEP_SECONDS": "0", "HEALTH_TIMEOUT_SECONDS": "1",
                "MQTT_BRIDGE_PASSWORD": "", "REDIS_URL": ""}
        for key, value in {**base, **env}.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        client = TestClient(create_app())
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
    get_settings.cache_clear()


def dead() -> int:
    return free_port()  # bound and released: nothing listens there


def test_each_dependency_down_is_reported_and_liveness_stays_200(app_with, api_db):
    client = app_with(DATABASE_URL=api_db, RASA_URL=f"http://127.0.0.1:{dead()}",
                      ACTION_ENDPOINT_URL=f"http://127.0.0.1:{dead()}/webhook", MQTT_HOST="127.0.0.1",
                      MQTT_PORT=str(dead()), MQTT_BRIDGE_PASSWORD="mqtt-sekret",
                      REDIS_URL=f"redis://:redis-sekret@127.0.0.1:{dead()}/0")
    started = time.perf_counter()
    resp = client.get("/health")
    assert time.perf_counter() - started < 5  # short timeouts, checked concurrently
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "degraded" and body["ready"] is True
    checks = body["checks"]
    assert checks["database"]["status"] == "up" and checks["database"]["latency_ms"] >= 0
    for name in ("rasa", "action_server", "mqtt", "redis"):
        assert checks[name]["status"] == "down", (name, checks[name])
        assert "Connect" in checks[name]["detail"] or "refused" in checks[name]["detail"].lower(), checks[name]
    assert "sekret" not in resp.text  # no credential in the report
    assert client.get("/health/ready").status_code == 200  # degraded, but the API itself can serve


def test_without_the_database_liveness_answers_and_readiness_fails(app_with):
    client = app_with(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{dead()}/crm", RASA_URL=f"http://127.0.0.1:{dead()}",
                      MQTT_PORT=str(dead()))
    live = client.get("/health")
    assert live.status_code == 200
    assert live.json()["checks"]["database"]["status"] == "down" and live.json()["ready"] is False
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["status"] == "down" and ready.json()["status"] == "degraded"


def test_redis_is_checked_only_when_configured(app_with, api_db):
    client = app_with(DATABASE_URL=api_db, REDIS_URL="")
    assert client.get("/health").json()["checks"]["redis"] == {"status": "not_configured"}
    client = app_with(DATABASE_URL=api_db, REDIS_URL="redis://127.0.0.1:6379/0")  # the shared Redis
    assert client.get("/health").json()["checks"]["redis"]["status"] == "up"


def test_the_action_servers_health_url_is_beside_its_webhook():
    assert action_server_health_url("http://127.0.0.1:5055/webhook") == "http://127.0.0.1:5055/health"
    assert action_server_health_url("https://actions.internal:8443/webhook?x=1") == "https://actions.internal:8443/health"


def test_without_the_database_the_api_answers_503_with_retry_after_not_500(app_with):
    from web_service import errors

    from tests.web_service.conftest import CHAT_SECRET, chat

    client = app_with(DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{dead()}/crm", MQTT_PORT=str(dead()),
                      CHAT_SESSION_SECRET=CHAT_SECRET)
    for method, path, body in (("POST", "/api/auth/token", {"username": "admin", "password": "x"}),
                               ("POST", "/chat/presence", chat("a" * 32))):
        resp = client.request(method, path, json=body)
        assert resp.status_code == 503, (path, resp.status_code, resp.text)
        assert resp.json() == {"detail": errors.DATABASE_UNAVAILABLE} and resp.headers["Retry-After"] == "5"
        assert "127.0.0.1" not in resp.text  # the driver's message (host, port) stays in the log
