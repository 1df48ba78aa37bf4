"""Personal-data governance: consent changes, erasure requests, the staff access audit, and the
leases of the periodic jobs (retention, erasure) that one replica runs at a time."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from crm_store.models.base import Base, UTCDateTime, utcnow


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
