"""crm_store.db's database helpers on a real PostgreSQL server: the production launcher creates its databases
with create_missing_databases, and benchmarks and tests drop their throw-away ones with drop_databases."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text

from crm_store.db import create_missing_databases, drop_databases
from tests.conftest import PG_ADMIN_URL, postgres_available

pytestmark = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL on 127.0.0.1:5432 is required")


def _existing(names: list[str]) -> set[str]:
    admin = create_engine(PG_ADMIN_URL)
    try:
        with admin.connect() as conn:
            rows = conn.execute(text("SELECT datname FROM pg_database WHERE datname = ANY(:n)"), {"n": names})
            return {row[0] for row in rows}
    finally:
        admin.dispose()


def test_databases_are_created_once_and_dropped_even_while_in_use():
    # Names PostgreSQL only takes quoted (a hyphen, capitals, a double quote), and a colon SQLAlchemy's text() would
    # otherwise read as a bound parameter.
    names = [f"crm_test_{uuid.uuid4().hex[:10]}-Prod", f'crm_test_{uuid.uuid4().hex[:10]}"x-:y']
    server = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        create_missing_databases(f"{server}/{names[0]}", names)
        create_missing_databases(f"{server}/{names[0]}", names)  # both exist now: nothing to do, no error
        assert _existing(names) == set(names)
        holder = create_engine(f"{server}/{names[0]}")
        conn = holder.connect()  # an open session does not keep its database from being dropped
        conn.execute(text("SELECT 1"))
        drop_databases(PG_ADMIN_URL, names)
        conn.invalidate()  # the server closed it
        holder.dispose()
        assert _existing(names) == set()
        drop_databases(PG_ADMIN_URL, names)  # already gone: no error
    finally:
        drop_databases(PG_ADMIN_URL, names)


@pytest.mark.parametrize("name", ["", "crm_test_" + "x" * 55])
def test_a_name_postgresql_would_cut_short_or_refuse_is_refused_before_it_reaches_the_server(name: str):
    server = PG_ADMIN_URL.rsplit("/", 1)[0]
    with pytest.raises(ValueError, match="database name"):
        create_missing_databases(f"{server}/postgres", [name])
    with pytest.raises(ValueError, match="database name"):
        drop_databases(PG_ADMIN_URL, [name])
    assert _existing([name[:63]]) == set()
