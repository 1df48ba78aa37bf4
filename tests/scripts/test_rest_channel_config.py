"""Whether the launcher gives Rasa the REST channel: off in the production topology unless REST_CHANNEL_TOKEN is
set (then required by the channel), always on in the embedded topology (development and the tests)."""

from __future__ import annotations

import pathlib

import pytest
from ruamel.yaml import YAML

from scripts.run_stack import write_credentials

REST = "rasa_channels.rest.GuardedRestInput"


def channels(path: pathlib.Path) -> dict:
    return YAML(typ="safe").load(path.read_text()) or {}


def test_production_without_a_token_has_no_rest_channel(tmp_path: pathlib.Path):
    env: dict[str, str] = {}
    found = channels(write_credentials(env, tmp_path, production=True))
    assert REST not in found and "rasa_channels.socketio.SocketIOInput" in found


def test_production_with_a_token_has_a_rest_channel_that_requires_it(tmp_path: pathlib.Path):
    env = {"REST_CHANNEL_TOKEN": "x" * 40}
    path = write_credentials(env, tmp_path, production=True)
    assert channels(path)[REST] == {"token": "${REST_CHANNEL_TOKEN}"}  # Rasa expands it: no secret in the file
    assert "x" * 40 not in path.read_text()


def test_embedded_keeps_the_rest_channel_for_development_and_tests(tmp_path: pathlib.Path):
    env: dict[str, str] = {}
    assert REST in channels(write_credentials(env, tmp_path, production=False))
    assert env["REST_CHANNEL_TOKEN"] == ""  # set, so that Rasa's ${...} expansion has a value: open


def test_a_short_token_stops_the_launch(tmp_path: pathlib.Path):
    with pytest.raises(SystemExit, match="at least 32 characters"):
        write_credentials({"REST_CHANNEL_TOKEN": "too-short"}, tmp_path, production=True)
