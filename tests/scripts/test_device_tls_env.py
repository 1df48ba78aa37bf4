"""What the launcher tells every process and the operator about the devices' TLS paths: the embedded topology
keeps a plain device port for development beside the TLS one; production has only the TLS one, and MQTT_PORT
names the services' loopback listener there (the only plain one)."""

from __future__ import annotations

import argparse
import pathlib

import pytest

from scripts.run_stack import build_env, mqtt_lines


def launch_args(tmp_path: pathlib.Path, topology: str) -> argparse.Namespace:
    return argparse.Namespace(topology=topology, env_file=str(tmp_path / ".env"), rasa_port=15005, actions_port=15055,
                              web_port=18000, mqtt_port=11884, mqtt_tls_port=18884, web_tls_port=18443,
                              pki_dir=str(tmp_path / "pki"))


@pytest.fixture(autouse=True)
def _no_configured_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("MQTT_HOST", "MQTT_PORT", "MQTT_CA_FILE", "MQTT_DEVICE_TLS_PORT", "DATABASE_URL", "TRACKER_STORE_URL",
                "REDIS_URL"):
        monkeypatch.delenv(key, raising=False)


def test_embedded_offers_plain_for_development_and_tls(tmp_path: pathlib.Path):
    args = launch_args(tmp_path, "embedded")
    env = build_env(args)
    assert (env["MQTT_PORT"], env["MQTT_DEVICE_TLS_PORT"]) == ("11884", "18884")
    assert env["MQTT_CA_FILE"] == str((tmp_path / "pki" / "ca.crt").resolve())
    assert env["MQTT_SERVICE_PORT"] not in ("11884", "18884")
    [line] = mqtt_lines(args, env, True, tmp_path)
    assert "mqtt://127.0.0.1:11884 (embedded, plain: development)" in line
    assert f"mqtts://127.0.0.1:18884 (TLS, CA {env['MQTT_CA_FILE']})" in line


def test_production_has_no_plain_device_port(tmp_path: pathlib.Path):
    args = launch_args(tmp_path, "production")
    env = build_env(args)
    assert env["MQTT_PORT"] == env["MQTT_SERVICE_PORT"] != "11884"
    assert env["MQTT_DEVICE_TLS_PORT"] == "18884"
    mqtt, https = mqtt_lines(args, env, True, tmp_path)
    assert "mqtts://127.0.0.1:18884" in mqtt and "only, no plain device listener" in mqtt and "11884" not in mqtt
    assert "https://127.0.0.1:18443/api/ingest/devices/" in https and "port 18000 refuses device ingestion (403)" in https


def test_a_configured_broker_is_left_as_it_is(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MQTT_HOST", "broker.internal")
    monkeypatch.setenv("MQTT_PORT", "8883")
    args = launch_args(tmp_path, "embedded")
    env = build_env(args)
    assert (env["MQTT_HOST"], env["MQTT_PORT"]) == ("broker.internal", "8883")
    assert "MQTT_DEVICE_TLS_PORT" not in env
    assert mqtt_lines(args, env, False, tmp_path) == [
        f"  MQTT broker   mqtt://broker.internal:8883 (configured); device tokens in {tmp_path / 'device_tokens.json'}"]
