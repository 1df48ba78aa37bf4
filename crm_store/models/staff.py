"""Console and API users, their skills, and the failed sign-in counters."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from crm_store.enums import (
    UserRole,
)
from crm_store.models.base import Base, UTCDateTime, _enum, utcnow


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
