"""Typed SQLAlchemy 2 models of the CRM: customers, their devices, purchases, tickets and journey."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    Time,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from crm_store.enums import (
    ApplianceCategory,
    DeviceMessageKind,
    FaultSeverity,
    HandoffMessageKind,
    HandoffReason,
    HandoffStatus,
    JourneyStage,
    LotStatus,
    ProactiveKind,
    ProactiveStatus,
    RuleAction,
    LoyaltyTier,
    TicketEventKind,
    TicketPriority,
    TicketSource,
    TicketStatus,
    UserRole,
)

# Stable constraint names so that Alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Stores aware datetimes as UTC and always returns them aware.

    SQLite drops the offset, so values read back would otherwise be naive and
    compare wrongly against aware ones.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


def _enum(cls: type) -> Enum:
    # Store the enum *values* as plain strings: readable in SQL and portable across dialects.
    return Enum(
        cls,
        native_enum=False,
        length=32,
        validate_strings=True,
        values_callable=lambda e: [m.value for m in e],
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


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


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        # open_dedup_key is set while the ticket is open and cleared when it closes, so this
        # constraint lets the database itself refuse a second open ticket for the same problem.
        UniqueConstraint("device_id", "open_dedup_key", name="uq_tickets_open_problem"),
        # The same for every source, with or without a device: one open ticket per (scope, problem).
        # dedup_scope is "device:<id>", "customer:<id>" or "anonymous", never NULL, so device-less tickets
        # collide too; the index is partial (open tickets only, the ones whose open_dedup_key is set).
        Index("uq_tickets_open_scope_problem", "dedup_scope", "open_dedup_key", unique=True,
              sqlite_where=text("open_dedup_key IS NOT NULL"), postgresql_where=text("open_dedup_key IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(16), unique=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"), index=True)
    source: Mapped[TicketSource] = mapped_column(_enum(TicketSource))
    category: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    fault_code: Mapped[str | None] = mapped_column(String(16))
    priority: Mapped[TicketPriority] = mapped_column(_enum(TicketPriority), default=TicketPriority.NORMAL)
    status: Mapped[TicketStatus] = mapped_column(_enum(TicketStatus), default=TicketStatus.OPEN)
    dedup_key: Mapped[str] = mapped_column(String(128))
    dedup_scope: Mapped[str] = mapped_column(String(64), server_default="anonymous")
    open_dedup_key: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    customer: Mapped[Customer | None] = relationship()
    device: Mapped[Device | None] = relationship()
    events: Mapped[list[TicketEvent]] = relationship(
        back_populates="ticket", order_by="TicketEvent.id", cascade="all, delete-orphan"
    )


class TicketEvent(Base):
    """What happened to a ticket: creation, status changes, notes, repeated reports."""

    __tablename__ = "ticket_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    kind: Mapped[TicketEventKind] = mapped_column(_enum(TicketEventKind))
    author: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text, default="")
    is_private: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    ticket: Mapped[Ticket] = relationship(back_populates="events")


class Interaction(Base):
    """A customer-journey event (a chat started, a device registered, feedback given, ...)."""

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    stage: Mapped[JourneyStage] = mapped_column(_enum(JourneyStage))
    event: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(32))
    conversation_id: Mapped[str | None] = mapped_column(String(255))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CsatRating(Base):
    __tablename__ = "csat_ratings"
    __table_args__ = (
        CheckConstraint("score BETWEEN 1 AND 5", name="score_range"),
        # One rating per handoff: a repeated survey answer cannot count twice (NULL: not about a handoff).
        Index("uq_csat_ratings_handoff", "handoff_id", unique=True),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    conversation_id: Mapped[str | None] = mapped_column(String(255))
    handoff_id: Mapped[int | None] = mapped_column(ForeignKey("handoffs.id", ondelete="SET NULL"))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    """A person who signs in to the console or the API (agent, supervisor, admin)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[UserRole] = mapped_column(_enum(UserRole))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


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


