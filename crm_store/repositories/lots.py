"""Product lots and the customers who received them (for a recall after a cold-chain excursion)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_store.enums import LotStatus
from crm_store.models import Customer, Device, ProductLot, Purchase


def get_lot(session: Session, *, code: str) -> ProductLot | None:
    return session.scalar(select(ProductLot).where(ProductLot.code == code))


def list_lots(session: Session, *, status: LotStatus | None = None, limit: int = 100) -> list[ProductLot]:
    stmt = select(ProductLot).order_by(ProductLot.code).limit(limit)
    if status is not None:
        stmt = stmt.where(ProductLot.status == status)
    return list(session.scalars(stmt))


def customers_of_lot(session: Session, *, lot_id: int) -> list[tuple[Customer, Purchase, Device | None]]:
    """Everyone who bought a product of the lot, with the purchase and the device it became."""
    stmt = (
        select(Customer, Purchase, Device)
        .join(Purchase, Purchase.customer_id == Customer.id)
        .outerjoin(Device, Device.id == Purchase.device_id)
        .where(Purchase.lot_id == lot_id)
        .order_by(Customer.id, Purchase.id)
    )
    return [(c, p, d) for c, p, d in session.execute(stmt)]


def record_excursion(session: Session, *, lot_id: int, since: dt.datetime, detail: Mapping[str, Any]) -> ProductLot | None:
    """Marks the lot as having had a temperature excursion since ``since`` (aware UTC; the first excursion's
    time is kept if the lot is already marked) and merges ``detail`` (JSON-serialisable: the logger's
    serial, fault code, times as ISO text, the reading) into its ``excursion_detail``. Returns the lot, or
    None if there is no lot ``lot_id``. In the caller's transaction (written at its flush)."""
    lot = session.get(ProductLot, lot_id)
    if lot is None:
        return None
    if lot.status is not LotStatus.EXCURSION:
        lot.status, lot.excursion_at = LotStatus.EXCURSION, since
    lot.excursion_detail = {**(lot.excursion_detail or {}), **detail}
    return lot


def record_back_in_range(session: Session, *, lot_id: int, at: dt.datetime) -> ProductLot | None:
    """Notes in the lot's ``excursion_detail`` that its logger is back in range at ``at`` (stored as ISO
    text). The lot stays marked until someone inspects it. Returns the lot, or None if there is none."""
    lot = session.get(ProductLot, lot_id)
    if lot is None:
        return None
    lot.excursion_detail = {**(lot.excursion_detail or {}), "back_in_range_at": at.isoformat()}
    return lot
