"""Customers, identities and verification on a real database."""

from __future__ import annotations

import datetime as dt

from crm_store.enums import ApplianceCategory, LoyaltyTier
from crm_store.models import utcnow
from crm_store.repositories.devices import list_devices_for_customer
from crm_store.repositories.customers import (
    find_customer_by_identity,
    get_profile,
    is_linked,
    link_identity,
    verify_customer,
)

TTL = dt.timedelta(minutes=30)


def test_verify_customer_with_order_number_or_serial(session, factory):
    anna = factory.customer(email="anna@example.com")
    device = factory.device(anna)
    factory.purchase(anna, device, order_number="ORD-2024-000777")

    assert verify_customer(session, email="ANNA@example.com ", reference="ord-2024-000777") is anna
    assert verify_customer(session, email="anna@example.com", reference=device.serial.lower()) is anna


def test_verify_customer_refuses_other_peoples_references(session, factory):
    anna = factory.customer(email="anna@example.com")
    bob = factory.customer(email="bob@example.com")
    bobs_device = factory.device(bob)
    factory.purchase(bob, bobs_device, order_number="ORD-2024-000888")

    assert verify_customer(session, email="anna@example.com", reference="ORD-2024-000888") is None
    assert verify_customer(session, email="anna@example.com", reference=bobs_device.serial) is None
    assert verify_customer(session, email="nobody@example.com", reference="ORD-2024-000888") is None
    assert verify_customer(session, email="anna@example.com", reference="") is None
    assert anna.id != bob.id


def test_identity_link_is_found_again_and_can_move(session, factory):
    anna, bob = factory.customer(), factory.customer()
    assert find_customer_by_identity(session, channel="socketio", external_id="s-1", verified_within=TTL) is None

    link_identity(session, channel="socketio", external_id="s-1", customer_id=anna.id)
    assert find_customer_by_identity(session, channel="socketio", external_id="s-1", verified_within=TTL) is anna
    # Same sender id on another channel is another person.
    assert find_customer_by_identity(session, channel="rest", external_id="s-1", verified_within=TTL) is None

    link_identity(session, channel="socketio", external_id="s-1", customer_id=bob.id)
    assert find_customer_by_identity(session, channel="socketio", external_id="s-1", verified_within=TTL) is bob


def test_a_link_expires_after_its_verification_ttl_and_a_new_verification_renews_it(session, factory):
    anna = factory.customer()
    link_identity(session, channel="socketio", external_id="s-2", customer_id=anna.id)
    verified = utcnow()
    just_before, just_after = verified + TTL - dt.timedelta(seconds=5), verified + TTL + dt.timedelta(seconds=5)

    assert find_customer_by_identity(session, channel="socketio", external_id="s-2", verified_within=TTL,
                                     now=just_before) is anna
    assert is_linked(session, channel="socketio", external_id="s-2", verified_within=TTL, now=just_before)
    # Being seen (every action, every presence report) does not extend it: only a verification does.
    assert find_customer_by_identity(session, channel="socketio", external_id="s-2", verified_within=TTL,
                                     now=just_after) is None
    assert not is_linked(session, channel="socketio", external_id="s-2", verified_within=TTL, now=just_after)

    link_identity(session, channel="socketio", external_id="s-2", customer_id=anna.id)
    assert find_customer_by_identity(session, channel="socketio", external_id="s-2", verified_within=TTL,
                                     now=utcnow() + TTL - dt.timedelta(seconds=5)) is anna


def test_profile_counts_purchases_and_flags_loyal_customers(session, factory):
    newcomer = factory.customer()
    factory.purchase(newcomer, factory.device(newcomer))
    repeat = factory.customer()
    for _ in range(2):
        factory.purchase(repeat, factory.device(repeat))
    gold = factory.customer(loyalty_tier=LoyaltyTier.GOLD)

    assert get_profile(session, customer_id=newcomer.id).is_loyal is False
    profile = get_profile(session, customer_id=repeat.id)
    assert (profile.purchase_count, profile.device_count, profile.is_loyal) == (2, 2, True)
    assert get_profile(session, customer_id=gold.id).is_loyal is True
    assert get_profile(session, customer_id=10**9) is None


def test_a_linked_chats_customer_and_profile_take_two_statements(session, factory, sql_statements):
    """The action server resolves a verified chat's customer in nearly every unit of work: the link with its
    customer is one statement, the profile with both counts another (they were four)."""
    anna = factory.customer()
    for _ in range(2):
        factory.purchase(anna, factory.device(anna))
    factory.device(anna)  # registered, not bought here
    link_identity(session, channel="socketio", external_id="s-count", customer_id=anna.id)
    session.flush()
    session.expunge_all()  # as a new unit of work finds it: nothing loaded yet
    with sql_statements() as sent:
        customer = find_customer_by_identity(session, channel="socketio", external_id="s-count", verified_within=TTL,
                                             touch=False)
        profile = get_profile(session, customer_id=customer.id)
    assert (customer.id, customer.full_name) == (anna.id, anna.full_name)
    assert (profile.id, profile.first_name, profile.purchase_count, profile.device_count) == (
        anna.id, anna.full_name.split()[0], 2, 3)
    assert len(sent) == 2, sent


def test_a_customers_devices_with_their_models_take_one_statement(session, factory, sql_statements):
    anna = factory.customer()
    washer, fridge = factory.device(anna, "WM80"), factory.device(anna, "FR50")
    factory.device(factory.customer())  # someone else's
    session.expunge_all()
    with sql_statements() as sent:
        devices = list_devices_for_customer(session, customer_id=anna.id)
        names = [(d.serial, d.model.code, d.model.category) for d in devices]
        fridges = list_devices_for_customer(session, customer_id=anna.id, category=ApplianceCategory.FRIDGE)
    assert [serial for serial, _code, _category in names] == [washer.serial, fridge.serial]
    assert [(code, category) for _serial, code, category in names] == [
        ("WM80", ApplianceCategory.WASHING_MACHINE), ("FR50", ApplianceCategory.FRIDGE)]
    assert [d.serial for d in fridges] == [fridge.serial]
    assert len(sent) == 2, sent  # one per call
