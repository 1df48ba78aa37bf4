"""The device pipeline: telemetry rules, device credentials, accepted messages and rule states, dead
letters and ingest counters, and the proactive messages it owes customers."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm_store.enums import (
    DeviceMessageKind,
    ProactiveKind,
    ProactiveStatus,
    RuleAction,
)
from crm_store.models.base import Base, UTCDateTime, _enum, utcnow

if TYPE_CHECKING:  # only for the annotations: SQLAlchemy resolves relationship targets by class name
    from crm_store.models.customers import Customer, Device, ProductModel
    from crm_store.models.support import Ticket, TicketEvent


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
