"""The action server's Sanic app (actions/__main__.py): the keep-alive that Rasa's kept connections rely on."""

from __future__ import annotations

import ast
import pathlib

import pytest
from pydantic import SecretStr

from actions.__main__ import KEEP_ALIVE_SECONDS, build_app
from actions.settings import ActionSettings

ROOT = pathlib.Path(__file__).resolve().parents[2]


def rasa_keepalive_seconds() -> float:
    """KEEPALIVE_SECONDS of nlu/kept_alive_endpoints.py, read from its source (the nlu package loads only in Rasa's
    environment)."""
    tree = ast.parse((ROOT / "nlu" / "kept_alive_endpoints.py").read_text())
    return next(ast.literal_eval(node.value) for node in tree.body
                if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "KEEPALIVE_SECONDS" for t in node.targets))


@pytest.fixture(scope="module")
def app():
    return build_app(ActionSettings(action_server_token=SecretStr("t" * 40), database_url="sqlite:///unused.db"))


def test_idle_connections_outlive_rasas_keep_alive_many_times_over(app):
    # Rasa drops an idle connection after KEEPALIVE_SECONDS; the server must not close it first, even when Rasa's
    # busy event loop reads a response seconds late (its 2 s count starts only then).
    assert app.config.KEEP_ALIVE_TIMEOUT == KEEP_ALIVE_SECONDS
    assert KEEP_ALIVE_SECONDS >= 10 * rasa_keepalive_seconds() > 0
