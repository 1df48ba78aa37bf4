"""Which CRM rows are a customer's: the filters the erasure deletes or anonymises by and the export reads by.

One definition for both (``crm_store.repositories.erasure`` and ``crm_store.repositories.privacy``), so that a
kind of record found for one is found for the other. The filters take a :class:`Context`; the erasure fills
``needles`` (their identifiers, to find records that only quote them), the export leaves it empty and so gives
only what is surely the customer's (:func:`own_context`, also behind the bot's summary of what is held).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import String, and_, cast, false, or_, select
from sqlalchemy.orm import Session

from crm_store.models import (
    Attachment, AuthFailure, ChannelIdentity, CsatRating, Customer, DeadLetter, Device, Handoff, Interaction,
    ProactiveMessage, Ticket,
)
from crm_store.repositories.lockouts import VERIFY_IDENTITY, key_hash


class Identifier(NamedTuple):
    """One of the customer's identifiers as a failure record is keyed by it: ``scope`` of
    :mod:`crm_store.repositories.lockouts`, ``kind`` (the customer's field, e.g. ``"email"``) and its value."""

    scope: str
    kind: str
    value: str


# Which of a customer's fields each lock-out scope is keyed by. Chat verification counts failures per e-mail
# address tried (the order or serial number typed with it is checked, never stored), so the phone and the order
# and serial numbers key no record. Not here: ``verify_client`` (a keyed hash of a client address, shared
# behind a NAT and not surely the customer's: it ages out) and the staff scopes (user names, not customers).
IDENTIFYING_FIELDS = {VERIFY_IDENTITY: ("email",)}


@dataclass
class Context:
    """What the erasure's steps need, re-read from the CRM at every run (so a re-run sees what is left)."""

    customer_id: int
    device_ids: list[int] = field(default_factory=list)
    serials: list[str] = field(default_factory=list)
    # Identifiers unique to the customer (e-mail, phone, order numbers, serials): a record quoting one is theirs.
    needles: list[str] = field(default_factory=list)
    # Their name: scrubbed from the records found, never used to find records (names are not unique: a
    # namesake's handoffs, photos and conversations quote the same words).
    names: list[str] = field(default_factory=list)
    senders: list[str] = field(default_factory=list)  # chat sender ids linked to the customer
    identifiers: list[Identifier] = field(default_factory=list)  # keys of their verification-failure records


def identifiers(customer: Customer) -> list[Identifier]:
    """The customer's current identifiers that key failure records (:data:`IDENTIFYING_FIELDS`), empty ones left
    out. Hashed as the recording code hashes them (``lockouts.key_hash``: trimmed, lower-cased)."""
    return [Identifier(scope, name, value) for scope, names in IDENTIFYING_FIELDS.items() for name in names
            if (value := (getattr(customer, name) or "").strip())]


def own_context(session: Session, *, customer: Customer) -> Context:
    """The customer's scope without ``needles``: only what is surely theirs (the export and the bot's summary)."""
    devices = list(session.execute(select(Device.id, Device.serial).where(Device.customer_id == customer.id)))
    return Context(customer.id, device_ids=[d.id for d in devices], serials=[d.serial for d in devices],
                   senders=erasure_senders(session, customer_id=customer.id), identifiers=identifiers(customer))


def erasure_senders(session: Session, *, customer_id: int) -> list[str]:
    """Every chat sender id (Rasa conversation) linked to the customer: verified identities and the
    conversations of their handoffs, journey events, ratings and proactive messages."""
    cid = customer_id
    senders = set(session.scalars(select(ChannelIdentity.external_id).where(ChannelIdentity.customer_id == cid)))
    for col, owner in ((Handoff.conversation_id, Handoff.customer_id), (Interaction.conversation_id, Interaction.customer_id),
                       (CsatRating.conversation_id, CsatRating.customer_id),
                       (ProactiveMessage.conversation_id, ProactiveMessage.customer_id)):
        senders.update(s for s in session.scalars(select(col).where(owner == cid)) if s)
    return sorted(senders)


def dead_letter_filter(serials: list[str]) -> Any:
    """Dead letters attributable to these devices: sent on their topic or naming their serial."""
    return or_(*[DeadLetter.topic.like(f"devices/{s}/%") for s in serials],
               *[DeadLetter.payload.contains(s) for s in serials])


def handoff_filter(ctx: Context) -> Any:
    """The customer's handoffs, those of their conversations, and any other conversation's handoff that quotes
    them (an anonymous chat where their e-mail or a serial was typed)."""
    conds = [Handoff.customer_id == ctx.customer_id]
    if ctx.senders:
        conds.append(Handoff.conversation_id.in_(ctx.senders))
    conds += [cast(Handoff.packet, String).contains(n) for n in ctx.needles]
    conds += [Handoff.summary.contains(n) for n in ctx.needles]
    return or_(*conds)


def ticket_filter(ctx: Context) -> Any:
    """The customer's tickets and those of their devices."""
    conds = [Ticket.customer_id == ctx.customer_id]
    if ctx.device_ids:
        conds.append(Ticket.device_id.in_(ctx.device_ids))
    return or_(*conds)


def attachment_filter(ctx: Context) -> Any:
    """Photos sent in the customer's conversations or kept with their handoffs or tickets (as above)."""
    conds = [Attachment.handoff_id.in_(select(Handoff.id).where(handoff_filter(ctx))),
             Attachment.ticket_id.in_(select(Ticket.id).where(ticket_filter(ctx)))]
    if ctx.senders:
        conds.append(Attachment.conversation_id.in_(ctx.senders))
    return or_(*conds)


def auth_failure_filter(ctx: Context) -> Any:
    """Failure and lock-out records keyed by the customer's identifiers (``ctx.identifiers``): failed chat
    verifications with their e-mail address, whoever typed it. Matches nothing when there are none."""
    keys = [and_(AuthFailure.scope == i.scope, AuthFailure.key_hash == key_hash(i.scope, i.value))
            for i in ctx.identifiers]
    return or_(*keys) if keys else false()
