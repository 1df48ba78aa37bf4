"""Each crm_store test runs inside a transaction that is rolled back afterwards."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from crm_store.db import make_engine
from crm_store.enums import LoyaltyTier
from crm_store.models import Customer, Device, ProductModel, Purchase, utcnow
from crm_store.demo_data import seed_catalogue


@pytest.fixture(scope="session")
def engine(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine) -> Iterator[Session]:  # type: ignore[no-untyped-def]
    connection = engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


_seq = itertools.count(1)


class Factory:
    """Builds valid rows with unique keys; tests override what they care about."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._models: dict[str, ProductModel] | None = None

    def models(self) -> dict[str, ProductModel]:
        if self._models is None:
            existing = {m.code: m for m in self.session.scalars(select(ProductModel))}
            self._models = existing or seed_catalogue(self.session)
        return self._models

    def customer(self, **kw: object) -> Customer:
        n = next(_seq)
        values: dict[str, object] = {
            "full_name": f"Test Person{n}", "email": f"person{n}@example.com",
            "customer_since": dt.date(2022, 1, 1), "loyalty_tier": LoyaltyTier.STANDARD,
        }
        values.update(kw)
        customer = Customer(**values)
        self.session.add(customer)
        self.session.flush()
        return customer

    def device(self, owner: Customer, model_code: str = "WM80", **kw: object) -> Device:
        n = next(_seq)
        model = self.models()[model_code]
        device = Device(serial=kw.pop("serial", f"{model_code}-23{n:06d}"), model=model, owner=owner, **kw)
        self.session.add(device)
        self.session.flush()
        return device

    def purchase(self, customer: Customer, device: Device, order_number: str | None = None) -> Purchase:
        n = next(_seq)
        purchase = Purchase(order_number=order_number or f"ORD-2024-{n:06d}", customer=customer,
                            model_id=device.model_id, device_id=device.id, purchased_at=utcnow(), price_cents=1000)
        self.session.add(purchase)
        self.session.flush()
        return purchase


@pytest.fixture
def factory(session: Session) -> Factory:
    return Factory(session)


@pytest.fixture
def sql_statements(engine):  # type: ignore[no-untyped-def]
    """``with sql_statements() as sent:`` lists the SQL statements sent to the database inside the block."""

    @contextmanager
    def recording() -> Iterator[list[str]]:
        sent: list[str] = []

        def record(_conn, _cursor, statement, _params, _context, _many):  # type: ignore[no-untyped-def]
            sent.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            yield sent
        finally:
            event.remove(engine, "before_cursor_execute", record)

    return recording


