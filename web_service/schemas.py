"""Request and response bodies of the API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from crm_store.enums import (
    ApplianceCategory,
    LotStatus,
    HandoffMessageKind,
    HandoffReason,
    HandoffStatus,
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


class ChatSessionProof(BaseModel):
    """A web chat's session id with its key (``session_confirm`` gave both to the page)."""

    session_id: str = Field(min_length=8, max_length=255)
    session_key: str = Field(default="", max_length=64)


class PresenceReport(ChatSessionProof):
    pass


class MissedRequest(ChatSessionProof):
    """The bot's messages the page may have missed: those later than ``after`` (Unix seconds, server time)."""

    after: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)  # Python's JSON reader takes Infinity


class MissedButton(BaseModel):
    title: str
    payload: str


class MissedPiece(BaseModel):
    """One piece of a bot message as the socket.io channel emits it (crm_store.chat_pieces): ``ts`` its bot event's
    timestamp (Unix seconds), ``part`` its place among the event's pieces; ``agent_name`` for an agent's line."""

    ts: float
    part: int
    text: str = ""
    buttons: list[MissedButton] = []
    image: str | None = None
    attachment: Any = None
    agent_name: str | None = None


class MissedMessages(BaseModel):
    now: float  # the server's clock (Unix seconds), for the page's next ``after``
    pieces: list[MissedPiece]
    more: bool  # more bot messages after these: ask again with ``next_after`` as ``after``
    next_after: float  # the timestamp of the last message read (``after`` itself when none was)


# --- escalation and the agent console --------------------------------------------------------------

class HandoffCustomer(ORM):
    id: int
    full_name: str
    loyalty_tier: LoyaltyTier
    preferred_language: str


class HandoffPublic(BaseModel):
    id: int
    conversation_id: str
    channel: str | None
    status: HandoffStatus
    reason: HandoffReason
    reason_label: str
    priority: TicketPriority
    language: str
    category: ApplianceCategory | None
    summary: str
    customer: HandoffCustomer | None
    ticket: str | None
    assignee: str | None
    created_at: dt.datetime
    first_response_due_at: dt.datetime
    first_response_at: dt.datetime | None
    claimed_at: dt.datetime | None
    closed_at: dt.datetime | None
    bot_resumed_at: dt.datetime | None
    sla_breached: bool
    waiting_seconds: int


class HandoffMessagePublic(ORM):
    id: int
    kind: HandoffMessageKind
    author: str
    body: str
    created_at: dt.datetime
    delivered_at: dt.datetime | None


class TranscriptLine(BaseModel):
    # "from" is a Python keyword, hence the alias.
    model_config = ConfigDict(populate_by_name=True)
    from_: str = Field(alias="from")
    author: str | None = None
    text: str
    at: str | None = None


class HandoffDetail(HandoffPublic):
    packet: dict[str, Any]
    messages: list[HandoffMessagePublic]
    transcript: list[TranscriptLine]
    # False when Rasa could not be reached: the transcript is then the one saved at escalation.
    transcript_live: bool
    bot_paused: bool | None


class AgentReply(BaseModel):
    body: str = Field(min_length=1, max_length=4000)


class AgentReplyResult(BaseModel):
    message: HandoffMessagePublic
    delivered: bool
    delivery_error: str | None = None


class HandoffNote(BaseModel):
    body: str = Field(min_length=1, max_length=10_000)


class HandoffClose(BaseModel):
    note: str = Field(default="", max_length=2000)
    # Optionally move the handoff's ticket at the same time (e.g. resolved).
    ticket_status: TicketStatus | None = None


class HandoffCloseResult(BaseModel):
    handoff: HandoffPublic
    bot_resumed: bool
    resume_error: str | None = None


class SkillsPublic(BaseModel):
    categories: list[ApplianceCategory]
    languages: list[str]


class SkillsUpdate(BaseModel):
    categories: list[ApplianceCategory] = Field(default_factory=list, max_length=10)
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] = Field(default_factory=list, max_length=20)


class ConsoleUser(BaseModel):
    username: str
    full_name: str
    role: UserRole
    skills: SkillsPublic
