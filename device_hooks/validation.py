"""The device contract: topics and payload schemas, checked before any handler sees a message.

Topics: ``devices/<serial>/telemetry``, ``devices/<serial>/fault``, ``devices/<serial>/status``.
Every payload is a JSON object with ``ts`` (ISO 8601 with offset, or Unix seconds) and ``seq`` (the
device's message counter); the rest depends on the kind (see the README's "MQTT contract").
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from crm_store.enums import DeviceMessageKind

MAX_PAYLOAD_BYTES = 16 * 1024
# The broker refuses bigger MQTT packets itself (Mosquitto's max_packet_size, device_hooks.broker) and
# disconnects the sender; between the two limits a message reaches the worker and is refused there as
# ``too_large``: counted per device and kept as evidence within the device's dead-letter quota.
MAX_PACKET_BYTES = 4 * MAX_PAYLOAD_BYTES
MAX_READINGS = 64
# A device clock may be a little ahead; far-future stamps would poison "latest" and rule state.
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
# Older messages are refused: a rule held "for 15 minutes" means nothing about last month.
MAX_AGE = dt.timedelta(days=7)

SERIAL_RE = re.compile(r"[A-Z0-9][A-Z0-9-]{2,40}")
METRIC_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
FAULT_CODE_RE = re.compile(r"[A-Z]{1,3}[0-9]{1,4}")
KINDS = {k.value: k for k in DeviceMessageKind}


class Rejected(Exception):
    """A message that breaks the contract; ``reason`` is a short stable word used for counting."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class DeviceMessageIn:
    """A validated device message, the only form handlers receive."""

    serial: str
    kind: DeviceMessageKind
    seq: int
    ts: dt.datetime
    body: dict[str, Any]  # the normalised payload that is stored


# Validated topics and metric names, remembered: the same few thousand recur in every batch.
_TOPICS: dict[str, tuple[str, DeviceMessageKind]] = {}
_METRICS: set[str] = set()
_CACHE_LIMIT = 200_000


def parse_topic(topic: str) -> tuple[str, DeviceMessageKind]:
    known = _TOPICS.get(topic)
    if known is not None:
        return known
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "devices" or parts[2] not in KINDS:
        raise Rejected("topic", "expected devices/<serial>/telemetry|fault|status")
    if not SERIAL_RE.fullmatch(parts[1]):
        raise Rejected("topic", "malformed serial number in topic")
    if len(_TOPICS) < _CACHE_LIMIT:
        _TOPICS[topic] = (parts[1], KINDS[parts[2]])
    return parts[1], KINDS[parts[2]]


def parse_timestamp(value: Any) -> dt.datetime:
    if isinstance(value, bool):
        raise Rejected("schema", "ts must be an ISO 8601 string or Unix seconds")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not 0 < value < 32503680000:
            raise Rejected("schema", "ts out of range")
        return dt.datetime.fromtimestamp(value, dt.timezone.utc)
    if isinstance(value, str) and 10 <= len(value) <= 40:
        try:
            parsed = dt.datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        except ValueError:
            raise Rejected("schema", "ts is not ISO 8601") from None
        if parsed.tzinfo is None:
            raise Rejected("schema", "ts needs a UTC offset")
        return parsed.astimezone(dt.timezone.utc)
    raise Rejected("schema", "ts must be an ISO 8601 string or Unix seconds")


def _number_or_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, (int, float)) and math.isfinite(value)


def _telemetry(data: dict[str, Any]) -> dict[str, Any]:
    readings = data.get("readings")
    if not isinstance(readings, dict) or not readings:
        raise Rejected("schema", "readings must be a non-empty object")
    if len(readings) > MAX_READINGS:
        raise Rejected("schema", f"at most {MAX_READINGS} readings per message")
    for key, value in readings.items():
        if key not in _METRICS:
            if not METRIC_RE.fullmatch(key):
                raise Rejected("schema", f"bad metric name {key[:40]!r}")
            if len(_METRICS) < _CACHE_LIMIT:
                _METRICS.add(key)
        if not _number_or_bool(value):
            raise Rejected("schema", f"reading {key} must be a number or true/false")
    return {"readings": readings}


def _fault(data: dict[str, Any]) -> dict[str, Any]:
    code, state, detail = data.get("code"), data.get("state", "raised"), data.get("detail", "")
    if not isinstance(code, str) or not FAULT_CODE_RE.fullmatch(code):
        raise Rejected("schema", "code must look like E21")
    if state not in ("raised", "cleared"):
        raise Rejected("schema", "state must be raised or cleared")
    if not isinstance(detail, str) or len(detail) > 500:
        raise Rejected("schema", "detail must be text of at most 500 characters")
    return {"code": code, "state": state, "detail": detail}


def _status(data: dict[str, Any]) -> dict[str, Any]:
    online, firmware, rssi = data.get("online"), data.get("firmware"), data.get("rssi")
    if not isinstance(online, bool):
        raise Rejected("schema", "online must be true or false")
    if firmware is not None and (not isinstance(firmware, str) or len(firmware) > 32):
        raise Rejected("schema", "firmware must be text of at most 32 characters")
    if rssi is not None and (isinstance(rssi, bool) or not isinstance(rssi, int) or not -150 <= rssi <= 0):
        raise Rejected("schema", "rssi must be an integer dBm between -150 and 0")
    body: dict[str, Any] = {"online": online}
    if firmware is not None:
        body["firmware"] = firmware
    if rssi is not None:
        body["rssi"] = rssi
    return body


BODY = {DeviceMessageKind.TELEMETRY: _telemetry, DeviceMessageKind.FAULT: _fault, DeviceMessageKind.STATUS: _status}


def validate(topic: str, payload: bytes, *, now: dt.datetime) -> DeviceMessageIn:
    """Checks topic, size, JSON, schema and timestamp sanity. The device registry is checked by the caller."""
    serial, kind = parse_topic(topic)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected("too_large", f"{len(payload)} bytes, the limit is {MAX_PAYLOAD_BYTES}")
    try:
        data = orjson.loads(payload)  # strict JSON (no NaN), valid UTF-8, and several times faster than json
    except orjson.JSONDecodeError as err:
        raise Rejected("json", str(err)[:200]) from None
    if not isinstance(data, dict):
        raise Rejected("schema", "payload must be a JSON object")
    seq = data.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**53:
        raise Rejected("schema", "seq must be a non-negative integer")
    ts = parse_timestamp(data.get("ts"))
    if ts > now + MAX_CLOCK_SKEW:
        raise Rejected("timestamp_future", f"ts {ts.isoformat()} is ahead of the server clock")
    if ts < now - MAX_AGE:
        raise Rejected("timestamp_stale", f"ts {ts.isoformat()} is older than {MAX_AGE.days} days")
    return DeviceMessageIn(serial=serial, kind=kind, seq=seq, ts=ts, body=BODY[kind](data))
