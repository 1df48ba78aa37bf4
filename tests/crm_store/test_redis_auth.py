"""A refused REDIS_PASSWORD stops a process at start-up (every limiter admits calls while Redis is away, and a
refused password raised the same kind of error, so a wrong password switched every limit off); an unreachable
Redis does not."""

from __future__ import annotations

import logging
import os
import pathlib
import socket
import subprocess
import sys

import pytest

from crm_store.redis_auth import RedisPasswordRefused, verify_redis_password
from tests.redis_server import redis_with_password

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_right_password_passes_and_a_wrong_or_missing_one_is_refused_without_being_shown():
    with redis_with_password("the-right-one") as url:
        verify_redis_password(url, "the-right-one")
        for wrong in ("not-the-password", ""):
            with pytest.raises(RedisPasswordRefused, match="REDIS_PASSWORD") as caught:
                verify_redis_password(url, wrong)
            assert "not-the-password" not in str(caught.value)


def test_a_password_given_to_a_redis_without_one_is_refused():
    """The compose file's Redis has no password unless the operator sets one for both sides."""
    with pytest.raises(RedisPasswordRefused):
        verify_redis_password("redis://127.0.0.1:6379/0", "set-only-on-the-clients")


def test_an_unreachable_redis_only_warns(caplog):  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="crm_store.redis_auth"):
        verify_redis_password(f"redis://127.0.0.1:{port}/0", "whatever", timeout=1)
    assert "not reachable" in caplog.text and "whatever" not in caplog.text
    verify_redis_password("", "")  # no Redis configured: nothing to check


def test_the_action_server_refuses_to_start_on_a_refused_password(tmp_path):  # type: ignore[no-untyped-def]
    with redis_with_password("actions-pass") as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_"))}
        env.update(PYTHONPATH=str(ROOT), REDIS_URL=url, REDIS_PASSWORD="wrong-actions-pass",
                   DATABASE_URL=f"sqlite:///{tmp_path}/crm.db", ACTION_SERVER_TOKEN="t" * 32, ACTION_SERVER_PORT="0")
        run = subprocess.run([sys.executable, "-m", "actions"], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert run.returncode != 0 and "REDIS_PASSWORD" in run.stderr, run.stderr[-2000:]
    assert "wrong-actions-pass" not in run.stderr + run.stdout


def test_every_process_reads_the_key_prefix_alike(monkeypatch):  # type: ignore[no-untyped-def]
    """Empty, the web service and the action servers wrote keys under "-web-ratelimit" while the guard used the
    default; now every settings source gives the default for empty and refuses what Rasa's lock store refuses."""
    from pydantic import ValidationError

    from actions.settings import ActionSettings
    from crm_store.redis_auth import DEFAULT_KEY_PREFIX, key_prefix
    from web_service.settings import WebSettings

    monkeypatch.setenv("REDIS_KEY_PREFIX", "")
    assert WebSettings(secret_key="k" * 40).redis_key_prefix == DEFAULT_KEY_PREFIX
    assert ActionSettings(action_server_token="t" * 32).redis_key_prefix == DEFAULT_KEY_PREFIX == key_prefix(None)
    monkeypatch.setenv("REDIS_KEY_PREFIX", "east:1")
    with pytest.raises(ValidationError):
        WebSettings(secret_key="k" * 40)
