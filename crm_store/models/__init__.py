"""Typed SQLAlchemy 2 models of the CRM: customers, their devices, purchases, tickets and journey.

Split by subject into submodules; import the names from here (``from crm_store.models import Ticket``).
Importing this package imports every submodule, so every table is on ``Base.metadata`` (which Alembic
compares with the migrations) and every relationship's target class is registered by name.
"""

from crm_store.models.base import NAMING_CONVENTION, Base, UTCDateTime, utcnow
from crm_store.models.customers import (
    ChannelIdentity,
    Customer,
    Device,
    FaultDefinition,
    ProductLot,
    ProductModel,
    Purchase,
)
from crm_store.models.privacy import AccessAudit, ConsentEvent, ErasureRequest, JobLease
from crm_store.models.staff import AgentSkill, AuthFailure, User
from crm_store.models.support import (
    SAFETY_OPEN_WHERE,
    Attachment,
    CannedResponse,
    ConversationSignal,
    CsatRating,
    Handoff,
    HandoffMessage,
    Interaction,
    Ticket,
    TicketEvent,
)
from crm_store.models.telemetry import (
    DeadLetter,
    DeadLetterTally,
    DeviceCredential,
    DeviceMessage,
    DeviceRuleState,
    IngestCounter,
    ProactiveMessage,
    TelemetryRule,
)

__all__ = [
    "NAMING_CONVENTION",
    "SAFETY_OPEN_WHERE",
    "AccessAudit",
    "AgentSkill",
    "Attachment",
    "AuthFailure",
    "Base",
    "CannedResponse",
    "ChannelIdentity",
    "ConsentEvent",
    "ConversationSignal",
    "CsatRating",
    "Customer",
    "DeadLetter",
    "DeadLetterTally",
    "Device",
    "DeviceCredential",
    "DeviceMessage",
    "DeviceRuleState",
    "ErasureRequest",
    "FaultDefinition",
    "Handoff",
    "HandoffMessage",
    "IngestCounter",
    "Interaction",
    "JobLease",
    "ProactiveMessage",
    "ProductLot",
    "ProductModel",
    "Purchase",
    "TelemetryRule",
    "Ticket",
    "TicketEvent",
    "UTCDateTime",
    "User",
    "utcnow",
]
