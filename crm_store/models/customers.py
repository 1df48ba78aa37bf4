"""Customers, their chat identities, devices and purchases, and the product catalogue (models,
fault definitions, lots)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    Time,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm_store.enums import (
    ApplianceCategory,
    FaultSeverity,
    LotStatus,
    LoyaltyTier,
)
from crm_store.models.base import Base, UTCDateTime, _enum, utcnow


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    phone: Mapped[str | None] = mapped_column(String(40))
    preferred_language: Mapped[str] = mapped_column(String(8), default="en")
    loyalty_tier: Mapped[LoyaltyTier] = mapped_column(_enum(LoyaltyTier), default=LoyaltyTier.STANDARD)
    customer_since: Mapped[dt.date] = mapped_column(Date)
    city: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    consent_proactive: Mapped[bool] = mapped_column(Boolean, default=True)
    consent_marketing: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_telemetry: Mapped[bool] = mapped_column(Boolean, default=True)
    quiet_hours_start: Mapped[dt.time | None] = mapped_column(Time)
    quiet_hours_end: Mapped[dt.time | None] = mapped_column(Time)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    devices: Mapped[list[Device]] = relationship(back_populates="owner", order_by="Device.id")
    purchases: Mapped[list[Purchase]] = relationship(back_populates="customer", order_by="Purchase.purchased_at")
    identities: Mapped[list[ChannelIdentity]] = relationship(back_populates="customer")

    @property
    def first_name(self) -> str:
        return self.full_name.split()[0] if self.full_name.strip() else self.full_name


class ChannelIdentity(Base):
    """Which chat sender on which channel is which customer."""

    __tablename__ = "channel_identities"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_channel_identities_sender"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    verified_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    customer: Mapped[Customer] = relationship(back_populates="identities")


class ProductModel(Base):
    __tablename__ = "product_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    category: Mapped[ApplianceCategory] = mapped_column(_enum(ApplianceCategory))
    launched_on: Mapped[dt.date | None] = mapped_column(Date)

    faults: Mapped[list[FaultDefinition]] = relationship(back_populates="model", order_by="FaultDefinition.code")


class FaultDefinition(Base):
    """One entry of a model's fault catalogue: what a code means and what the customer can do."""

    __tablename__ = "fault_definitions"
    __table_args__ = (UniqueConstraint("model_id", "code", name="uq_fault_definitions_model_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("product_models.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    severity: Mapped[FaultSeverity] = mapped_column(_enum(FaultSeverity))
    safety_critical: Mapped[bool] = mapped_column(Boolean, default=False)
    needs_technician: Mapped[bool] = mapped_column(Boolean, default=False)
    # Newline-separated steps and comma-separated symptom keywords: short lists, read whole.
    self_help: Mapped[str] = mapped_column(Text, default="")
    keywords: Mapped[str] = mapped_column(Text, default="")

    model: Mapped[ProductModel] = relationship(back_populates="faults")

    @property
    def self_help_steps(self) -> list[str]:
        return [s.strip() for s in self.self_help.splitlines() if s.strip()]

    @property
    def keyword_list(self) -> list[str]:
        return [k.strip().lower() for k in self.keywords.split(",") if k.strip()]


class ProductLot(Base):
    """A production and shipment lot of one model; purchases record which lot they came from."""

    __tablename__ = "product_lots"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("product_models.id"))
    status: Mapped[LotStatus] = mapped_column(_enum(LotStatus), default=LotStatus.OK)
    excursion_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    excursion_detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    model: Mapped[ProductModel] = relationship()


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("product_models.id"))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    location: Mapped[str | None] = mapped_column(String(64))
    installed_on: Mapped[dt.date | None] = mapped_column(Date)
    firmware_version: Mapped[str | None] = mapped_column(String(32))
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Set for shipment loggers only: the product lot whose shipment the logger travels with.
    monitors_lot_id: Mapped[int | None] = mapped_column(ForeignKey("product_lots.id", ondelete="SET NULL"))

    model: Mapped[ProductModel] = relationship()
    owner: Mapped[Customer | None] = relationship(back_populates="devices")

    @property
    def label(self) -> str:
        """How the bot names the device to its owner: "washing machine WashPro 8 (kitchen)"."""
        where = f" ({self.location})" if self.location else ""
        return f"{self.model.category.label} {self.model.name}{where}"


class Purchase(Base):
    __tablename__ = "purchases"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_number: Mapped[str] = mapped_column(String(32), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("product_models.id"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    purchased_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    price_cents: Mapped[int] = mapped_column(Integer)
    sales_channel: Mapped[str] = mapped_column(String(32), default="online")
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("product_lots.id", ondelete="SET NULL"), index=True)

    customer: Mapped[Customer] = relationship(back_populates="purchases")
    model: Mapped[ProductModel] = relationship()
