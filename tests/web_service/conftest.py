"""API tests against a real migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from crm_store.db import session_scope
from crm_store.demo_data import generate
from crm_store.enums import UserRole
from crm_store.repositories.users import create_user
from tests.conftest import migrated_database
from web_service.main import create_app
from web_service.settings import get_settings

PASSWORDS = {"agent1": "agent-password-123", "super1": "super-password-123"}


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def api_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of its own with the demo data and two staff users (other suites commit to theirs)."""
    with migrated_database(request.param, tmp_path_factory) as url:
        with session_scope(url) as s:
            generate(s, customers=30)
            create_user(s, username="agent1", password=PASSWORDS["agent1"], role=UserRole.AGENT)
            create_user(s, username="super1", password=PASSWORDS["super1"], role=UserRole.SUPERVISOR)
        yield url


@pytest.fixture
def client(api_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("DATABASE_URL", api_db)
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    get_settings.cache_clear()
    with TestClient(create_app()) as c:
        yield c
    get_settings.cache_clear()


def login(client: TestClient, username: str = "agent1") -> dict[str, str]:
    resp = client.post("/api/auth/token", json={"username": username, "password": PASSWORDS[username]})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}
