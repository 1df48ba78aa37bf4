"""A fleet of simulated appliances that publish realistic telemetry, each signed in as itself.

  python -m device_hooks.simulator run [--devices 50] [--interval 10]      steady telemetry ([--reconnect]:
                                                                            through broker restarts)
  python -m device_hooks.simulator inject SERIAL CODE                      a named fault, as the device sees it
  python -m device_hooks.simulator recover SERIAL CODE                     readings back to normal
  python -m device_hooks.simulator bench --messages 200000 --devices 20    as fast as QoS 1 allows

Device credentials come from the token file written by ``device_hooks.broker provision``. ``--tls`` (or
MQTT_TLS) connects over TLS, verifying the broker's certificate and host name against ``--ca-file`` (default
MQTT_CA_FILE), on ``--port`` (default MQTT_DEVICE_TLS_PORT, else MQTT_PORT). A fault with a
telemetry rule is injected as readings beyond the threshold covering the rule's hold time (what a device
that buffered its readings would send); any other code is published on the device's fault topic.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import pathlib
import random
import select
import sys
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from crm_store.db import session_scope
from crm_store.enums import ApplianceCategory
from crm_store.models import TelemetryRule, utcnow
from crm_store.repositories.catalogue import list_enabled_rules
from crm_store.repositories.devices import list_fleet
from device_hooks.settings import MqttTls, get_settings

logger = logging.getLogger("device_hooks.simulator")

# metric -> (normal mean, spread); booleans are normally False.
NORMAL: dict[ApplianceCategory, dict[str, tuple[float, float] | bool]] = {
    ApplianceCategory.FRIDGE: {"compartment_temp_c": (4.0, 0.6), "freezer_temp_c": (-18.0, 1.0), "door_open": False,
                               "leak_sensor_wet": False, "power_w": (95.0, 25.0)},
    ApplianceCategory.WASHING_MACHINE: {"drum_rpm": (800.0, 400.0), "water_temp_c": (40.0, 8.0),
                                        "leak_sensor_wet": False, "power_w": (450.0, 200.0)},
    ApplianceCategory.DISHWASHER: {"water_temp_c": (55.0, 6.0), "leak_sensor_wet": False, "power_w": (900.0, 300.0)},
    ApplianceCategory.BOILER: {"pressure_bar": (1.5, 0.15), "flow_temp_c": (62.0, 5.0), "co_ppm": (2.0, 1.5)},
    ApplianceCategory.AIR_CONDITIONER: {"room_temp_c": (22.0, 1.5), "refrigerant_pressure_bar": (9.0, 0.8),
                                        "power_w": (700.0, 250.0)},
    ApplianceCategory.COLD_CHAIN_LOGGER: {"cargo_temp_c": (4.0, 0.8)},
}


@dataclass
class SimDevice:
    serial: str
    token: str
    category: ApplianceCategory
    rules: list[TelemetryRule] = field(default_factory=list)
    seq: int = field(default_factory=lambda: time.time_ns() // 1000)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


def normal_readings(category: ApplianceCategory, rng: random.Random) -> dict[str, float | bool]:
    out: dict[str, float | bool] = {}
    for metric, spec in NORMAL[category].items():
        out[metric] = spec if isinstance(spec, bool) else round(rng.gauss(spec[0], spec[1] / 3), 2)
    return out


def breaching_value(rule: TelemetryRule) -> float | bool:
    if rule.operator == "eq":
        return bool(rule.threshold) if rule.threshold in (0.0, 1.0) else rule.threshold
    step = max(abs(rule.threshold) * 0.4, 1.0)
    return round(rule.threshold + step if rule.operator in ("gt", "ge") else rule.threshold - min(step, abs(rule.threshold) * 0.5 or 1.0), 2)


def payload(device: SimDevice, ts: dt.datetime, **body: object) -> bytes:
    return json.dumps({"ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "seq": device.next_seq(), **body},
                      separators=(",", ":")).encode()


def load_fleet(tokens_file: pathlib.Path, serials: list[str] | None = None, limit: int | None = None) -> list[SimDevice]:
    if not tokens_file.exists():
        raise SystemExit(f"{tokens_file} not found: provision the devices first (python -m device_hooks.broker provision)")
    tokens: dict[str, str] = json.loads(tokens_file.read_text())
    with session_scope(get_settings().database_url, write=False) as session:
        rules: dict[int, list[TelemetryRule]] = {}
        for rule in list_enabled_rules(session):
            session.expunge(rule)
            rules.setdefault(rule.model_id, []).append(rule)
        fleet = [SimDevice(serial, tokens[serial], category, rules.get(model_id, []))
                 for serial, category, model_id in list_fleet(session)
                 if serial in tokens and (serials is None or serial in serials)]
    if serials:
        missing = set(serials) - {d.serial for d in fleet}
        if missing:
            raise SystemExit(f"unknown or unprovisioned device(s): {', '.join(sorted(missing))}")
    return fleet[:limit] if limit else fleet


class Connection:
    """One device's paho MQTT connection, driven from the caller's thread (paho's external-loop API:
    ``loop_read``/``loop_write``/``loop_misc``), with at most ``window`` unacknowledged QoS 1 publishes."""

    def __init__(self, device: SimDevice, window: int = 1000, *, reconnect: bool = False, tls: MqttTls | None = None) -> None:
        """``reconnect``: when the broker goes away, sign in again (for up to a minute) and let paho send
        the unacknowledged publishes again, instead of raising ConnectionError. ``tls``: connect over TLS."""
        self.device, self.window, self.reconnect = device, window, reconnect
        self.down_since: float | None = None
        self.published = 0
        self.acked = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device.serial, protocol=mqtt.MQTTv311,
                                  clean_session=True)
        self.client.username_pw_set(device.serial, device.token)
        if tls is not None:
            tls.apply(self.client)
        self.client.max_inflight_messages_set(window)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.refused: str | None = None
        self.up = False

    def _on_publish(self, *_args: object) -> None:
        self.acked += 1

    def _on_connect(self, _c: object, _u: object, _f: object, reason_code: object, _p: object) -> None:
        if getattr(reason_code, "is_failure", False):
            self.refused = str(reason_code)
        else:
            self.up = True

    def open(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.client.connect(host, port, keepalive=60)
        deadline = time.monotonic() + timeout
        while not self.up:
            if self.refused or time.monotonic() > deadline:
                raise ConnectionError(f"{self.device.serial}: the broker refused the connection: {self.refused or 'timeout'}")
            pump([self], 0.05)

    def lost(self) -> None:
        if not self.reconnect:
            raise ConnectionError(f"{self.device.serial}: the broker closed the connection")
        if self.down_since is None:
            self.down_since = time.monotonic()

    def revive(self) -> None:
        """One attempt to sign in again after a lost connection; raises after a minute of failures."""
        assert self.down_since is not None
        try:
            self.client.reconnect()
            self.down_since = None
        except OSError:
            if time.monotonic() - self.down_since > 60:
                raise ConnectionError(f"{self.device.serial}: the broker is still unreachable") from None
            time.sleep(0.2)

    def publish(self, kind: str, data: bytes) -> None:
        while self.published - self.acked >= self.window or self.down_since is not None:
            pump([self], 0.05)
        info = self.client.publish(f"devices/{self.device.serial}/{kind}", data, qos=1)
        self.published += 1  # queued by paho even if the connection just dropped; sent again on reconnect
        if info.rc in (mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_CONN_LOST):
            self.lost()
        elif info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"{self.device.serial}: publish failed: {mqtt.error_string(info.rc)}")

    def settle(self, timeout: float = 60.0) -> None:
        """Waits until the broker has acknowledged everything published."""
        deadline = time.monotonic() + timeout
        while (self.acked < self.published or self.down_since is not None) and time.monotonic() < deadline:
            pump([self], 0.05)

    def close(self) -> None:
        self.client.disconnect()


def pump(conns: list[Connection], timeout: float) -> None:
    """One round of paho's external loop over these connections: read what arrived (acknowledgements),
    write what is queued, keep-alive."""
    for conn in conns:
        if conn.down_since is not None:
            conn.revive()
    socks = {c.client.socket(): c for c in conns if c.down_since is None and c.client.socket() is not None}
    want_write = [s for s, c in socks.items() if c.client.want_write()]
    readable, writable, _ = select.select(list(socks), want_write, [], timeout)
    for sock in readable:
        if socks[sock].client.loop_read(1000) != mqtt.MQTT_ERR_SUCCESS:
            socks[sock].lost()
    for sock in writable:
        if socks[sock].down_since is None and socks[sock].client.loop_write() != mqtt.MQTT_ERR_SUCCESS:
            socks[sock].lost()
    for conn in conns:
        if conn.down_since is None and conn.client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
            conn.lost()


def connect_all(fleet: list[SimDevice], host: str, port: int, window: int = 1000, *,
                reconnect: bool = False, tls: MqttTls | None = None) -> list[Connection]:
    conns = [Connection(d, window, reconnect=reconnect, tls=tls) for d in fleet]
    for conn in conns:
        conn.open(host, port)
    return conns


def run_fleet(fleet: list[SimDevice], host: str, port: int, interval: float, duration: float | None, *,
              reconnect: bool = False, tls: MqttTls | None = None) -> dict[str, int]:
    """Streams telemetry (after one status message per device) until ``duration`` seconds have passed, then
    waits for the broker's acknowledgements. ``reconnect``: devices sign in again after a broker restart, as
    real appliances do (see :class:`Connection`). Returns ``{"devices", "published", "acked_by_broker"}``,
    what a test compares with the rows the worker stored."""
    rng = random.Random()
    conns = connect_all(fleet, host, port, reconnect=reconnect, tls=tls)
    logger.info("%d devices online, one reading each every %.1f s", len(conns), interval)
    end = time.monotonic() + duration if duration else None
    for conn in conns:
        conn.publish("status", payload(conn.device, utcnow(), online=True, firmware="2.4.1", rssi=-55))
    while end is None or time.monotonic() < end:
        for conn in conns:
            conn.publish("telemetry", payload(conn.device, utcnow(), readings=normal_readings(conn.device.category, rng)))
            pause_until = time.monotonic() + interval / max(1, len(conns))
            while time.monotonic() < pause_until:  # keeps acknowledgements and keep-alive flowing meanwhile
                pump(conns, max(0.0, pause_until - time.monotonic()))
    for conn in conns:
        conn.settle()
        conn.close()
    return {"devices": len(conns), "published": sum(c.published for c in conns),
            "acked_by_broker": sum(c.acked for c in conns)}


def inject(device: SimDevice, code: str, host: str, port: int, *, recover: bool = False,
           tls: MqttTls | None = None) -> str:
    """Publishes what the device would send for this fault (or its recovery); returns a description."""
    conn = connect_all([device], host, port, tls=tls)[0]
    rng = random.Random()
    now = utcnow()
    rule = next((r for r in device.rules if r.fault_code == code), None)
    if rule is None:
        conn.publish("fault", payload(device, now, code=code, state="cleared" if recover else "raised",
                                      detail="reported by the appliance's self-test"))
        what = f"fault topic: {code} {'cleared' if recover else 'raised'}"
    else:
        span = rule.recovery_seconds if recover else rule.hold_seconds
        steps = max(2, min(30, span // 60 + 2))
        for i in range(steps):
            ts = now - dt.timedelta(seconds=span * (steps - 1 - i) / (steps - 1))
            readings = normal_readings(device.category, rng)
            if not recover:
                readings[rule.metric] = breaching_value(rule)
            conn.publish("telemetry", payload(device, ts, readings=readings))
        what = f"{steps} readings over {span} s with {rule.metric} {'normal' if recover else f'= {breaching_value(rule)}'}"
    conn.settle()
    conn.close()
    return what


def bench(fleet: list[SimDevice], host: str, port: int, messages: int, *, tls: MqttTls | None = None) -> dict[str, float]:
    """Publishes ``messages`` telemetry messages round-robin over the fleet's connections, QoS 1."""
    rng = random.Random(1)
    conns = connect_all(fleet, host, port, tls=tls)
    # Pre-built bodies: the simulator should measure the broker and worker, not its own JSON encoding.
    samples = {c.device.serial: [normal_readings(c.device.category, rng) for _ in range(16)] for c in conns}
    base = utcnow()
    start = time.perf_counter()
    for i in range(messages):
        conn = conns[i % len(conns)]
        ts = base + dt.timedelta(microseconds=i)
        conn.publish("telemetry", payload(conn.device, ts, readings=samples[conn.device.serial][i % 16]))
        if i % 64 == 63:
            pump(conns, 0)  # read the broker's acknowledgements as they come
    deadline = time.monotonic() + 300
    while any(c.acked < c.published for c in conns) and time.monotonic() < deadline:
        pump(conns, 0.05)
    elapsed = time.perf_counter() - start
    acked = sum(c.acked for c in conns)
    for conn in conns:
        conn.close()
    return {"published": messages, "acked_by_broker": acked, "seconds": elapsed, "publish_msgs_per_s": messages / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens-file", default="var/device_tokens.json")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--tls", action="store_true", default=None,
                        help="connect over TLS (default: MQTT_TLS), verifying the broker's certificate and host name")
    parser.add_argument("--ca-file", default=None, help="the CA that signed the broker's certificate (default MQTT_CA_FILE)")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--devices", type=int, default=50)
    r.add_argument("--serial", action="append", help="simulate these devices (repeatable)")
    r.add_argument("--interval", type=float, default=10.0)
    r.add_argument("--duration", type=float, default=None)
    r.add_argument("--reconnect", action="store_true",
                   help="sign in again when the broker goes away (for up to a minute) instead of stopping")
    for name in ("inject", "recover"):
        p = sub.add_parser(name)
        p.add_argument("serial")
        p.add_argument("code")
    b = sub.add_parser("bench")
    b.add_argument("--messages", type=int, default=100_000)
    b.add_argument("--devices", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    host, port, tls = args.host or settings.mqtt_host, args.port, None
    if args.tls or settings.mqtt_tls:
        # A device signs in with its token: the worker's client certificate (MQTT_CERT_FILE) is not the device's.
        tls = MqttTls(args.ca_file if args.ca_file is not None else settings.mqtt_ca_file)
        port = port or settings.mqtt_device_tls_port
    port = port or settings.mqtt_port
    tokens = pathlib.Path(args.tokens_file)
    if args.command == "run":
        fleet = load_fleet(tokens, args.serial, None if args.serial else args.devices)
        # The counts on stdout (one JSON line) let a test compare what the broker acknowledged with what was stored.
        json.dump(run_fleet(fleet, host, port, args.interval, args.duration, reconnect=args.reconnect, tls=tls),
                  sys.stdout)
        print()
    elif args.command in ("inject", "recover"):
        device = load_fleet(tokens, [args.serial])[0]
        print(inject(device, args.code.upper(), host, port, recover=args.command == "recover", tls=tls))
    else:
        fleet = [d for d in load_fleet(tokens) if d.category is not ApplianceCategory.COLD_CHAIN_LOGGER][: args.devices]
        json.dump(bench(fleet, host, port, args.messages, tls=tls), sys.stdout)
        print()


if __name__ == "__main__":
    main()
