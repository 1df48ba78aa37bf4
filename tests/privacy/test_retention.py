"""Retention on SQLite and PostgreSQL: rows older than their kind's period go, newer ones stay; one
replica per interval runs it."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import func, select

from crm_store.db import session_scope
from crm_store.models import (
    AccessAudit, Attachment, DeadLetter, DeviceMessage, Handoff, HandoffMessage, JobLease, TicketEvent, utcnow,
)
from crm_store.repositories.console import add_attachment
from crm_store.repositories.privacy import record_access
from crm_store.retention import RetentionSettings, run_due, run_retention, take_lease
from tests.privacy.builder import announcing_event, make_person

DAY = dt.timedelta(days=1)


def test_retention_deletes_what_is_older_than_each_period_and_keeps_the_rest(stores):
    url, tracker = stores
    now = utcnow()
    with session_scope(url) as s:
        person = make_person(s, tracker, telemetry=10)
        # Age half of each kind past its period (defaults: telemetry 90 d, dead letters 30 d, trackers 180 d,
        # transcripts 365 d, photos 365 d, audit 730 d).
        old_msgs = list(s.scalars(select(DeviceMessage).where(DeviceMessage.device_id == person.device_ids[0])))
        for m in old_msgs:
            m.received_at = now - 91 * DAY
        old_dead = s.scalar(select(DeadLetter).where(DeadLetter.topic.like(f"devices/{person.serials[0]}/%")))
        old_dead.received_at = now - 31 * DAY
        handoff = s.scalar(select(Handoff).where(Handoff.customer_id == person.customer_id))
        handoff.closed_at = now - 366 * DAY
        record_access(s, actor="agent1", action="view_360", customer_id=person.customer_id).created_at = now - 731 * DAY
        record_access(s, actor="agent1", action="view_360", customer_id=person.customer_id)
        old_photo = s.get(Attachment, person.attachment_ids[0])
        old_photo.created_at = now - 366 * DAY
        recent_photo = add_attachment(s, conversation_id=person.senders[0], handoff=handoff, ticket=None,
                                      filename="later.png", content_type="image/png", data=person.photo)
        recent_photo.created_at = now - 364 * DAY
        old_ids = {m.id for m in old_msgs}
        handoff_id, old_photo_id, recent_photo_id = handoff.id, old_photo.id, recent_photo.id
    tracker.append("stale-conversation", [{"event": "user", "text": "hi", "timestamp": (now - 181 * DAY).timestamp()}])
    result = run_retention(url, settings=RetentionSettings(), tracker=tracker, now=now)
    assert result["raw_telemetry"] >= 10 and result["dead_letters"] >= 1 and result["audit_records"] >= 1
    assert result["chat_trackers"] >= 1 and result["handoff_transcripts"] >= 1 and result["photos"] >= 1
    with session_scope(url, write=False) as s:
        assert not s.scalars(select(DeviceMessage.id).where(DeviceMessage.id.in_(old_ids))).first()
        assert s.scalar(select(func.count()).select_from(DeviceMessage)
                        .where(DeviceMessage.device_id == person.device_ids[1])) == 10  # newer: kept
        assert s.scalar(select(func.count()).select_from(DeadLetter)
                        .where(DeadLetter.topic.like(f"devices/{person.serials[1]}/%"))) == 1
        assert s.get(Handoff, handoff_id).packet == {"expired": True}
        assert not s.scalars(select(HandoffMessage).where(HandoffMessage.handoff_id == handoff_id)).first()
        assert s.scalar(select(func.count()).select_from(AccessAudit).where(AccessAudit.created_at < now - 730 * DAY)) == 0
        assert s.scalar(select(func.count()).select_from(AccessAudit)) >= 1
        assert s.get(Attachment, old_photo_id) is None
        assert s.get(Attachment, recent_photo_id).data == person.photo  # newer: kept
    assert tracker.conversation_events(["stale-conversation"]) == {}
    assert set(tracker.conversation_events(person.senders)) == set(person.senders)  # active: kept
    again = run_retention(url, settings=RetentionSettings(), tracker=tracker, now=now)
    assert all(v == 0 for v in again.values()), again
    assert "photos" not in run_retention(url, settings=RetentionSettings(photos_days=0), now=now + 1000 * DAY)
    with session_scope(url, write=False) as s:
        assert s.get(Attachment, recent_photo_id) is not None  # 0: photos kept forever


def test_one_replica_runs_retention_per_interval(stores):
    url, tracker = stores
    with session_scope(url) as s:
        s.query(JobLease).delete()
    wins: list[bool] = []
    barrier = threading.Barrier(6)

    def replica() -> None:
        barrier.wait()
        wins.append(take_lease(url, holder=f"replica-{threading.get_ident()}", period=dt.timedelta(minutes=10)))

    threads = [threading.Thread(target=replica) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 5 + [True]
    assert run_due(url, tracker=tracker) is None  # the lease is taken: this interval's pass is done
    assert take_lease(url, holder="later", period=dt.timedelta(minutes=10), now=utcnow() + dt.timedelta(minutes=11))


def test_expired_photos_leave_an_expired_ticket_event_and_spare_others(stores):
    url, tracker = stores
    now = utcnow()
    with session_scope(url) as s:
        person, other = make_person(s, None, telemetry=1), make_person(s, None, telemetry=1)
        s.get(Attachment, person.attachment_ids[0]).created_at = now - 366 * DAY
        s.get(Attachment, other.attachment_ids[0]).created_at = now - 364 * DAY
        s.flush()
        expiring, kept = announcing_event(s, person.attachment_ids[0]), announcing_event(s, other.attachment_ids[0])
        kept_before = (s.get(TicketEvent, kept).body, s.get(TicketEvent, kept).data)
    assert run_retention(url, settings=RetentionSettings(), now=now)["photos"] >= 1
    with session_scope(url, write=False) as s:
        assert s.get(Attachment, person.attachment_ids[0]) is None
        # Neither the file name (it named the customer) nor a reference to a photo that is gone.
        assert (s.get(TicketEvent, expiring).body, s.get(TicketEvent, expiring).data) == ("[expired]", {})
        assert s.get(Attachment, other.attachment_ids[0]) is not None
        assert (s.get(TicketEvent, kept).body, s.get(TicketEvent, kept).data) == kept_before
        assert kept_before[1] == {"attachment_id": other.attachment_ids[0]}
