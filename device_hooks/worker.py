"""The device worker: ``python -m device_hooks.worker``.

paho-mqtt 2 (MQTT 5, persistent session, QoS 1, manual acknowledgements) receives device messages; a
batch processor thread validates and stores them, one transaction per batch, and acknowledges each
message only after its batch is committed. Several workers share the stream through a shared
subscription (``$share/<MQTT_SHARE_GROUP>/devices/+/...``), each with its own ``MQTT_CLIENT_ID``.

Nothing waits forever on another part: paho's network thread only appends to an in-memory inbox (its
size is bounded by the session's Receive Maximum, the broker never sends more unacknowledged messages),
the processor waits on that inbox with a timeout, and a supervisor restarts the session (new client,
new processor; the broker redelivers whatever was not acknowledged) when the processor dies. Reconnects
use paho's back-off, which starts again from its minimum after every successful connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import threading
import time
from collections.abc import Callable

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy.exc import DBAPIError

from crm_store.db import error_summary
from crm_store.models import utcnow
from device_hooks.notifier import Notifier
from device_hooks.pipeline import BatchResult, Pipeline, RawMessage
from device_hooks.settings import DeviceSettings, get_settings

logger = logging.getLogger("device_hooks.worker")

TOPICS = ("devices/+/telemetry", "devices/+/fault", "devices/+/status")
KEEPALIVE = 30
RETRY_MAX_DELAY = 15.0
# A batch still not committed after this long is reported (each time again after as long).
STALL_WARNING_SECONDS = 60.0


def topic_filters(share_group: str) -> list[str]:
    """The worker's subscriptions: shared by the group's workers, or plain when no group is set."""
    return [f"$share/{share_group}/{t}" if share_group else t for t in TOPICS]


def mqtt_client(settings: DeviceSettings, *, client_id: str, manual_ack: bool = False) -> mqtt.Client:
    """A paho client (MQTT 5) set up with the worker's account and TLS settings; not yet connected."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    password = settings.mqtt_worker_password.get_secret_value()
    if password:
        client.username_pw_set(settings.mqtt_worker_username, password)
    tls = settings.mqtt_tls_config()
    if tls is not None:
        tls.apply(client)
    client.reconnect_delay_set(min_delay=1, max_delay=int(RETRY_MAX_DELAY))
    return client


