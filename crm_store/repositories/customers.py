"""Customers, their chat identities and identity verification."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from crm_store.enums import LoyaltyTier
from crm_store.models import ChannelIdentity, Customer, Device, Purchase, utcnow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CustomerProfile:
    """What the assistant needs to know about a customer to greet and serve them."""

    id: int
    full_name: str
    first_name: str
    preferred_language: str
    loyalty_tier: LoyaltyTier
    customer_since: dt.date
    purchase_count: int
    device_count: int

    @property
    def is_loyal(self) -> bool:
        """A repeat customer or one in a higher loyalty tier: worth a thank-you."""
        return self.purchase_count >= 2 or self.loyalty_tier in (LoyaltyTier.GOLD, LoyaltyTier.PLATINUM)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def get_customer(session: Session, *, customer_id: int) -> Customer | None:
    return session.get(Customer, customer_id)


def get_customer_by_email(session: Session, *, email: str) -> Customer | None:
    return session.scalar(select(Customer).where(Customer.email == normalise_email(email)))


def list_customers(session: Session, *, offset: int = 0, limit: int = 50, query: str | None = None) -> list[Customer]:
    stmt = select(Customer).order_by(Customer.id).offset(offset).limit(limit)
    if query:
        pattern = f"%{query.lower()}%"
        stmt = stmt.where(func.lower(Customer.full_name).like(pattern) | Customer.email.like(pattern))
    return list(session.scalars(stmt))


def create_customer(
    session: Session,
    *,
    full_name: str,
    email: str,
    customer_since: dt.date | None = None,
    loyalty_tier: LoyaltyTier = LoyaltyTier.STANDARD,
    preferred_language: str = "en",
    phone: str | None = None,
    city: str | None = None,
) -> Customer:
    customer = Customer(
        full_name=full_name.strip(),
        email=normalise_email(email),
        customer_since=customer_since or dt.date.today(),
        loyalty_tier=loyalty_tier,
        preferred_language=preferred_language,
        phone=phone,
        city=city,
    )
    session.add(customer)
    session.flush()
    return customer


def get_profile(session: Session, *, customer_id: int) -> CustomerProfile | None:
    """The customer's profile with purchase and device counts, or None. One statement: the action server builds
    a profile in nearly every unit of work of a verified chat."""
    purchases = select(func.count(Purchase.id)).where(Purchase.customer_id == Customer.id).scalar_subquery()
    devices = select(func.count(Device.id)).where(Device.customer_id == Customer.id).scalar_subquery()
    row = session.execute(select(Customer, purchases, devices).where(Customer.id == customer_id)).first()
    if row is None:
        return None
    customer, purchases, devices = row
    return CustomerProfile(
        id=customer.id,
        full_name=customer.full_name,
        first_name=customer.first_name,
        preferred_language=customer.preferred_language,
        loyalty_tier=customer.loyalty_tier,
        customer_since=customer.customer_since,
        purchase_count=purchases,
        device_count=devices,
    )


# How long a chat's verification lasts unless configured (VERIFICATION_TTL_MINUTES, read by the action server's
# and the device worker's settings): after it the chat is anonymous again until the customer verifies anew.
DEFAULT_VERIFICATION_TTL_MINUTES = 30


def _verified_since(ttl: dt.timedelta, now: dt.datetime | None) -> dt.datetime:
    return (now or utcnow()) - ttl


def is_linked(session: Session, *, channel: str, external_id: str, verified_within: dt.timedelta,
              now: dt.datetime | None = None) -> bool:
    """Whether a chat sender is linked to a customer by a verification younger than ``verified_within``;
    reads only (unlike :func:`find_customer_by_identity`)."""
    return session.scalar(
        select(ChannelIdentity.id).where(
            ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id,
            ChannelIdentity.verified_at >= _verified_since(verified_within, now))
    ) is not None


def find_customer_by_identity(session: Session, *, channel: str, external_id: str, verified_within: dt.timedelta,
                              now: dt.datetime | None = None, touch: bool = True) -> Customer | None:
    """The customer linked to a chat sender, if the chat was verified within ``verified_within`` (the
    server-side ``verified_at`` of the link, which only a successful verification sets); None for an
    unlinked chat and for one whose verification expired. ``touch`` records the chat as seen now."""
    identity = session.scalar(
        select(ChannelIdentity)
        .where(ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id,
               ChannelIdentity.verified_at >= _verified_since(verified_within, now))
        .options(joinedload(ChannelIdentity.customer))  # one statement, not a second for the customer
    )
    if identity is None:
        return None
    if touch:
        identity.last_seen_at = utcnow()
    return identity.customer


def link_identity(session: Session, *, channel: str, external_id: str, customer_id: int) -> ChannelIdentity:
    """Link a chat sender to a customer (re-linking moves it to the new customer)."""
    identity = session.scalar(
        select(ChannelIdentity).where(ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id)
    )
    now = utcnow()
    if identity is None:
        identity = ChannelIdentity(channel=channel, external_id=external_id, customer_id=customer_id,
                                   verified_at=now, last_seen_at=now)
        try:
            # The unique (channel, sender) key decides between two racing verifications of one chat.
            with session.begin_nested():
                session.add(identity)
                session.flush()
        except IntegrityError:
            identity = session.scalars(
                select(ChannelIdentity).where(ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id)
                .execution_options(populate_existing=True)
            ).one()
    identity.customer_id = customer_id
    identity.verified_at = now
    identity.last_seen_at = now
    session.flush()
    return identity


def verify_customer(session: Session, *, email: str, reference: str) -> Customer | None:
    """The customer whose email matches and who owns ``reference`` (an order number or device serial).

    Returns None for any mismatch, without saying which part failed, so that the caller cannot
    reveal whether an e-mail address is registered.
    """
    customer = get_customer_by_email(session, email=email)
    ref = reference.strip().upper()
    if customer is None or not ref:
        return None
    owns_order = session.scalar(
        select(Purchase.id).where(Purchase.customer_id == customer.id, func.upper(Purchase.order_number) == ref)
    )
    owns_device = session.scalar(
        select(Device.id).where(Device.customer_id == customer.id, func.upper(Device.serial) == ref)
    )
    return customer if (owns_order or owns_device) else None
