"""The device side of the API: HTTP ingestion with per-device tokens, staff views of telemetry, counters,
dead letters and lots, and the web chat's presence report."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select

from crm_store.db import session_scope
from crm_store.models import ChannelIdentity, Device, DeviceMessage, ProductLot, ProactiveMessage, utcnow
from crm_store.enums import DeviceMessageKind, LotStatus, ProactiveKind, ProactiveStatus, TicketSource
from crm_store.repositories.ingest import counter_totals
from crm_store.repositories.tickets import open_ticket
from device_hooks.broker import issue_credential
from tests.web_service.conftest import chat, login
from web_service import errors
from web_service.settings import get_settings


@pytest.fixture
def device_token(api_db: str) -> tuple[str, str]:
    with session_scope(api_db) as session:
        device = session.scalar(select(Device).where(Device.serial == "WM80-23000102"))
        return device.serial, issue_credential(session, device)


def body(**fields: object) -> str:
    return json.dumps({"ts": utcnow().isoformat(), "seq": 1, **fields})


def test_ingestion_needs_the_devices_own_token(client, device_token):
    serial, token = device_token
    other = client.post("/api/ingest/devices/FR50-21000101/fault", content=body(code="E01"),
                        headers={"Authorization": f"Bearer {token}"})  # the right token for another device
    assert other.status_code == 401 and other.json()["detail"] == errors.DEVICE_TOKEN_INVALID
    staff = client.post(f"/api/ingest/devices/{serial}/fault", content=body(code="E21"), headers=login(client))
    assert staff.status_code == 401  # a person's login is not a device credential
    assert client.post(f"/api/ingest/devices/{serial}/nonsense", content=body(),
                       headers={"Authorization": f"Bearer {token}"}).status_code == 422


@pytest.mark.parametrize(("content", "status", "reason"), [
    ("{broken", 422, "json"),
    (json.dumps({"ts": "2099-01-01T00:00:00Z", "seq": 1, "code": "E21"}), 422, "timestamp_future"),
    (json.dumps({"ts": utcnow().isoformat(), "seq": 1, "code": 21}), 422, "schema"),
    ("{" + " " * 20000 + "}", 413, "too_large"),
])
def test_invalid_http_messages_are_refused_and_kept_as_dead_letters(client, device_token, content, status, reason):
    serial, token = device_token
    resp = client.post(f"/api/ingest/devices/{serial}/fault", content=content, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == status and resp.json()["detail"]["reason"] == reason
    headers = login(client)
    letters = client.get(f"/api/ingest/dead-letters?reason={reason}", headers=headers).json()
    assert letters[0]["source"] == "http" and letters[0]["topic"] == f"devices/{serial}/fault"
    assert letters[0]["payload_size"] == len(content.encode())
    assert client.get("/api/ingest/stats", headers=headers).json()[f"rejected:{reason}"] >= 1


def test_a_flood_of_oversize_messages_from_one_device_keeps_only_its_quota_and_counts_the_rest(client, api_db):
    """300 payloads of 60 KB from one device over HTTP (2,000 over MQTT: tests/device_hooks/test_pipeline.py):
    each is refused with 413, DEAD_LETTERS_PER_DEVICE (100 per hour) are kept, the rest counted per device and
    reason; another device still gets its own quota."""
    from crm_store.models import DeadLetter
    from crm_store.repositories.ingest import OVER_QUOTA, dead_letter_tallies

    with session_scope(api_db) as session:
        device = session.scalar(select(Device).where(Device.serial == "DW60-24000103"))
        token = issue_credential(session, device)
    topic = "devices/DW60-24000103/telemetry"
    with session_scope(api_db, write=False) as session:
        kept_before = session.scalar(select(func.count(DeadLetter.id)).where(DeadLetter.topic == topic))
        over_before = counter_totals(session).get(OVER_QUOTA, 0)
    payload = b'{"ts": 1, "seq": 1, "readings": {"x": "' + b"A" * 60_000 + b'"}}'
    headers = {"Authorization": f"Bearer {token}"}
    statuses = {client.post("/api/ingest/devices/DW60-24000103/telemetry", content=payload, headers=headers).status_code
                for _ in range(300)}
    assert statuses == {413}
    with session_scope(api_db, write=False) as session:
        kept = session.scalar(select(func.count(DeadLetter.id)).where(DeadLetter.topic == topic)) - kept_before
        tallies = dead_letter_tallies(session, device="DW60-24000103")["too_large"]
        over = counter_totals(session)[OVER_QUOTA] - over_before
    assert kept == 100 and over == 200
    assert tallies == {"received": 300, "stored": 100, "dropped": 200}
    headers = login(client)
    stats = client.get("/api/ingest/stats", headers=headers).json()
    assert stats["rejected:too_large"] >= 300 and stats[OVER_QUOTA] >= 200
    # One device's flood uses up only its own quota.
    serial, other = "WM80-23000102", None
    with session_scope(api_db) as session:
        other = issue_credential(session, session.scalar(select(Device).where(Device.serial == serial)))
    resp = client.post(f"/api/ingest/devices/{serial}/fault", content="{broken", headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 422
    assert client.get("/api/ingest/dead-letters?reason=json", headers=headers).json()[0]["topic"] == f"devices/{serial}/fault"


def test_a_valid_message_without_a_reachable_broker_is_refused_with_503(client, device_token, monkeypatch):
    serial, token = device_token
    monkeypatch.setenv("MQTT_PORT", "9")  # nothing listens there
    get_settings.cache_clear()
    resp = client.post(f"/api/ingest/devices/{serial}/fault", content=body(code="E21"),
                       headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 503 and resp.json()["detail"] == errors.BROKER_UNAVAILABLE


def test_staff_see_a_devices_telemetry_and_health(client, api_db):
    with session_scope(api_db) as session:
        device = session.scalar(select(Device).where(Device.serial == "FR50-21000101"))
        for minutes, temp in ((30, 4.0), (20, 4.5), (10, 6.0)):
            session.add(DeviceMessage(device_id=device.id, kind=DeviceMessageKind.TELEMETRY, seq=minutes,
                                      ts=utcnow() - dt.timedelta(minutes=minutes), body={"readings": {"compartment_temp_c": temp}}))
    headers = login(client)
    series = client.get("/api/devices/FR50-21000101/telemetry?hours=1", headers=headers).json()
    assert [p["readings"]["compartment_temp_c"] for p in series][-3:] == [4.0, 4.5, 6.0]
    health = client.get("/api/devices/FR50-21000101/health", headers=headers).json()
    assert health["readings"] == {"compartment_temp_c": 6.0} and health["serial"] == "FR50-21000101"
    assert client.get("/api/devices/NOPE-1/health", headers=headers).status_code == 404


def test_the_customers_of_a_lot_with_an_excursion_can_be_listed(client, api_db):
    with session_scope(api_db) as session:
        lot = session.scalars(select(ProductLot).order_by(ProductLot.id)).first()
        lot.status = LotStatus.EXCURSION
        code = lot.code
    headers = login(client)
    assert code in [lot["code"] for lot in client.get("/api/lots?status=excursion", headers=headers).json()]
    customers = client.get(f"/api/lots/{code}/customers", headers=headers).json()
    assert customers and all(c["order_number"].startswith("ORD-") for c in customers)
    assert client.get("/api/lots/LOT-NONE/customers", headers=headers).status_code == 404


def test_presence_refreshes_only_a_linked_chat_and_releases_held_messages(client, api_db):
    with session_scope(api_db) as session:
        session.add(ChannelIdentity(channel="socketio", external_id="presence-test-session", customer_id=1,
                                    last_seen_at=utcnow() - dt.timedelta(hours=2)))
        ticket, _ = open_ticket(session, customer_id=1, device_id=None, source=TicketSource.DEVICE, category="E01",
                                title="t", dedup_key=f"presence:{utcnow().timestamp()}", author="test")
        session.add(ProactiveMessage(customer_id=1, ticket_id=ticket.id, kind=ProactiveKind.DEVICE_FAULT,
                                     status=ProactiveStatus.HELD, reason="unreachable"))
    assert client.post("/chat/presence", json={"session_id": "presence-test-session"}).status_code == 403  # no key
    assert client.post("/chat/presence", json=chat("presence-test-session")).status_code == 204
    assert client.post("/chat/presence", json=chat("nobody-knows-this-one")).status_code == 204
    assert client.post("/chat/presence", json={"session_id": "x"}).status_code == 422
    with session_scope(api_db) as session:
        identity = session.scalar(select(ChannelIdentity).where(ChannelIdentity.external_id == "presence-test-session"))
        assert utcnow() - identity.last_seen_at < dt.timedelta(minutes=1)
        message = session.scalar(select(ProactiveMessage).where(ProactiveMessage.ticket_id == ticket.id))
        assert message.status is ProactiveStatus.PENDING


def test_an_anonymous_chats_presence_report_takes_no_write_lock(client, api_db):
    """Most open chats are not linked to a customer: their reports every 20 s must not queue on SQLite's lock."""
    if not api_db.startswith("sqlite"):
        pytest.skip("SQLite's single write lock")
    import time

    from tests.live import sqlite_write_lock

    with sqlite_write_lock(api_db.removeprefix("sqlite:///")):
        started = time.perf_counter()
        assert client.post("/chat/presence", json=chat("anonymous-visitor-1")).status_code == 204
        assert time.perf_counter() - started < 3  # busy_timeout is 10 s
