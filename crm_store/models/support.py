"""Support work: tickets and their events, the customer journey, CSAT ratings, handoffs to agents
and their messages, live conversation signals, attachments and canned replies."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm_store.enums import (
    ApplianceCategory,
    HandoffMessageKind,
    HandoffReason,
    HandoffStatus,
    JourneyStage,
    TicketEventKind,
    TicketPriority,
    TicketSource,
    TicketStatus,
)
from crm_store.models.base import Base, UTCDateTime, _enum, utcnow

if TYPE_CHECKING:  # only for the annotations: SQLAlchemy resolves relationship targets by class name
    from crm_store.models.customers import Customer, Device
    from crm_store.models.staff import User


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
        Index("ix_handoffs_timeout_notice_due", "timeout_notice_due_at",
              sqlite_where=text("timeout_notice_due_at IS NOT NULL"),
              postgresql_where=text("timeout_notice_due_at IS NOT NULL")),
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
    # The queue-timeout notice ("everyone is busy", crm_store.repositories.timeout_notices): when the sweeper
    # should (re)try asking Rasa to tell the customer (None: nothing pending), how many tries failed, and when
    # the bot told them (set once, before it speaks).
    timeout_notice_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    timeout_notice_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    timeout_told_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

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
