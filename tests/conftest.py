"""Shared test fixtures: database URLs for SQLite and (when reachable) PostgreSQL."""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

ROOT = pathlib.Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def postgres_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_available() -> bool:
    return postgres_available()


def _create_pg_database() -> tuple[str, str]:
    from crm_store.db import create_missing_databases

    name = f"crm_test_{uuid.uuid4().hex[:10]}"
    create_missing_databases(PG_ADMIN_URL, [name])
    return name, PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_pg_database(name: str) -> None:
    from crm_store.db import drop_databases

    drop_databases(PG_ADMIN_URL, [name])


@contextmanager
def migrated_database(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A new, empty, migrated database of ``kind`` (sqlite or postgresql), dropped afterwards."""
    from crm_store.db import get_engine
    from crm_store.migrate import upgrade

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('crm')}/crm.db"
        upgrade(url)
        yield url
        return
    if not postgres_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 but CI requires the PostgreSQL store tests")
        pytest.skip("PostgreSQL is not reachable")
    name, url = _create_pg_database()
    try:
        upgrade(url)
        yield url
    finally:
        get_engine.cache_clear()
        _drop_pg_database(name)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty, migrated database per backend for the store tests of the whole session."""
    with migrated_database(request.param, tmp_path_factory) as url:
        yield url
