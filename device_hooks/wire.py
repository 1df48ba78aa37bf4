"""The part of MQTT 3.1.1 that the device worker and the simulator speak, as a small asyncio client.

Why not paho for these two: measured here, paho's per-message Python work caps a QoS 1 subscriber or
publisher at about 11-15k messages/s on one core, and paho acknowledges a message as soon as its callback
returns. The worker needs the opposite: read many messages, store them in one transaction, and only then
send their PUBACKs in one write, so that a crash before the commit makes the broker redeliver them.
Devices and the HTTP bridge use paho (see ``device_hooks.bridge``).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14

CONNACK_ERRORS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MqttError(Exception):
    """The broker refused us or broke the protocol."""


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _length(len(body)) + body


def connect_packet(client_id: str, *, username: str | None, password: str | None, clean_session: bool, keepalive: int) -> bytes:
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0) | (0x02 if clean_session else 0)
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _string(client_id)
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return _packet(CONNECT << 4, body)


def subscribe_packet(packet_id: int, topics: list[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_string(t) + bytes([q]) for t, q in topics)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def publish_packet(topic: str, payload: bytes, *, qos: int = 1, packet_id: int = 0, dup: bool = False) -> bytes:
    body = _string(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return _packet((PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1), body)


def puback_packets(packet_ids: list[int]) -> bytes:
    """PUBACKs for many messages in one buffer (MQTT requires them in the order received)."""
    return b"".join(b"\x40\x02" + struct.pack("!H", pid) for pid in packet_ids)


PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


@dataclass(slots=True)
class Publish:
    """A PUBLISH received from the broker."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int
    dup: bool


class Decoder:
    """Splits a byte stream into MQTT packets; feed it whatever the socket returned."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, int, bytes]]:
        """Yields (packet type, flags, body) for every complete packet buffered so far."""
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first = buf[pos]
            length, mult, i = 0, 1, pos + 1
            while True:
                if i >= end:
                    del buf[:pos]
                    return
                byte = buf[i]
                length += (byte & 0x7F) * mult
                i += 1
                if not byte & 0x80:
                    break
                mult *= 128
                if mult > 128**3:
                    raise MqttError("malformed remaining length")
            if i + length > end:
                break
            yield first >> 4, first & 0x0F, bytes(buf[i : i + length])
            pos = i + length
        del buf[:pos]


def parse_publish(flags: int, body: bytes) -> Publish:
    qos = (flags >> 1) & 0x03
    (tlen,) = struct.unpack_from("!H", body, 0)
    topic = body[2 : 2 + tlen].decode("utf-8", errors="replace")
    pos = 2 + tlen
    packet_id = 0
    if qos:
        (packet_id,) = struct.unpack_from("!H", body, pos)
        pos += 2
    return Publish(topic, body[pos:], qos, packet_id, bool(flags & 0x08))


async def open_connection(
    host: str, port: int, *, client_id: str, username: str | None = None, password: str | None = None,
    clean_session: bool = True, keepalive: int = 30, timeout: float = 10.0,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Decoder, bool]:
    """Connects and completes the MQTT handshake. Returns the streams, a decoder and "session present"."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=1 << 20), timeout)
    writer.write(connect_packet(client_id, username=username, password=password, clean_session=clean_session, keepalive=keepalive))
    await writer.drain()
    decoder = Decoder()
    while True:
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data:
            writer.close()
            raise MqttError("broker closed the connection during CONNECT")
        for ptype, _flags, body in decoder.feed(data):
            if ptype != CONNACK:
                raise MqttError(f"expected CONNACK, got packet type {ptype}")
            if body[1] != 0:
                writer.close()
                raise MqttError(f"connection refused: {CONNACK_ERRORS.get(body[1], body[1])}")
            return reader, writer, decoder, bool(body[0] & 0x01)
