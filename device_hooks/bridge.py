"""Publishes what devices send over HTTP onto their MQTT topics, so that one worker sees every message
in order and applies one set of rules. Uses paho, signed in as the broker's ``http-bridge`` user."""

from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

logger = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    pass


class Bridge:
    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
        if password:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=15)
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._started = False

    def _start(self) -> None:
        with self._lock:
            if not self._started:
                try:
                    self._client.connect(self._host, self._port, keepalive=30)
                except OSError as err:
                    raise BrokerUnavailable(f"cannot reach the broker: {err}") from None
                self._client.loop_start()  # from here on paho reconnects by itself
                self._started = True

    def publish(self, topic: str, payload: bytes, *, timeout: float = 5.0) -> None:
        """QoS 1 publish that returns once the broker has the message; raises BrokerUnavailable.

        At least once: after a timeout the message may still arrive, and a device that retries is
        deduplicated by its (ts, seq).
        """
        self._start()
        info = self._client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as err:
            raise BrokerUnavailable(str(err)) from None
        if not info.is_published():
            raise BrokerUnavailable("the broker did not acknowledge the message in time")

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
