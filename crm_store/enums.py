"""Shared vocabulary of the CRM: the one place that names statuses, priorities, tiers and categories."""

from __future__ import annotations

import enum


class StrEnum(str, enum.Enum):
    """A string enum whose value is what is stored and sent over the wire."""

    def __str__(self) -> str:
        return self.value


class LoyaltyTier(StrEnum):
    STANDARD = "standard"
    SILVER = "silver"
    GOLD = "gold"
    PLATINUM = "platinum"


class ApplianceCategory(StrEnum):
    FRIDGE = "fridge"
    WASHING_MACHINE = "washing_machine"
    DISHWASHER = "dishwasher"
    BOILER = "boiler"
    AIR_CONDITIONER = "air_conditioner"
    # Not sold to customers: a data logger travelling with a refrigerated shipment of a product lot.
    COLD_CHAIN_LOGGER = "cold_chain_logger"

    @property
    def label(self) -> str:
        """Human wording used in replies ("washing machine")."""
        return self.value.replace("_", " ")


class TicketStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    WAITING_CUSTOMER = "waiting_customer"
    RESOLVED = "resolved"
    CLOSED = "closed"

    @property
    def is_open(self) -> bool:
        return self in OPEN_TICKET_STATUSES

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


OPEN_TICKET_STATUSES = frozenset(
    {TicketStatus.OPEN, TicketStatus.IN_PROGRESS, TicketStatus.WAITING_CUSTOMER}
)


class TicketPriority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class TicketSource(StrEnum):
    CHAT = "chat"
    DEVICE = "device"
    AGENT = "agent"
    API = "api"


class TicketEventKind(StrEnum):
    CREATED = "created"
    STATUS_CHANGED = "status_changed"
    PRIORITY_CHANGED = "priority_changed"
    NOTE = "note"
    CUSTOMER_CONTACT = "customer_contact"
    DEVICE_EVENT = "device_event"
    DEVICE_RECOVERED = "device_recovered"
    CUSTOMER_NOTIFIED = "customer_notified"
    TECHNICIAN_REQUESTED = "technician_requested"


class FaultSeverity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Channel(StrEnum):
    """Chat channels, named as Rasa names its input channels."""

    SOCKETIO = "socketio"
    REST = "rest"
    FACEBOOK = "facebook"


class JourneyStage(StrEnum):
    """Customer-journey stages recorded as interactions."""

    DISCOVER = "discover"
    REGISTER = "register"
    START = "start"
    MOTIVATION = "motivation"
    COMPLETE = "complete"
    FEEDBACK = "feedback"


class UserRole(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    PRIVACY = "privacy"  # data-protection officer: exports, erasures, consent and the access audit


class DeviceMessageKind(StrEnum):
    """What a device publishes: the last segment of its MQTT topic."""

    TELEMETRY = "telemetry"
    FAULT = "fault"
    STATUS = "status"


class RuleAction(StrEnum):
    """What a telemetry rule does when its condition has held long enough."""

    TICKET = "ticket"  # open (or add to) a fault ticket for the device's owner
    QUARANTINE_LOT = "quarantine_lot"  # a shipment logger: mark the lot it travels with


class LotStatus(StrEnum):
    OK = "ok"
    EXCURSION = "excursion"  # the cold chain broke; its customers are to be contacted
    RELEASED = "released"  # inspected after an excursion and found fine


class ProactiveKind(StrEnum):
    DEVICE_FAULT = "device_fault"
    DEVICE_RECOVERED = "device_recovered"
    TICKET_UPDATE = "ticket_update"  # staff changed the ticket's status (one message per change)


class ProactiveStatus(StrEnum):
    PENDING = "pending"  # to be pushed at due_at
    HELD = "held"  # no consent to push or no reachable channel: shown when the customer next chats
    SENT = "sent"
    FAILED = "failed"


class HandoffReason(StrEnum):
    """Why the bot handed a conversation to a person (each one is a configurable trigger)."""

    CUSTOMER_REQUEST = "customer_request"
    REPEATED_FALLBACK = "repeated_fallback"
    FRUSTRATION = "frustration"
    SAFETY_FAULT = "safety_fault"
    VIP_CRITICAL = "vip_critical"
    REPEAT_CONTACT = "repeat_contact"

    @property
    def label(self) -> str:
        return HANDOFF_REASON_LABELS[self]


HANDOFF_REASON_LABELS = {
    HandoffReason.CUSTOMER_REQUEST: "customer asked for a person",
    HandoffReason.REPEATED_FALLBACK: "the bot did not understand twice",
    HandoffReason.FRUSTRATION: "customer is frustrated",
    HandoffReason.SAFETY_FAULT: "safety-critical fault on a device",
    HandoffReason.VIP_CRITICAL: "high-tier customer with a critical ticket",
    HandoffReason.REPEAT_CONTACT: "repeated contact about the same ticket",
}


class HandoffStatus(StrEnum):
    """queued → assigned → resolved | handed_back; callback when nobody is staffed."""

    QUEUED = "queued"
    ASSIGNED = "assigned"
    CALLBACK = "callback"
    RESOLVED = "resolved"
    HANDED_BACK = "handed_back"

    @property
    def is_active(self) -> bool:
        return self in (HandoffStatus.QUEUED, HandoffStatus.ASSIGNED)


class HandoffMessageKind(StrEnum):
    AGENT = "agent"  # a reply sent to the customer
    NOTE = "note"  # private, never shown to the customer
    SYSTEM = "system"  # claimed, resolved, handed back


PRIORITY_RANK = {TicketPriority.LOW: 0, TicketPriority.NORMAL: 1, TicketPriority.HIGH: 2, TicketPriority.URGENT: 3}
