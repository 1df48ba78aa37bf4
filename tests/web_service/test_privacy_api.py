"""Privacy API: export, erasure (202, idempotent), consent with history, access audit; roles enforced."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from crm_store.db import session_scope
from crm_store.enums import UserRole
from crm_store.models import AccessAudit, Attachment
from crm_store.repositories.users import create_user, get_user_by_username
from tests.privacy.builder import make_person, scan_crm, scan_tracker
from tests.web_service.conftest import PASSWORDS, login

PASSWORDS.setdefault("dpo1", "dpo-password-123")


@pytest.fixture
def dpo(client, api_db):  # type: ignore[no-untyped-def]
    with session_scope(api_db) as s:
        if get_user_by_username(s, username="dpo1") is None:
            create_user(s, username="dpo1", password=PASSWORDS["dpo1"], role=UserRole.PRIVACY)
    return login(client, "dpo1")


def test_export_then_erase_through_the_api(client, api_db, tracker, dpo):
    with session_scope(api_db) as s:
        person = make_person(s, tracker)
    cid = person.customer_id
    agent = login(client, "agent1")
    assert client.get(f"/api/customers/{cid}/export", headers=agent).status_code == 403
    assert client.delete(f"/api/customers/{cid}", headers=agent).status_code == 403
    resp = client.get(f"/api/customers/{cid}/export", headers=dpo)
    assert resp.status_code == 200 and resp.headers["cache-control"] == "no-store"
    doc = resp.json()
    assert doc["customer"]["email"] == person.email and set(doc["chat_conversations"]) == set(person.senders)
    assert [a["id"] for a in doc["attachments"]] == person.attachment_ids
    with session_scope(api_db, write=False) as s:
        handoff_id = s.get(Attachment, person.attachment_ids[0]).handoff_id
    photo_url = f"/api/handoffs/{handoff_id}/attachments/{person.attachment_ids[0]}"
    supervisor = login(client, "super1")
    assert client.get(photo_url, headers=supervisor).content == person.photo
    first = client.delete(f"/api/customers/{cid}", headers=dpo)
    assert first.status_code == 202, first.text
    rid = first.json()["id"]
    status = client.get(f"/api/erasures/{rid}", headers=dpo).json()
    assert status["status"] == "done" and status["requested_by"] == "dpo1" and status["steps"]["tickets"]["rows"] == 2
    again = client.delete(f"/api/customers/{cid}", headers=dpo)
    assert again.status_code == 202 and again.json()["id"] == rid and again.json()["status"] == "done"
    assert client.get(f"/api/customers/{cid}", headers=agent).status_code == 404
    assert client.get(photo_url, headers=supervisor).status_code == 404  # the photo went with them
    assert scan_crm(api_db, person.needles) == {} and scan_tracker(tracker, person.needles) == 0
    assert client.delete("/api/customers/999999", headers=dpo).status_code == 404
    audit = client.get(f"/api/privacy/access-audit?customer_id={cid}", headers=dpo).json()
    assert [a["action"] for a in audit] == ["erase", "export"] and {a["actor"] for a in audit} == {"dpo1"}


def test_consent_changes_are_recorded_with_time_and_source(client, api_db, tracker):
    with session_scope(api_db) as s:
        person = make_person(s, None)
    cid, headers = person.customer_id, login(client, "super1")
    before = client.get(f"/api/customers/{cid}/consent", headers=headers).json()
    assert before["consent"]["telemetry"] is True and len(before["history"]) == 2
    resp = client.put(f"/api/customers/{cid}/consent", headers=headers, json={"telemetry": False, "source": "console"})
    assert resp.status_code == 200
    after = resp.json()
    assert after["consent"]["telemetry"] is False
    assert after["history"][-1] | {"at": None} == {"kind": "telemetry", "granted": False, "source": "console",
                                                   "actor": "super1", "at": None}
    # Setting what is already set records nothing.
    assert len(client.put(f"/api/customers/{cid}/consent", headers=headers, json={"telemetry": False}).json()["history"]) == 3
    assert client.put(f"/api/customers/{cid}/consent", headers=headers, json={"telemetry": "maybe"}).status_code == 422


def test_reading_a_360_view_is_audited(client, api_db):
    headers = login(client, "agent1")
    with session_scope(api_db, write=False) as s:
        before = len(list(s.scalars(select(AccessAudit).where(AccessAudit.customer_id == 2))))
    assert client.get("/api/customers/2", headers=headers).status_code == 200
    with session_scope(api_db, write=False) as s:
        rows = list(s.scalars(select(AccessAudit).where(AccessAudit.customer_id == 2)))
    assert len(rows) == before + 1 and (rows[-1].actor, rows[-1].action) == ("agent1", "view_360")
