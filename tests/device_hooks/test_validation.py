"""The device contract: what is accepted, and every way a message is refused (with its reason)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from crm_store.enums import DeviceMessageKind
from device_hooks.validation import MAX_PAYLOAD_BYTES, Rejected, validate

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)


def payload(**fields: object) -> bytes:
    return json.dumps({"ts": "2026-11-24T11:59:00Z", "seq": 7, **fields}).encode()


def test_telemetry_is_normalised_to_an_internal_message():
    msg = validate("devices/FR50-21000101/telemetry", payload(readings={"compartment_temp_c": 4.5, "door_open": False}), now=NOW)
    assert (msg.serial, msg.kind, msg.seq) == ("FR50-21000101", DeviceMessageKind.TELEMETRY, 7)
    assert msg.ts == dt.datetime(2026, 11, 24, 11, 59, tzinfo=dt.timezone.utc)
    assert msg.body == {"readings": {"compartment_temp_c": 4.5, "door_open": False}}


def test_fault_defaults_to_raised_and_unix_seconds_are_accepted():
    msg = validate("devices/WM80-1/fault", json.dumps({"ts": NOW.timestamp() - 5, "seq": 1, "code": "E21"}).encode(), now=NOW)
    assert msg.body == {"code": "E21", "state": "raised", "detail": ""}
    assert msg.ts == NOW - dt.timedelta(seconds=5)


def test_status_keeps_only_known_fields():
    msg = validate("devices/BL30-9/status", payload(online=True, firmware="2.4.1", rssi=-60, extra="ignored"), now=NOW)
    assert msg.body == {"online": True, "firmware": "2.4.1", "rssi": -60}


@pytest.mark.parametrize(
    ("topic", "raw", "reason"),
    [
        ("devices/FR50-1/telemetry", b"{not json", "json"),
        ("devices/FR50-1/telemetry", b"\xff\xfe\x00garbage", "json"),
        ("devices/FR50-1/telemetry", b"[1, 2, 3]", "schema"),
        ("devices/FR50-1/telemetry", b"null", "schema"),
        ("devices/FR50-1/telemetry", payload(readings={"t": "warm"}), "schema"),
        ("devices/FR50-1/telemetry", payload(readings={"t": None}), "schema"),
        ("devices/FR50-1/telemetry", payload(readings={}), "schema"),
        ("devices/FR50-1/telemetry", payload(readings={"Bad Name": 1}), "schema"),
        ("devices/FR50-1/telemetry", payload(readings={f"m{i}": i for i in range(65)}), "schema"),
        ("devices/FR50-1/telemetry", payload(readings=[1, 2]), "schema"),
        ("devices/FR50-1/telemetry", json.dumps({"ts": "2026-11-24T11:59:00Z", "seq": "7", "readings": {"a": 1}}).encode(), "schema"),
        ("devices/FR50-1/telemetry", json.dumps({"ts": "2026-11-24T11:59:00Z", "seq": -1, "readings": {"a": 1}}).encode(), "schema"),
        ("devices/FR50-1/telemetry", json.dumps({"ts": "2026-11-24T11:59:00Z", "seq": True, "readings": {"a": 1}}).encode(), "schema"),
        ("devices/FR50-1/telemetry", json.dumps({"seq": 1, "readings": {"a": 1}}).encode(), "schema"),
        ("devices/FR50-1/telemetry", json.dumps({"ts": "yesterday", "seq": 1, "readings": {"a": 1}}).encode(), "schema"),
        ("devices/FR50-1/telemetry", json.dumps({"ts": "2026-11-24T11:59:00", "seq": 1, "readings": {"a": 1}}).encode(), "schema"),
        ("devices/FR50-1/telemetry", b'{"ts": "2026-11-24T11:59:00Z", "seq": 1, "readings": {"a": NaN}}', "json"),  # NaN is not JSON
        ("devices/FR50-1/telemetry", json.dumps({"ts": "2099-01-01T00:00:00Z", "seq": 1, "readings": {"a": 1}}).encode(), "timestamp_future"),
        ("devices/FR50-1/telemetry", json.dumps({"ts": "2026-11-24T12:06:00Z", "seq": 1, "readings": {"a": 1}}).encode(), "timestamp_future"),
        ("devices/FR50-1/telemetry", json.dumps({"ts": "2020-01-01T00:00:00Z", "seq": 1, "readings": {"a": 1}}).encode(), "timestamp_stale"),
        ("devices/FR50-1/telemetry", b"{" + b" " * MAX_PAYLOAD_BYTES + b"}", "too_large"),
        ("devices/FR50-1/fault", payload(code="kaputt"), "schema"),
        ("devices/FR50-1/fault", payload(code="E21", state="exploded"), "schema"),
        ("devices/FR50-1/fault", payload(code="E21", detail="x" * 501), "schema"),
        ("devices/FR50-1/status", payload(online="yes"), "schema"),
        ("devices/FR50-1/status", payload(online=True, rssi=20), "schema"),
        ("devices/FR50-1/commands", payload(), "topic"),
        ("devices/FR50-1/telemetry/extra", payload(), "topic"),
        ("device/FR50-1/telemetry", payload(), "topic"),
        ("devices/../telemetry", payload(), "topic"),
        ("devices/fr50 1/telemetry", payload(), "topic"),
        ("", payload(), "topic"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(topic: str, raw: bytes, reason: str):
    with pytest.raises(Rejected) as err:
        validate(topic, raw, now=NOW)
    assert err.value.reason == reason
    assert err.value.detail
