"""HTTP ingestion for devices that cannot speak MQTT: the same contract and validation as the MQTT
topics, authenticated by the device's own token, handed to the broker so one worker sees everything."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials

from crm_store.models import DeadLetter, IngestCounter, utcnow
from device_hooks.bridge import Bridge, BrokerUnavailable
from device_hooks.broker import BRIDGE_USER, device_for_token
from device_hooks.validation import MAX_PAYLOAD_BYTES, Rejected, validate
from web_service import errors
from web_service.deps import SessionDep, bearer
from web_service.schemas import IngestAccepted
from web_service.settings import WebSettings, get_settings

logger = logging.getLogger(__name__)
router = APIRouter(tags=["device ingestion"])


@lru_cache
def _bridge(host: str, port: int, password: str) -> Bridge:
    return Bridge(host, port, BRIDGE_USER, password)


def get_bridge(settings: Annotated[WebSettings, Depends(get_settings)]) -> Bridge:
    return _bridge(settings.mqtt_host, settings.mqtt_port, settings.mqtt_bridge_password.get_secret_value())


def _count(session: SessionDep, name: str) -> None:
    counter = session.get(IngestCounter, name) or IngestCounter(name=name, value=0)
    counter.value += 1
    session.add(counter)


@router.post("/api/ingest/devices/{serial}/{kind}", status_code=status.HTTP_202_ACCEPTED, response_model=IngestAccepted,
             responses={401: {"description": "unknown device or wrong token"}, 413: {}, 422: {}, 503: {}})
async def ingest(
    serial: str,
    kind: str,
    request: Request,
    session: SessionDep,
    bridge: Annotated[Bridge, Depends(get_bridge)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> IngestAccepted:
    """One device message; ``kind`` is telemetry, fault or status, the body as on MQTT. 202: handed to the broker; 422: refused (kept as a
    dead letter with the reason)."""
    device = device_for_token(session, serial=serial, token=credentials.credentials) if credentials else None
    if device is None:
        # Not a dead letter: unauthenticated callers must not be able to fill the table.
        logger.warning("refused device message over HTTP for %r: bad credentials", serial[:64])
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, errors.DEVICE_TOKEN_INVALID, headers={"WWW-Authenticate": "Bearer"})
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_PAYLOAD_BYTES * 4:
            break  # enough to keep as evidence; the rest is not read
    topic = f"devices/{device.serial}/{kind[:32]}"  # a wrong kind is refused by validation, after auth
    received_at = utcnow()
    try:
        validate(topic, bytes(body), now=received_at)
    except Rejected as rej:
        session.add(DeadLetter(received_at=received_at, source="http", topic=topic, reason=rej.reason,
                               detail=rej.detail[:500], payload=bytes(body[:MAX_PAYLOAD_BYTES]).decode("utf-8", errors="replace"),
                               payload_size=len(body)))
        _count(session, f"rejected:{rej.reason}")
        session.commit()
        logger.warning("refused device message over HTTP from %s: %s", device.serial, rej.reason)
        code = status.HTTP_413_CONTENT_TOO_LARGE if rej.reason == "too_large" else status.HTTP_422_UNPROCESSABLE_CONTENT
        raise HTTPException(code, {"reason": rej.reason, "message": rej.detail}) from None
    try:
        bridge.publish(topic, bytes(body))
    except BrokerUnavailable as err:
        logger.error("could not hand a device message to the broker: %s", err)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, errors.BROKER_UNAVAILABLE) from None
    return IngestAccepted(topic=topic)