class Session:
    """One MQTT connection (with paho's own reconnects) and the thread that commits its batches."""

    def __init__(self, settings: DeviceSettings, pipeline: Pipeline, on_committed: Callable[[BatchResult, int], None]) -> None:
        self.settings, self.pipeline, self.on_committed = settings, pipeline, on_committed
        self.client = mqtt_client(settings, client_id=settings.mqtt_client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_connect_fail = self._on_connect_fail
        self.inbox: collections.deque[tuple[int, RawMessage]] = collections.deque()
        self.cond = threading.Condition()
        # Incremented on every connect and disconnect: message ids are valid only on their connection.
        self.generation = 0
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.busy_since: float | None = None
        self.processor = threading.Thread(target=self._process_forever, name="batch-processor", daemon=True)

    def start(self) -> None:
        s = self.settings
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.mqtt_session_expiry_seconds  # the session outlives a restart
        props.ReceiveMaximum = s.mqtt_receive_maximum  # unacknowledged messages in flight: bounds the inbox
        self.client.connect_async(s.mqtt_host, s.mqtt_port, keepalive=KEEPALIVE, clean_start=False, properties=props)
        self.client.loop_start()  # paho's thread: network, keep-alive pings, reconnects
        self.processor.start()

    def close(self) -> None:
        self.stopping.set()
        with self.cond:
            self.cond.notify_all()
        self.client.disconnect()
        self.client.loop_stop()
        self.processor.join(30)

    # -- paho's thread: never blocks -------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: object, flags: mqtt.ConnectFlags, reason_code: object,
                    _props: object) -> None:
        if getattr(reason_code, "is_failure", False):
            logger.warning("the broker refused the connection: %s", reason_code)
            return
        with self.cond:
            self.generation += 1
            self.inbox.clear()
        s = self.settings
        logger.info("connected to mqtt://%s:%d as %s (session present: %s, subscription: %s)", s.mqtt_host,
                    s.mqtt_port, s.mqtt_client_id, flags.session_present, s.mqtt_share_group or "plain")
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in topic_filters(s.mqtt_share_group)])
        self.connected.set()

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        logger.warning("cannot reach the broker at mqtt://%s:%d; retrying with back-off", self.settings.mqtt_host,
                       self.settings.mqtt_port)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, _mid: int, reason_codes: list, _props: object) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            logger.error("the broker refused the subscription (check the ACL): %s", ", ".join(refused))

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: object, reason_code: object,
                       _props: object) -> None:
        self.connected.clear()
        with self.cond:
            self.generation += 1
            dropped = len(self.inbox)
            self.inbox.clear()  # unacknowledged: the broker sends them again on the next connection
        if not self.stopping.is_set():
            logger.warning("broker connection lost (%s); %d received messages left to redelivery; reconnecting",
                           reason_code, dropped)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.cond:
            self.inbox.append((msg.mid if msg.qos else 0, RawMessage(msg.topic, msg.payload, utcnow())))
            if len(self.inbox) == 1 or len(self.inbox) >= self.settings.batch_max:
                self.cond.notify()

    # -- the processor thread --------------------------------------------------------------------

    def _next_batch(self) -> tuple[int, list[tuple[int, RawMessage]]]:
        s = self.settings
        with self.cond:
            if not self.inbox:
                self.cond.wait(0.5)
            if not self.inbox:
                return self.generation, []
            deadline = time.monotonic() + s.batch_wait_ms / 1000
            while len(self.inbox) < s.batch_max and not self.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            n = min(len(self.inbox), s.batch_max)
            return self.generation, [self.inbox.popleft() for _ in range(n)]

    def _process_forever(self) -> None:
        try:
            while not self.stopping.is_set():
                generation, batch = self._next_batch()
                if not batch:
                    continue
                self.busy_since = time.monotonic()
                result = self._commit([raw for _mid, raw in batch])
                self.busy_since = None
                if result is None:
                    return  # stopping: nothing acknowledged, the broker keeps the batch
                with self.cond:  # no disconnect between the check and the acknowledgements
                    if generation == self.generation:
                        for mid, _raw in batch:
                            if mid:
                                self.client.ack(mid, 1)
                    else:
                        logger.info("connection changed while committing %d messages: the broker redelivers them "
                                    "(already stored, they count as duplicates)", len(batch))
                self.on_committed(result, len(batch))
        except Exception:  # logged here; the thread ends and the supervisor starts a new session
            logger.exception("the batch processor failed")

    def _commit(self, batch: list[RawMessage]) -> BatchResult | None:
        """Stores the batch, retrying database failures with back-off; None if the worker stops first."""
        delay = 0.5
        while not self.stopping.is_set():
            try:
                return self.pipeline.process(batch)
            except DBAPIError as err:  # the database is down, locked or lost the transaction
                logger.warning("storing a batch of %d messages failed (%s); retrying in %.1f s", len(batch),
                               error_summary(err), delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
        return None


class Worker:
    def __init__(self, settings: DeviceSettings, pipeline: Pipeline | None = None) -> None:
        self.settings = settings
        self.pipeline = pipeline or Pipeline(settings.database_url, statement_timeout_ms=settings.db_statement_timeout_ms,
                                             dead_letter_quota=settings.dead_letter_quota)
        self.stopping = asyncio.Event()
        self.notify = asyncio.Event()
        self.processed = 0
        self.restarts = 0
        self.session: Session | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _committed(self, result: BatchResult, n: int) -> None:  # called on the processor thread
        self.processed += n
        if result.notifications and self._loop is not None:
            self._loop.call_soon_threadsafe(self.notify.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.session = Session(self.settings, self.pipeline, self._committed)
        self.session.start()
        async with httpx.AsyncClient() as client:
            notifier = Notifier(self.pipeline, self.settings.rasa_url, self.settings.rasa_token.get_secret_value(), client,
                                self.settings.verification_ttl)
            notify = asyncio.create_task(self._notify_forever(notifier))
            try:
                await self._supervise()
            finally:
                notify.cancel()
                await asyncio.gather(notify, return_exceptions=True)
                await asyncio.to_thread(self.session.close)

    async def _supervise(self) -> None:
        warned_at = 0.0
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
            session = self.session
            assert session is not None
            if self.stopping.is_set():
                return
            if not session.processor.is_alive():
                self.restarts += 1
                logger.error("the batch processor died (see the error above); reconnecting with a new session")
                await asyncio.to_thread(session.close)
                self.session = Session(self.settings, self.pipeline, self._committed)
                self.session.start()
                continue
            busy = session.busy_since
            if busy is not None and time.monotonic() - busy > STALL_WARNING_SECONDS and time.monotonic() - warned_at > STALL_WARNING_SECONDS:
                warned_at = time.monotonic()
                logger.warning("a batch has been committing for %.0f s (database slow or unreachable?)", time.monotonic() - busy)

    async def _notify_forever(self, notifier: Notifier) -> None:
        while True:
            try:
                await asyncio.wait_for(self.notify.wait(), self.settings.notify_poll_seconds)
            except asyncio.TimeoutError:
                pass
            self.notify.clear()
            try:
                await notifier.run_once()
            except DBAPIError as err:
                # One line, not a traceback every second while the database is away (an outage of 15 s wrote
                # ~1,400 lines per worker); the pending messages wait in the database for the next round.
                logger.warning("delivering proactive messages failed (database: %s); will retry", error_summary(err))
            except Exception:
                logger.exception("delivering proactive messages failed; will retry")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = Worker(get_settings())

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stopping.set)
        await worker.run()
        logger.info("stopped after %d messages", worker.processed)

    asyncio.run(run())


if __name__ == "__main__":
    main()
