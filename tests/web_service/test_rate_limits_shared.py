"""The web service's per-chat limits are counted in Redis when ``REDIS_URL`` is set, so every replica counts
together; the settings hold that URL as a secret, and passing it on unwrapped switched every limit off (the
limiter failed on each call and admitted it). Here each limit is hit through the route with the shared Redis, then
a new limiter (as another replica has) must still refuse; with Redis away the call is admitted and counted."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator

import pytest
import redis
from pydantic import SecretStr

from tests.e2e.browser_kit import png
from tests.redis_server import redis_with_password
from tests.web_service.conftest import chat
from web_service import ratelimit
from web_service.settings import WebSettings, get_settings

REDIS = "redis://127.0.0.1:6379/6"  # a database of these tests' own, emptied before each


@pytest.fixture
def shared(client, monkeypatch) -> Iterator[object]:  # type: ignore[no-untyped-def]
    # Counters of an earlier run (per client address: the test client's) would still be in their window.
    redis.Redis.from_url(REDIS).flushdb()
    monkeypatch.setenv("REDIS_URL", REDIS)
    get_settings.cache_clear()
    assert isinstance(get_settings().redis_url, SecretStr)  # as the routes get it
    yield client
    get_settings.cache_clear()
    ratelimit._limiter.cache_clear()


def another_replica() -> None:
    """A limiter of its own, as a second web replica has: only Redis is shared."""
    ratelimit._limiter.cache_clear()


def photo(client, session: str):  # type: ignore[no-untyped-def]
    return client.post("/chat/uploads", content=png(), headers={
        "X-Chat-Session": session, "X-Chat-Key": str(chat(session)["session_key"]), "Content-Type": "image/png"})


CASES = {
    # route → (one call, calls allowed per window)
    "missed": (lambda c, s: c.post("/chat/missed", json=chat(s)), 30),
    "presence": (lambda c, s: c.post("/chat/presence", json=chat(s)), 12),
    "signal": (lambda c, s: c.post("/chat/signal", json=chat(s, kind="typing")), 40),
    "photo": (photo, 10),  # 409 (no ticket yet) counts as a call
}


@pytest.mark.parametrize("route", sorted(CASES))
def test_a_chat_limit_is_shared_by_every_replica_through_redis(shared, route):  # type: ignore[no-untyped-def]
    call, allowed = CASES[route]
    session = f"limit-{route}-{uuid.uuid4().hex}"
    codes = [call(shared, session).status_code for _ in range(allowed)]
    assert 429 not in codes, codes
    assert call(shared, session).status_code == 429
    another_replica()
    assert call(shared, session).status_code == 429  # in-process counters would have let this one through
    assert call(shared, session + "-other").status_code != 429  # per chat


def test_with_redis_away_a_call_is_admitted_counted_and_logged(client, monkeypatch, caplog):  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    monkeypatch.setenv("REDIS_URL", f"redis://:redis-sekret@127.0.0.1:{port}/0")
    get_settings.cache_clear()
    before = ratelimit.unenforced
    with caplog.at_level(logging.WARNING, logger="web_service.ratelimit"):
        assert client.post("/chat/missed", json=chat(f"limit-away-{uuid.uuid4().hex}")).status_code == 200
    assert ratelimit.unenforced == before + 1
    assert "rate limiter unavailable" in caplog.text and "redis-sekret" not in caplog.text
    get_settings.cache_clear()
    ratelimit._limiter.cache_clear()


def test_the_limiter_counts_through_the_settings_and_a_wrong_argument_is_an_error(monkeypatch):  # type: ignore[no-untyped-def]
    redis.Redis.from_url(REDIS).flushdb()
    ratelimit._limiter.cache_clear()
    monkeypatch.setenv("REDIS_URL", REDIS)
    settings = WebSettings(secret_key=SecretStr("k" * 40))
    key = f"unit-{uuid.uuid4().hex}"
    assert [ratelimit.allow("2/minute", key, settings=settings) for _ in range(3)] == [True, True, False]
    another_replica()
    assert ratelimit.allow("2/minute", key, settings=settings) is False  # the same counter, in Redis
    assert redis.Redis.from_url(REDIS).keys("appliancecare-web-ratelimit:*")  # under the deployment's prefix
    with pytest.raises(ValueError):
        ratelimit.allow("two a minute", key)  # not silently admitted
    ratelimit._limiter.cache_clear()


def test_a_redis_with_a_password_enforces_the_limits_and_health_reaches_it(client, monkeypatch):  # type: ignore[no-untyped-def]
    """An operator's Redis asks for a password (REDIS_PASSWORD, kept out of the URL as for Rasa's lock store).
    The web service ignored it: every limiter call failed to authenticate and was admitted, and /health said
    Redis was down. Another deployment on the same Redis database (its own REDIS_KEY_PREFIX) counts apart."""
    with redis_with_password("limiter-pass") as url:
        monkeypatch.setenv("REDIS_URL", url)
        monkeypatch.setenv("REDIS_PASSWORD", "limiter-pass")
        get_settings.cache_clear()
        another_replica()
        before = ratelimit.unenforced
        call, allowed = CASES["presence"]
        session = f"limit-password-{uuid.uuid4().hex}"
        assert 429 not in [call(client, session).status_code for _ in range(allowed)]
        assert call(client, session).status_code == 429
        another_replica()
        assert call(client, session).status_code == 429  # counted in that Redis, not in this process
        assert ratelimit.unenforced == before  # no call was admitted for want of Redis
        assert client.get("/health").json()["checks"]["redis"]["status"] == "up"

        monkeypatch.setenv("REDIS_KEY_PREFIX", "otherdeployment")
        get_settings.cache_clear()
        another_replica()
        assert call(client, session).status_code != 429  # the other deployment's counter starts at 0
    get_settings.cache_clear()
    ratelimit._limiter.cache_clear()


def test_the_web_service_refuses_to_start_on_a_refused_redis_password(client, monkeypatch):  # type: ignore[no-untyped-def]
    """Wrong, the password made every limiter call fail and be admitted as in an outage: every limit off."""
    from fastapi.testclient import TestClient

    from crm_store.redis_auth import RedisPasswordRefused
    from web_service.main import create_app

    with redis_with_password("web-pass") as url:
        monkeypatch.setenv("REDIS_URL", url)
        monkeypatch.setenv("REDIS_PASSWORD", "not-web-pass")
        get_settings.cache_clear()
        with pytest.raises(RedisPasswordRefused):
            with TestClient(create_app()):
                pass
    get_settings.cache_clear()
