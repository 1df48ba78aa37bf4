"""Whether the launcher gives Rasa the REST channel: only with REST_CHANNEL_TOKEN set (then required by the
channel), in both topologies; `make run` generates the token into .env like the other secrets."""

from __future__ import annotations

import pathlib

import pytest
from ruamel.yaml import YAML

from scripts.run_stack import ensure_env_file, read_env_file, write_credentials
from scripts.topology import GENERATED_SECRETS

REST = "rasa_channels.rest.GuardedRestInput"


def channels(path: pathlib.Path) -> dict:
    return YAML(typ="safe").load(path.read_text()) or {}


def test_without_a_token_there_is_no_rest_channel(tmp_path: pathlib.Path):
    env: dict[str, str] = {"REST_CHANNEL_TOKEN": "  "}
    found = channels(write_credentials(env, tmp_path))
    assert REST not in found and "rasa_channels.socketio.SocketIOInput" in found
    assert env["REST_CHANNEL_TOKEN"] == ""  # set, so that Rasa's ${...} expansion has a value


def test_with_a_token_the_rest_channel_requires_it(tmp_path: pathlib.Path):
    env = {"REST_CHANNEL_TOKEN": "x" * 40}
    path = write_credentials(env, tmp_path)
    assert channels(path)[REST] == {"token": "${REST_CHANNEL_TOKEN}"}  # Rasa expands it: no secret in the file
    assert "x" * 40 not in path.read_text()


def test_make_run_generates_a_token_so_the_channel_is_never_open_by_default(tmp_path: pathlib.Path):
    # A fresh clone's first `make run`: .env does not exist yet.
    assert "REST_CHANNEL_TOKEN" in GENERATED_SECRETS
    values = ensure_env_file(tmp_path / ".env")
    assert len(values["REST_CHANNEL_TOKEN"]) == 64 and (tmp_path / ".env").stat().st_mode & 0o077 == 0
    assert ensure_env_file(tmp_path / ".env")["REST_CHANNEL_TOKEN"] == values["REST_CHANNEL_TOKEN"]  # kept
    env = dict(values)
    assert channels(write_credentials(env, tmp_path))[REST] == {"token": "${REST_CHANNEL_TOKEN}"}


def test_a_token_the_environment_gives_is_not_generated_beside_it(tmp_path: pathlib.Path):
    # The environment wins over .env: a second token there would be one nobody uses (and a test reading .env would
    # send the wrong one). Set empty, it turns the channel off rather than being replaced.
    for given in ("y" * 64, ""):
        path = tmp_path / f"{len(given)}.env"
        assert "REST_CHANNEL_TOKEN" not in ensure_env_file(path, given={"REST_CHANNEL_TOKEN": given})
        assert "SECRET_KEY" in read_env_file(path)


def test_a_short_token_stops_the_launch(tmp_path: pathlib.Path):
    with pytest.raises(SystemExit, match="at least 32 characters"):
        write_credentials({"REST_CHANNEL_TOKEN": "too-short"}, tmp_path)