class TelemetryRule(Base):
    """A threshold on one telemetry metric, held for a duration, that raises a catalogue fault.

    Rules are data: operators edit rows, not code. ``hold_seconds`` = 0 fires on the first breaching
    reading; ``recovery_seconds`` is how long readings must stay normal before recovery is recorded.
    """

    __tablename__ = "telemetry_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("product_models.id", ondelete="CASCADE"), index=True)
    fault_code: Mapped[str] = mapped_column(String(16))
    metric: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str] = mapped_column(String(2))  # gt, lt, ge, le, eq
    threshold: Mapped[float] = mapped_column(Float)
    hold_seconds: Mapped[int] = mapped_column(Integer, default=0)
    recovery_seconds: Mapped[int] = mapped_column(Integer, default=600)
    action: Mapped[RuleAction] = mapped_column(_enum(RuleAction), default=RuleAction.TICKET)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    model: Mapped[ProductModel] = relationship()


class DeviceCredential(Base):
    """A device's secret, stored only as hashes: SHA-256 for the HTTP API (the token is random and
    long, so a fast hash is safe) and Mosquitto's PBKDF2 form for the broker's password file."""

    __tablename__ = "device_credentials"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    mqtt_password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    device: Mapped[Device] = relationship()


class DeviceMessage(Base):
    """An accepted device message. (device, ts, seq) is unique, so a redelivered message is stored once."""

    __tablename__ = "device_messages"
    __table_args__ = (
        UniqueConstraint("device_id", "ts", "seq", name="uq_device_messages_once"),
        Index("ix_device_messages_latest", "device_id", "kind", "ts"),
        Index("ix_device_messages_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    kind: Mapped[DeviceMessageKind] = mapped_column(_enum(DeviceMessageKind))
    seq: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class DeviceRuleState(Base):
    """Where a device stands on one rule; written only when that changes, so a restarted worker
    continues a breach (or a recovery) where it was."""

    __tablename__ = "device_rule_states"

    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    rule_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # "rule:<id>" or "code:<fault code>"
    breach_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    normal_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_ts: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class DeadLetter(Base):
    """A device message that was refused, kept for inspection with the reason."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(16))  # mqtt | http
    topic: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(String(32), index=True)
    detail: Mapped[str] = mapped_column(String(500))
    payload: Mapped[str] = mapped_column(Text)  # as received (decoded leniently), cut at the size limit
    payload_size: Mapped[int] = mapped_column(Integer)


class DeadLetterTally(Base):
    """Refused device messages of one device (the serial its topic names) in one quota window, per reason: how
    many arrived and how many were kept as dead letters (the rest were only counted). The row with reason
    ``""`` is the device's quota account: its ``received`` counts every reason together (``stored`` unused)."""

    __tablename__ = "dead_letter_tallies"

    device: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True, index=True)
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    stored: Mapped[int] = mapped_column(BigInteger, default=0)


class IngestCounter(Base):
    """Running totals of the device pipeline (accepted, duplicate, rejected:<reason>, ...)."""

    __tablename__ = "ingest_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class ProactiveMessage(Base):
    """A message the bot owes a customer about one of their tickets (an outbox).

    A device message is one per (ticket, kind): a redelivered fault cannot notify twice. A ticket update is
    one per status change (``ticket_event_id``, the change's ticket event): a retried PATCH adds no change.
    """

    __tablename__ = "proactive_messages"
    __table_args__ = (
        Index("uq_proactive_messages_once", "ticket_id", "kind", unique=True,
              sqlite_where=text("ticket_event_id IS NULL"), postgresql_where=text("ticket_event_id IS NULL")),
        Index("uq_proactive_messages_event", "ticket_event_id", unique=True,
              sqlite_where=text("ticket_event_id IS NOT NULL"), postgresql_where=text("ticket_event_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    kind: Mapped[ProactiveKind] = mapped_column(_enum(ProactiveKind))
    status: Mapped[ProactiveStatus] = mapped_column(_enum(ProactiveStatus), default=ProactiveStatus.PENDING, index=True)
    safety_critical: Mapped[bool] = mapped_column(Boolean, default=False)
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the device reported the fault: the start of the fault-to-customer latency.
    detected_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    channel: Mapped[str | None] = mapped_column(String(32))
    conversation_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(300))
    reason: Mapped[str | None] = mapped_column(String(64))  # why it was held or delayed
    # A push in flight: the worker took the message for this conversation until this time (a lease, so a
    # worker that dies mid-push does not keep it). Only that conversation's action may show it meanwhile.
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # For a ticket update: the status change it tells (its from/to statuses and the staff's note).
    ticket_event_id: Mapped[int | None] = mapped_column(ForeignKey("ticket_events.id", ondelete="CASCADE"))

    ticket: Mapped[Ticket] = relationship()
    customer: Mapped[Customer] = relationship()
    ticket_event: Mapped[TicketEvent | None] = relationship()


SAFETY_OPEN_WHERE = "reason = 'safety_fault' AND status IN ('queued', 'assigned', 'callback')"


class Handoff(Base):
    """A conversation escalated from the bot to a person, with the context packet the agent starts from."""

    __tablename__ = "handoffs"
    __table_args__ = (
        # Set to the conversation id while queued or assigned, cleared on close: the database refuses
        # a second active handoff for the same conversation (same trick as tickets' open_dedup_key).
        UniqueConstraint("active_key", name="uq_handoffs_active_key"),
        # One open handoff per safety-critical fault (its ticket), whichever path queued it: the chat's
        # action, the device worker's callback for a customer it cannot reach, a retried delivery.
        Index("uq_handoffs_open_safety_ticket", "ticket_id", unique=True,
              sqlite_where=text(SAFETY_OPEN_WHERE), postgresql_where=text(SAFETY_OPEN_WHERE)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(255), index=True)
    channel: Mapped[str | None] = mapped_column(String(32))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    reason: Mapped[HandoffReason] = mapped_column(_enum(HandoffReason))
    # What exactly fired the trigger (e.g. "safety_fault:T-000123"): repeated triggers are suppressed by it.
    trigger_key: Mapped[str] = mapped_column(String(128))
    status: Mapped[HandoffStatus] = mapped_column(_enum(HandoffStatus), default=HandoffStatus.QUEUED)
    active_key: Mapped[str | None] = mapped_column(String(255))
    priority: Mapped[TicketPriority] = mapped_column(_enum(TicketPriority), default=TicketPriority.NORMAL)
    language: Mapped[str] = mapped_column(String(8), default="en")
    category: Mapped[ApplianceCategory | None] = mapped_column(_enum(ApplianceCategory))
    summary: Mapped[str] = mapped_column(Text, default="")
    packet: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    assigned_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    first_response_due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    first_response_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When the bot took the conversation back after closing; None while Rasa has not confirmed it.
    bot_resumed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    customer: Mapped[Customer | None] = relationship()
    ticket: Mapped[Ticket | None] = relationship()
    assignee: Mapped[User | None] = relationship()
    messages: Mapped[list[HandoffMessage]] = relationship(
        back_populates="handoff", order_by="HandoffMessage.id", cascade="all, delete-orphan"
    )


class HandoffMessage(Base):
    """What agents wrote during a handoff: replies to the customer and private notes."""

    __tablename__ = "handoff_messages"
    __table_args__ = (
        Index("uq_handoff_messages_client_key", "handoff_id", "client_key", unique=True,
              sqlite_where=text("client_key IS NOT NULL"), postgresql_where=text("client_key IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    handoff_id: Mapped[int] = mapped_column(ForeignKey("handoffs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[HandoffMessageKind] = mapped_column(_enum(HandoffMessageKind))
    author: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when a relay took the reply for delivery (committed before the bot shows it: shown at most once).
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_delivery_error: Mapped[str | None] = mapped_column(String(300))
    # The sender's Idempotency-Key: a send repeated with the same key (a retry after a lost answer) is one reply.
    client_key: Mapped[str | None] = mapped_column(String(64))

    handoff: Mapped[Handoff] = relationship(back_populates="messages")


class AgentSkill(Base):
    """A skill of a console user: ``category:<appliance>`` or ``lang:<code>``. No skills: takes anything."""

    __tablename__ = "agent_skills"
    __table_args__ = (UniqueConstraint("user_id", "skill", name="uq_agent_skills_user_skill"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    skill: Mapped[str] = mapped_column(String(64))


class AuthFailure(Base):
    """Failed sign-ins and chat verifications of one key (a user name, an e-mail, a client address).

    Counted outside any conversation or session, so a new chat, a typed command or a new connection lifts
    nothing. ``key_hash`` is SHA-256 of ``scope:key`` (no personal data stored in clear).
    """

    __tablename__ = "auth_failures"
    __table_args__ = (UniqueConstraint("scope", "key_hash", name="uq_auth_failures_scope_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_failure_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ConversationSignal(Base):
    """A short-lived live signal of a conversation for the consoles and the widget: someone is typing, or
    the customer sent a message. Rows are pruned after minutes; their ids are the push feed's cursor."""

    __tablename__ = "conversation_signals"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(255), index=True)
    party: Mapped[str] = mapped_column(String(16))  # customer | agent
    kind: Mapped[str] = mapped_column(String(16))  # typing | sent
    author: Mapped[str | None] = mapped_column(String(64))  # the agent's user name
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Attachment(Base):
    """A photo a customer sent in the web chat, stored with the conversation's ticket (bytes in the row,
    so every web replica serves it)."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[str] = mapped_column(String(255), index=True)
    handoff_id: Mapped[int | None] = mapped_column(ForeignKey("handoffs.id", ondelete="SET NULL"), index=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"), index=True)
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CannedResponse(Base):
    """A saved reply agents insert in the console; ``{customer_name}``, ``{first_name}``, ``{ticket}`` and
    ``{agent_name}`` are filled in there. Managed by supervisors."""

    __tablename__ = "canned_responses"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(80), unique=True)
    body: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ConsentEvent(Base):
    """One change of a customer's consent (telemetry, proactive, marketing): when, from where, by whom.

    ``source`` is api | console | chat | import; ``actor`` a staff user name or ``customer``. Deleted with
    the customer on erasure (the erasure's audit record keeps only counts).
    """

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # telemetry | proactive | marketing
    granted: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ErasureRequest(Base):
    """A right-to-erasure request run as a resumable state machine: one per customer.

    ``steps`` maps each store to ``{"done": bool, "rows": int}``; a step's CRM work and its entry here
    commit together, so a re-run skips finished stores. ``status``: pending → running → done. A running
    request whose lease expired (its runner died) is taken over. ``work`` holds the chat sender ids the
    final tracker pass needs while the request runs and is emptied when it is done; no other personal data.
    """

    __tablename__ = "erasure_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Not a foreign key: the customer row is deleted by the erasure, the audit record stays.
    customer_id: Mapped[int] = mapped_column(Integer, index=True)
    # The customer id while the request is not done, NULL after: the database refuses a second open
    # request for a customer (SQLite may give a later customer the id of an erased one).
    active_customer_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    requested_by: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # api | chat | command
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    holder: Mapped[str | None] = mapped_column(String(128))
    runs: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    work: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AccessAudit(Base):
    """A staff access to personal data: who read a customer's 360 view, exported or erased it, changed consent."""

    __tablename__ = "access_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))  # view_360 | export | erase | consent
    customer_id: Mapped[int | None] = mapped_column(Integer, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class JobLease(Base):
    """A periodic job's lease: taken by a conditional UPDATE, so one replica runs it per period."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128), default="")
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
