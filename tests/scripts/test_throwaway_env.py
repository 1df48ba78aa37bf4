"""scripts.topology.throwaway_env: a test's or benchmark's stack keeps its data and secrets to itself."""

from __future__ import annotations

import pathlib

import pytest

from scripts import topology

CALLER = {
    # What an operator's shell (or another stack's test session) may hold: none of it reaches the stack.
    "SECRET_KEY": "operator-secret", "ADMIN_PASSWORD": "operator-admin", "MQTT_HOST": "broker.example.com",
    "DATABASE_URL": "postgresql+psycopg://crm@db.example.com/live", "REDIS_URL": "redis://cache.example.com/0",
    "REDIS_KEY_PREFIX": "live", "REST_CHANNEL_TOKEN": "operator-token", "ESCALATION_CONFIG": "/etc/live.yml",
    "VIRTUAL_ENV": "/opt/venv",
    # Anything else is inherited.
    "PATH": "/usr/bin", "CHAT_MAX_CHARS": "500",
}


def test_embedded_keeps_its_data_in_sqlite_files_of_its_own(tmp_path: pathlib.Path):
    env, databases = topology.throwaway_env(CALLER, tmp_path)
    assert databases == []
    assert env["DATABASE_URL"] == f"sqlite:///{tmp_path}/crm.db"
    assert (env["TRACKER_DIALECT"], env["TRACKER_DB"]) == ("sqlite", str(tmp_path / "tracker.db"))
    inherited = (set(topology.STACK_OWN_VARIABLES) - {"DATABASE_URL", "ESCALATION_CONFIG", "REST_CHANNEL_TOKEN"}) & set(env)
    assert inherited == set()
    # A token of its own: the caller is the trusted back end that the REST channel requires.
    assert len(env["REST_CHANNEL_TOKEN"]) == 64 and env["REST_CHANNEL_TOKEN"] != "operator-token"
    assert (env["PATH"], env["CHAT_MAX_CHARS"]) == ("/usr/bin", "500")
    assert env["ESCALATION_CONFIG"] == str(tmp_path / "escalation.yml")
    assert "always: true" in (tmp_path / "escalation.yml").read_text()


def test_the_shipped_escalation_rules_when_asked(tmp_path: pathlib.Path):
    env, _ = topology.throwaway_env(CALLER, tmp_path, escalation=None)
    assert "ESCALATION_CONFIG" not in env and not (tmp_path / "escalation.yml").exists()


def test_production_gets_new_databases_a_key_prefix_and_a_token_and_passes_the_launchers_checks(tmp_path: pathlib.Path):
    server = "postgresql+psycopg://bench:s%40cret@127.0.0.1:5433/postgres"
    first, databases = topology.throwaway_env(CALLER, tmp_path, "production", name="e2e", postgres_url=server,
                                              redis_db=4)
    second, others = topology.throwaway_env(CALLER, tmp_path, "production", name="e2e", postgres_url=server,
                                            redis_db=4)
    assert len(databases) == 2 and not set(databases) & set(others)  # two sessions never share a database
    crm, tracker = databases
    assert crm.startswith("e2e_crm_") and tracker.startswith("e2e_tracker_")
    assert first["DATABASE_URL"] == f"postgresql+psycopg://bench:s%40cret@127.0.0.1:5433/{crm}"
    # Rasa's tracker store URL carries no password (the launcher refuses one): it travels apart.
    assert first["TRACKER_STORE_URL"] == f"postgresql://bench@127.0.0.1:5433/{tracker}"
    assert first["TRACKER_PASSWORD"] == "s@cret"
    assert first["REDIS_URL"] == "redis://127.0.0.1:6379/4"
    assert first["REDIS_KEY_PREFIX"] != second["REDIS_KEY_PREFIX"]
    assert len(first["REST_CHANNEL_TOKEN"]) == 64 and first["REST_CHANNEL_TOKEN"] != second["REST_CHANNEL_TOKEN"]
    checked = dict(first)
    topology.production_env(checked)  # raises SystemExit on anything run_stack.py would refuse
    assert (checked["TRACKER_DB"], checked["TRACKER_PORT"], checked["TRACKER_USER"]) == (tracker, "5433", "bench")
    assert checked["SOCKETIO_REDIS_CHANNEL"] == f"{first['REDIS_KEY_PREFIX']}-socketio"


def test_trust_authentication_needs_no_password(tmp_path: pathlib.Path):
    env, (_, tracker) = topology.throwaway_env(
        {}, tmp_path, "production", postgres_url="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    assert env["TRACKER_STORE_URL"] == f"postgresql://postgres@127.0.0.1:5432/{tracker}"
    assert env["TRACKER_PASSWORD"] == ""


def test_an_unknown_topology_is_refused(tmp_path: pathlib.Path):
    with pytest.raises(ValueError, match="unknown topology"):
        topology.throwaway_env({}, tmp_path, "default")
