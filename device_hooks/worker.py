"""The device worker: ``python -m device_hooks.worker``.

Subscribes with QoS 1 on a persistent session, validates and stores messages in batches, acknowledges
each batch only after it is committed, and delivers the bot's proactive messages. A bad message is a
dead letter, never an exception; a lost broker or database is retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import httpx

from crm_store.models import utcnow
from device_hooks import wire
from device_hooks.notifier import Notifier
from device_hooks.pipeline import BatchResult, Pipeline, RawMessage
from device_hooks.settings import DeviceSettings, get_settings

logger = logging.getLogger("device_hooks.worker")

TOPICS = [("devices/+/telemetry", 1), ("devices/+/fault", 1), ("devices/+/status", 1)]
KEEPALIVE = 30


class Worker:
    def __init__(self, settings: DeviceSettings) -> None:
        self.settings = settings
        self.pipeline = Pipeline(settings.database_url)
        self.stopping = asyncio.Event()
        self.notify = asyncio.Event()
        self.processed = 0

    async def run(self) -> None:
        async with httpx.AsyncClient() as client:
            notifier = Notifier(self.pipeline, self.settings.rasa_url, self.settings.rasa_token.get_secret_value(), client)
            tasks = [asyncio.create_task(self._mqtt_forever()), asyncio.create_task(self._notify_forever(notifier))]
            await self.stopping.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _mqtt_forever(self) -> None:
        delay = 0.5
        while not self.stopping.is_set():
            try:
                await self._session()
                delay = 0.5
            except (OSError, asyncio.TimeoutError, wire.MqttError) as err:
                logger.warning("broker connection lost (%s); reconnecting in %.1f s", err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)

    async def _session(self) -> None:
        s = self.settings
        password = s.mqtt_worker_password.get_secret_value()
        reader, writer, decoder, present = await wire.open_connection(
            s.mqtt_host, s.mqtt_port, client_id=s.mqtt_client_id, username=s.mqtt_worker_username if password else None,
            password=password or None, clean_session=False, keepalive=KEEPALIVE,
        )
        logger.info("connected to mqtt://%s:%d (session present: %s)", s.mqtt_host, s.mqtt_port, present)
        writer.write(wire.subscribe_packet(1, TOPICS))
        await writer.drain()
        batches: asyncio.Queue[list[tuple[RawMessage, int]] | None] = asyncio.Queue(maxsize=2)
        processor = asyncio.create_task(self._process_batches(batches, writer))
        pinger = asyncio.create_task(self._ping(writer))
        pending: list[tuple[RawMessage, int]] = []
        deadline = 0.0
        try:
            while True:
                timeout = max(0.0, deadline - time.monotonic()) if pending else KEEPALIVE * 1.5
                try:
                    data = await asyncio.wait_for(reader.read(1 << 18), timeout)
                except asyncio.TimeoutError:
                    data = b""
                    if not pending:
                        raise wire.MqttError("no traffic from the broker within the keep-alive") from None
                else:
                    if not data:
                        raise wire.MqttError("the broker closed the connection")
                now = utcnow()
                for ptype, flags, body in decoder.feed(data):
                    if ptype == wire.PUBLISH:
                        pub = wire.parse_publish(flags, body)
                        if not pending:
                            deadline = time.monotonic() + s.batch_wait_ms / 1000
                        pending.append((RawMessage(pub.topic, pub.payload, now), pub.packet_id if pub.qos else 0))
                    elif ptype == wire.SUBACK and 0x80 in body[2:]:
                        raise wire.MqttError("the broker refused the subscription (check the ACL)")
                if pending and (len(pending) >= s.batch_max or time.monotonic() >= deadline):
                    await batches.put(pending)  # waits when two batches are queued: back-pressure on the socket
                    pending = []
                if processor.done():
                    processor.result()
        finally:
            pinger.cancel()
            processor.cancel()
            writer.close()

    async def _process_batches(self, batches: asyncio.Queue[list[tuple[RawMessage, int]] | None], writer: asyncio.StreamWriter) -> None:
        while True:
            batch = await batches.get()
            if batch is None:
                return
            result = await self._process_with_retry([m for m, _ in batch])
            # Only now, with the batch committed, may the broker forget these messages.
            acks = [pid for _, pid in batch if pid]
            if acks:
                writer.write(wire.puback_packets(acks))
                await writer.drain()
            self.processed += len(batch)
            if result.notifications:
                self.notify.set()

    async def _process_with_retry(self, batch: list[RawMessage]) -> BatchResult:
        delay = 0.5
        while True:
            try:
                return await asyncio.to_thread(self.pipeline.process, batch)
            except Exception:  # the database is down or locked: keep the batch, unacknowledged, and retry
                logger.exception("storing a batch of %d messages failed; retrying in %.1f s", len(batch), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE / 2)
            writer.write(wire.PINGREQ_PACKET)
            await writer.drain()

    async def _notify_forever(self, notifier: Notifier) -> None:
        while True:
            try:
                await asyncio.wait_for(self.notify.wait(), self.settings.notify_poll_seconds)
            except asyncio.TimeoutError:
                pass
            self.notify.clear()
            try:
                await notifier.run_once()
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
