"""The REST channel with a token (the production topology's only way to have it): a POST without
``Authorization: Bearer <token>`` is refused before anything is parsed; without a token it stays open (embedded)."""

from __future__ import annotations

import json
import types

import pytest

from rasa_channels.rest import GuardedRestInput

TOKEN = "t" * 40


def post(authorization: str | None = None, method: str = "POST") -> types.SimpleNamespace:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return types.SimpleNamespace(method=method, headers=headers)


def test_a_post_without_the_bearer_token_is_refused_with_401() -> None:
    channel = GuardedRestInput.from_credentials({"token": TOKEN})
    for authorization in (None, "", "Bearer", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN):
        refused = channel.unauthorized(post(authorization))
        assert refused is not None and refused.status == 401, authorization
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert json.loads(refused.body)["error"] == "unauthorized"
    assert channel.refused == 7


def test_the_right_token_and_the_health_check_pass() -> None:
    channel = GuardedRestInput.from_credentials({"token": TOKEN})
    assert channel.unauthorized(post(f"Bearer {TOKEN}")) is None
    assert channel.unauthorized(post(f"bearer  {TOKEN} ")) is None
    assert channel.unauthorized(post(None, method="GET")) is None  # GET /webhooks/rest/ answers {"status": "ok"}


def test_without_a_token_the_channel_is_open_and_a_short_token_is_refused_at_start() -> None:
    assert GuardedRestInput.from_credentials({"token": ""}).unauthorized(post()) is None
    assert GuardedRestInput.from_credentials(None).unauthorized(post()) is None
    with pytest.raises(ValueError, match="at least 32 characters"):
        GuardedRestInput.from_credentials({"token": "short"})


def test_the_check_runs_as_middleware_of_the_channels_blueprint() -> None:
    async def on_new_message(_message: object) -> None:
        raise AssertionError("never reached in this test")

    bp = GuardedRestInput.from_credentials({"token": TOKEN}).blueprint(on_new_message)
    middleware = [m for m in bp._future_middleware if m.attach_to == "request"]
    assert len(middleware) == 1
