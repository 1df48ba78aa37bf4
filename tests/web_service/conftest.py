"""API tests against a real migrated database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from crm_store.db import session_scope
from crm_store.demo_data import generate
from crm_store.enums import ApplianceCategory, UserRole
from crm_store.repositories.handoffs import set_skills
from crm_store.repositories.users import create_user
from crm_store.tracker_store import TrackerStore
from tests.conftest import migrated_database
from web_service.main import create_app
from web_service.settings import get_settings

PASSWORDS = {"agent1": "agent-password-123", "super1": "super-password-123", "admin1": "admin-password-123",
             "boiler_de": "boiler-password-123"}


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def api_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of its own with the demo data and two staff users (other suites commit to theirs)."""
    with migrated_database(request.param, tmp_path_factory) as url:
        with session_scope(url) as s:
            generate(s, customers=30)
            create_user(s, username="agent1", password=PASSWORDS["agent1"], role=UserRole.AGENT)
            create_user(s, username="super1", password=PASSWORDS["super1"], role=UserRole.SUPERVISOR)
            create_user(s, username="admin1", password=PASSWORDS["admin1"], role=UserRole.ADMIN)
            # An agent routed only boiler conversations in German.
            specialist = create_user(s, username="boiler_de", password=PASSWORDS["boiler_de"], role=UserRole.AGENT)
            set_skills(s, user_id=specialist.id, categories=[ApplianceCategory.BOILER], languages=["de"])
        yield url


@pytest.fixture
def client(api_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("DATABASE_URL", api_db)
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    monkeypatch.setenv("CHAT_SESSION_SECRET", CHAT_SECRET)
    # Nothing listens here: the API must cope with Rasa being down (the e2e tests use a real Rasa).
    monkeypatch.setenv("RASA_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("RASA_TIMEOUT_SECONDS", "2")
    # Every test signs in from the same test client: the per-address throttle is tested on its own.
    monkeypatch.setenv("SIGN_IN_RATE_PER_CLIENT", "100000/minute")
    get_settings.cache_clear()
    with TestClient(create_app()) as c:
        yield c
    get_settings.cache_clear()


CHAT_SECRET = "c" * 64


@pytest.fixture
def tracker(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrackerStore]:  # type: ignore[no-untyped-def]
    """A Rasa tracker store (SQLite, Rasa's ``events`` table) that the web service is configured with."""
    url = f"sqlite:///{tmp_path}/tracker.db"
    monkeypatch.setenv("TRACKER_STORE_URL", url)
    monkeypatch.setenv("PRIVACY_POLL_SECONDS", "0")
    get_settings.cache_clear()
    store = TrackerStore(url)
    store.create_schema()
    yield store
    get_settings.cache_clear()


def chat(session_id: str, **fields: object) -> dict[str, object]:
    """A chat route's body as the page sends it: the session id with the key Rasa's channel gave it."""
    from crm_store.chat_sessions import session_key

    return {"session_id": session_id, "session_key": session_key(CHAT_SECRET, session_id), **fields}


def login(client: TestClient, username: str = "agent1") -> dict[str, str]:
    resp = client.post("/api/auth/token", json={"username": username, "password": PASSWORDS[username]})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}
