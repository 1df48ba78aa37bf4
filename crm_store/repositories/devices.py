"""Devices and product models."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, contains_eager, joinedload

from crm_store.enums import ApplianceCategory
from crm_store.models import Device, ProductModel


def get_device_by_serial(session: Session, *, serial: str) -> Device | None:
    return session.scalar(
        select(Device).where(func.upper(Device.serial) == serial.strip().upper()).options(joinedload(Device.model))
    )


def list_devices_for_customer(
    session: Session, *, customer_id: int, category: ApplianceCategory | None = None
) -> list[Device]:
    """The customer's registered devices, optionally only one appliance category."""
    stmt = (
        select(Device)
        .join(Device.model)
        .where(Device.customer_id == customer_id)
        .options(contains_eager(Device.model))  # the model from the join above: one statement
        .order_by(Device.id)
    )
    if category is not None:
        stmt = stmt.where(ProductModel.category == category)
    return list(session.scalars(stmt))


def list_devices(session: Session, *, offset: int = 0, limit: int = 50) -> list[Device]:
    return list(
        session.scalars(select(Device).options(joinedload(Device.model)).order_by(Device.id).offset(offset).limit(limit))
    )


def get_model_by_code(session: Session, *, code: str) -> ProductModel | None:
    return session.scalar(select(ProductModel).where(ProductModel.code == code))


def list_models(session: Session) -> list[ProductModel]:
    return list(session.scalars(select(ProductModel).order_by(ProductModel.code)))


def get_model_name(session: Session, *, model_id: int) -> str | None:
    """The product model's display name (e.g. "CoolMax 500"), or None if there is no such model."""
    return session.scalar(select(ProductModel.name).where(ProductModel.id == model_id))


def list_fleet(session: Session) -> list[tuple[str, ApplianceCategory, int]]:
    """Every device as ``(serial, appliance category, model id)``, in id order (the simulator's fleet)."""
    stmt = select(Device.serial, ProductModel.category, Device.model_id).join(ProductModel).order_by(Device.id)
    return [(serial, category, model_id) for serial, category, model_id in session.execute(stmt)]
