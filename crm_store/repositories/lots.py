"""Product lots and the customers who received them (for a recall after a cold-chain excursion)."""

from __future__ import annotations

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
