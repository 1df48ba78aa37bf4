"""Request and response bodies of the API."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from crm_store.enums import (
    ApplianceCategory,
    LotStatus,
    LoyaltyTier,
    TicketEventKind,
    TicketPriority,
    TicketSource,
    TicketStatus,
    UserRole,
)


class ORM(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TokenPublic(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    role: UserRole


class CustomerPublic(ORM):
    id: int
    full_name: str
    email: str
    phone: str | None
    preferred_language: str
    loyalty_tier: LoyaltyTier
    customer_since: dt.date
    city: str | None
    consent_proactive: bool
    consent_marketing: bool


class ProductModelPublic(ORM):
    code: str
    name: str
    category: ApplianceCategory


class DevicePublic(ORM):
    id: int
    serial: str
    model: ProductModelPublic
    customer_id: int | None
    location: str | None
    installed_on: dt.date | None
    firmware_version: str | None
    last_seen_at: dt.datetime | None


class PurchasePublic(ORM):
    order_number: str
    model: ProductModelPublic
    purchased_at: dt.datetime
    price_cents: int
    sales_channel: str


class TicketEventPublic(ORM):
    kind: TicketEventKind
    author: str
    body: str
    is_private: bool
    created_at: dt.datetime


class TicketPublic(ORM):
    number: str
    customer_id: int | None
    device_id: int | None
    source: TicketSource
    category: str
    title: str
    description: str
    fault_code: str | None
    priority: TicketPriority
    status: TicketStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    resolved_at: dt.datetime | None


class TicketDetail(TicketPublic):
    events: list[TicketEventPublic]


class TicketCreate(BaseModel):
    customer_id: int
    device_serial: str | None = None
    category: str = Field(default="general", max_length=64)
    title: str = Field(min_length=3, max_length=200)
    description: str = Field(default="", max_length=10_000)
    priority: TicketPriority = TicketPriority.NORMAL


class TicketUpdate(BaseModel):
    status: TicketStatus | None = None
    priority: TicketPriority | None = None
    note: str = Field(default="", max_length=10_000)


class TicketNoteCreate(BaseModel):
    body: str = Field(min_length=1, max_length=10_000)
    is_private: bool = True


class Customer360(BaseModel):
    customer: CustomerPublic
    devices: list[DevicePublic]
    purchases: list[PurchasePublic]
    tickets: list[TicketPublic]


class ChatConfig(BaseModel):
    socket_url: str


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class TelemetryPoint(BaseModel):
    ts: dt.datetime
    readings: dict[str, float | bool]


class DeviceHealthPublic(BaseModel):
    serial: str
    online: bool
    last_seen_at: dt.datetime | None
    reported_at: dt.datetime | None
    readings: dict[str, float | bool]
    open_tickets: list[str]


class DeadLetterPublic(ORM):
    id: int
    received_at: dt.datetime
    source: str
    topic: str
    reason: str
    detail: str
    payload: str
    payload_size: int


class IngestAccepted(BaseModel):
    status: str = "accepted"
    topic: str


class LotPublic(ORM):
    code: str
    status: LotStatus
    excursion_at: dt.datetime | None
    excursion_detail: dict[str, object]


class LotCustomer(BaseModel):
    customer_id: int
    full_name: str
    email: str
    order_number: str
    serial: str | None


class PresenceReport(BaseModel):
    session_id: str = Field(min_length=8, max_length=255)
