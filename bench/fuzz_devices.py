"""The device part of the fuzz harness (bench/fuzz.py): hostile MQTT and HTTP payloads, with valid and invalid
device credentials, then a check that the worker still stores a valid message.

MQTT: each payload is published with QoS 1 as a real device (user name = serial, password = its token) to one of its
own topics or to a topic it may not write (another device's, a wildcard, ``$SYS``); a tenth of the connections use a
wrong password, an unknown serial or the worker's user name and must be refused. HTTP: ``POST
/api/ingest/devices/{serial}/{kind}`` with the same payloads and a right, wrong or missing token; every answer must
come within 5 s and none may be a 5xx.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.fuzz_inputs import device_payload, pick_kind

HANG_S = 5.0


class Tally:
    """Counts per source and failures by kind, with a few examples each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.examples: dict[str, list[Any]] = {}

    def fail(self, kind: str, example: Any) -> None:
        self.failures[kind] += 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < 8:
            shown.append(example)


class _Device:
    """A paho client in its own network thread; ``connect`` says whether the broker accepted the credentials."""

    def __init__(self, host: str, port: int, user: str, password: str) -> None:
        self.host, self.port = host, port
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fuzz-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(user, password)
        self.result: str | None = None
        self.answered = threading.Event()
        self.client.on_connect = self._on_connect

    def _on_connect(self, _c: object, _u: object, _f: object, reason_code: Any, _p: object) -> None:
        self.result = "refused" if getattr(reason_code, "is_failure", False) else "accepted"
        self.answered.set()

    def connect(self) -> str:
        self.client.loop_start()
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            return f"error: {exc!r}"
        if not self.answered.wait(HANG_S):
            return "no_answer"
        return self.result or "no_answer"

    def publish(self, topic: str, payload: bytes) -> str:
        """``acked`` (the broker's PUBACK, also for a topic its ACL refuses), ``dropped`` (the broker closed the
        connection, e.g. after a packet over its max_packet_size) or ``timeout`` (no answer within 5 s)."""
        if not self.client.is_connected():
            return "dropped"
        info = self.client.publish(topic, payload, qos=1)
        deadline = time.monotonic() + HANG_S
        while not info.is_published():
            if not self.client.is_connected():
                return "dropped"  # the broker closed the connection (a packet over its max_packet_size)
            if time.monotonic() > deadline:
                return "timeout"
            time.sleep(0.005)
        return "acked"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_fuzz(host: str, port: int, tokens: dict[str, str], count: int, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    serials = sorted(tokens)
    sent = 0
    while sent < count:
        serial = rng.choice(serials)
        bad = rng.random() < 0.1
        if bad:
            user, password, label = rng.choice([
                (serial, tokens[serial][::-1], "wrong_password"), ("ZZ99-00000000", "x", "unknown_serial"),
                ("crm-worker", tokens[serial], "service_user"), (serial, "", "empty_password"),
                ("devices/#", "x", "wildcard_user"), ("'; DROP TABLE devices; --", "x", "sql_user")])
        else:
            user, password, label = serial, tokens[serial], "valid"
        dev = _Device(host, port, user, password)
        outcome = dev.connect()
        tally.counts["mqtt_connections"] += 1
        tally.counts[f"mqtt_connect:{label}:{outcome}"] += 1
        if bad:
            sent += 1  # the connection attempt is the input
            if outcome == "accepted":
                tally.fail("auth_bypass", {"source": "mqtt", "credentials": label})
            dev.close()
            continue
        if outcome != "accepted":
            tally.fail("transport_errors", {"source": "mqtt", "connect": outcome})
            dev.close()
            sent += 1
            continue
        for _ in range(rng.randint(20, 80)):
            if sent >= count:
                break
            kind = pick_kind(rng)
            category, payload = device_payload(rng, kind)
            topic = rng.choice([f"devices/{serial}/{kind}"] * 8 + [f"devices/{rng.choice(serials)}/fault", "devices/#",
                                                                  "$SYS/broker/x", f"devices/{serial}", "#"])
            if "#" in topic and rng.random() < 0.5:
                topic = f"devices/{serial}/telemetry"
            try:
                outcome = dev.publish(topic.replace("#", "x") if "#" in topic else topic, payload)
            except (OSError, ValueError) as exc:
                outcome = f"error {type(exc).__name__}"
            sent += 1
            tally.counts["mqtt"] += 1
            tally.counts[f"mqtt:{category}"] += 1
            tally.counts[f"mqtt_publish:{outcome}"] += 1
            if outcome == "timeout":
                tally.fail("hangs_over_5s", {"source": "mqtt", "category": category, "bytes": len(payload)})
            if outcome != "acked":
                break  # the broker closed this connection (an oversize packet): the next input signs in again
        dev.close()


def http_fuzz(web_url: str, tokens: dict[str, str], count: int, seed: int, tally: Tally) -> None:
    rng = random.Random(seed + 1)
    serials = sorted(tokens)
    with httpx.Client(base_url=web_url, timeout=30) as http:
        for _ in range(count):
            serial = rng.choice(serials)
            kind = pick_kind(rng)
            category, payload = device_payload(rng, kind)
            auth = rng.choice([tokens[serial]] * 7 + [tokens[serial][:-1], "", "x" * 5000, tokens[rng.choice(serials)]])
            path_serial = rng.choice([serial] * 9 + ["../../api/customers", "ZZ99-00000000", "%00", "x" * 300])
            headers = {"Content-Type": rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded"])}
            if auth:
                headers["Authorization"] = rng.choice(["Bearer ", "bearer ", "Basic "]) + auth
            started = time.monotonic()
            try:
                resp = http.post(f"/api/ingest/devices/{path_serial}/{kind or 'x'}", content=payload, headers=headers)
                status, seconds = resp.status_code, time.monotonic() - started
            except httpx.HTTPError as exc:
                status, seconds = None, None
                tally.fail("transport_errors", {"source": "http_device", "error": repr(exc)[:200]})
            tally.counts["http_device"] += 1
            tally.counts[f"http_device:{category}"] += 1
            tally.counts[f"http_device_status:{status}"] += 1
            if status is not None and status >= 500 and status != 503:
                tally.fail("http_5xx", {"source": "http_device", "category": category, "status": status})
            elif status == 503:
                tally.fail("http_5xx", {"source": "http_device", "category": category, "status": 503,
                                        "note": "broker unavailable"})
            if seconds is None or seconds > HANG_S:
                tally.fail("hangs_over_5s", {"source": "http_device", "category": category, "seconds": seconds})


def still_ingests(host: str, port: int, tokens: dict[str, str], database_url: str, timeout: float = 60) -> float | None:
    """Publishes one valid telemetry message after the fuzz; seconds until the worker stored it (None: never)."""
    from sqlalchemy import select

    from crm_store.db import session_scope
    from crm_store.models import Device, DeviceMessage

    serial = sorted(tokens)[0]
    seq = int(time.time() * 1000) % (2**40)
    body = {"ts": dt.datetime.now(dt.timezone.utc).isoformat(), "seq": seq, "readings": {"fuzz_probe": 1}}
    dev = _Device(host, port, serial, tokens[serial])
    if dev.connect() != "accepted":
        dev.close()
        return None
    started = time.monotonic()
    dev.publish(f"devices/{serial}/telemetry", json.dumps(body).encode())
    dev.close()
    while time.monotonic() - started < timeout:
        with session_scope(database_url, write=False) as session:
            found = session.scalar(select(DeviceMessage.id).join(Device, Device.id == DeviceMessage.device_id)
                                   .where(Device.serial == serial, DeviceMessage.seq == seq))
        if found is not None:
            return round(time.monotonic() - started, 2)
        time.sleep(0.2)
    return None
