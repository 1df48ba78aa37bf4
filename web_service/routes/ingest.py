"""HTTP ingestion for devices that cannot speak MQTT: the same contract and validation as the MQTT
topics, authenticated by the device's own token, handed to the broker so one worker sees everything."""

from __future__ import annotations

import datetime as dt
import logging
from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials

from crm_store.db import session_scope
from crm_store.models import utcnow
from crm_store.repositories.ingest import record_dead_letter
from device_hooks.bridge import Bridge, BrokerUnavailable
from device_hooks.broker import BRIDGE_USER, device_for_token
from device_hooks.validation import MAX_PAYLOAD_BYTES, Rejected, validate
from web_service import errors
from web_service.deps import bearer
from web_service.schemas import IngestAccepted
from web_service.settings import WebSettings, get_settings

logger = logging.getLogger(__name__)
router = APIRouter(tags=["device ingestion"])


@lru_cache
def _bridge(host: str, port: int, password: str) -> Bridge:
    return Bridge(host, port, BRIDGE_USER, password)


def get_bridge(settings: Annotated[WebSettings, Depends(get_settings)]) -> Bridge:
    return _bridge(settings.mqtt_host, settings.mqtt_port, settings.mqtt_bridge_password.get_secret_value())


def _authenticate(database_url: str, serial: str, token: str) -> str | None:
    """The device's serial if ``token`` is its current secret (a read-only unit of work, off the event loop)."""
    with session_scope(database_url, write=False) as session:
        device = device_for_token(session, serial=serial, token=token)
        return device.serial if device is not None else None


def _keep_dead_letter(settings: WebSettings, rej: Rejected, *, topic: str, body: bytes, received_at: dt.datetime) -> bool:
    """Counts the refused message and keeps it within the device's dead-letter quota; True if it was kept."""
    with session_scope(settings.database_url) as session:
        return record_dead_letter(session, received_at=received_at, source="http", topic=topic, reason=rej.reason,
                                  detail=rej.detail, payload=body, keep_bytes=MAX_PAYLOAD_BYTES,
                                  quota=settings.dead_letter_quota) is not None


@router.post("/api/ingest/devices/{serial}/{kind}", status_code=status.HTTP_202_ACCEPTED, response_model=IngestAccepted,
             responses={401: {"description": "unknown device or wrong token"}, 413: {}, 422: {}, 503: {}})
async def ingest(
    serial: str,
    kind: str,
    request: Request,
    settings: Annotated[WebSettings, Depends(get_settings)],
    bridge: Annotated[Bridge, Depends(get_bridge)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> IngestAccepted:
    """One device message; ``kind`` is telemetry, fault or status, the body as on MQTT. 202: handed to the broker; 413/422: refused
    (counted per device and reason, and kept as a dead letter while the device's quota allows).

    Async only to read the body as a stream with a cap; every blocking step (the token lookup, the dead
    letter, the broker's acknowledgement) runs in the threadpool, so a burst of devices never stalls the
    event loop, and no database transaction is open while the body is read or the broker is waited for.
    """
    device_serial = (await run_in_threadpool(_authenticate, settings.database_url, serial, credentials.credentials)
                     if credentials else None)
    if device_serial is None:
        # Not a dead letter: unauthenticated callers must not be able to fill the table.
        logger.warning("refused device message over HTTP for %r: bad credentials", serial[:64])
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, errors.DEVICE_TOKEN_INVALID, headers={"WWW-Authenticate": "Bearer"})
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_PAYLOAD_BYTES * 4:
            break  # enough to keep as evidence; the rest is not read
    topic = f"devices/{device_serial}/{kind[:32]}"  # a wrong kind is refused by validation, after auth
    received_at = utcnow()
    try:
        validate(topic, bytes(body), now=received_at)
    except Rejected as rej:
        kept = await run_in_threadpool(_keep_dead_letter, settings, rej, topic=topic, body=bytes(body),
                                       received_at=received_at)
        logger.warning("refused device message over HTTP from %s: %s%s", device_serial, rej.reason,
                       "" if kept else " (counted; its dead-letter quota is used up)")
        code = status.HTTP_413_CONTENT_TOO_LARGE if rej.reason == "too_large" else status.HTTP_422_UNPROCESSABLE_CONTENT
        raise HTTPException(code, {"reason": rej.reason, "message": rej.detail}) from None
    try:
        await run_in_threadpool(bridge.publish, topic, bytes(body))
    except BrokerUnavailable as err:
        logger.error("could not hand a device message to the broker: %s", err)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, errors.BROKER_UNAVAILABLE) from None
    return IngestAccepted(topic=topic)
