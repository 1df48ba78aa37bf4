"""Privacy tests: a CRM database and a Rasa tracker store per backend (SQLite files, PostgreSQL databases)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crm_store.tracker_store import TrackerStore
from tests.conftest import _create_pg_database, _drop_pg_database, migrated_database, postgres_available


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TrackerStore]]:
    """(CRM URL, tracker store) on one backend; the tracker store's ``events`` table as Rasa creates it."""
    with migrated_database(request.param, tmp_path_factory) as url:
        if request.param == "sqlite":
            tracker = TrackerStore(f"sqlite:///{tmp_path_factory.mktemp('tracker')}/tracker.db")
            tracker.create_schema()
            yield url, tracker
            return
        if not postgres_available():
            pytest.skip("PostgreSQL is not reachable")
        name, tracker_url = _create_pg_database()
        try:
            tracker = TrackerStore(tracker_url)
            tracker.create_schema()
            yield url, tracker
        finally:
            tracker.engine.dispose()
            _drop_pg_database(name)
