"""Staff views of the device side: a device's telemetry and health, the ingest counters, dead letters,
and product lots with the customers who received them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from crm_store.enums import LotStatus
from crm_store.models import utcnow
from crm_store.repositories.devices import get_device_by_serial
from crm_store.repositories.ingest import counter_totals, list_dead_letters
from crm_store.repositories.lots import customers_of_lot, get_lot, list_lots
from crm_store.repositories.telemetry import device_health, telemetry_series
from web_service import errors
from web_service.deps import SessionDep, StaffUser
from web_service.schemas import DeadLetterPublic, DeviceHealthPublic, LotCustomer, LotPublic, TelemetryPoint

router = APIRouter(tags=["device telemetry"])


def _device(session: SessionDep, serial: str):  # type: ignore[no-untyped-def]
    device = get_device_by_serial(session, serial=serial)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.DEVICE_NOT_FOUND)
    return device


@router.get("/api/devices/{serial}/telemetry", response_model=list[TelemetryPoint])
def read_telemetry(
    serial: str, session: SessionDep, _user: StaffUser, hours: Annotated[float, Query(gt=0, le=24 * 7)] = 24,
) -> list[TelemetryPoint]:
    """Readings of the last ``hours`` (at most 500, oldest first), for the console's chart."""
    device = _device(session, serial)
    since = utcnow() - dt.timedelta(hours=hours)
    return [TelemetryPoint(ts=m.ts, readings=m.body.get("readings", {}))
            for m in telemetry_series(session, device_id=device.id, since=since)]


@router.get("/api/devices/{serial}/health", response_model=DeviceHealthPublic)
def read_health(serial: str, session: SessionDep, _user: StaffUser) -> DeviceHealthPublic:
    device = _device(session, serial)
    health = device_health(session, device)
    return DeviceHealthPublic(serial=device.serial, online=health.online, last_seen_at=device.last_seen_at,
                              reported_at=health.reported_at, readings=health.readings,  # type: ignore[arg-type]
                              open_tickets=[t.number for t in health.open_tickets if t.number])


@router.get("/api/ingest/stats")
def read_ingest_stats(session: SessionDep, _user: StaffUser) -> dict[str, int]:
    """Messages accepted, duplicates, rejections per reason, tickets opened, dead letters kept."""
    return counter_totals(session)


@router.get("/api/ingest/dead-letters", response_model=list[DeadLetterPublic])
def read_dead_letters(
    session: SessionDep, _user: StaffUser, reason: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[DeadLetterPublic]:
    return [DeadLetterPublic.model_validate(d) for d in list_dead_letters(session, reason=reason, limit=limit)]


@router.get("/api/lots", response_model=list[LotPublic])
def read_lots(session: SessionDep, _user: StaffUser, lot_status: Annotated[LotStatus | None, Query(alias="status")] = None) -> list[LotPublic]:
    return [LotPublic.model_validate(lot) for lot in list_lots(session, status=lot_status)]


@router.get("/api/lots/{code}/customers", response_model=list[LotCustomer])
def read_lot_customers(code: str, session: SessionDep, _user: StaffUser) -> list[LotCustomer]:
    """The customers who received products of the lot: whom to contact after an excursion."""
    lot = get_lot(session, code=code)
    if lot is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.LOT_NOT_FOUND)
    return [LotCustomer(customer_id=c.id, full_name=c.full_name, email=c.email, order_number=p.order_number,
                        serial=d.serial if d else None) for c, p, d in customers_of_lot(session, lot_id=lot.id)]
