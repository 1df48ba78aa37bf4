"""Erasure and export on SQLite and PostgreSQL, with a real tracker store on the same backend."""

from __future__ import annotations

import base64
import threading
import uuid

import pytest
from sqlalchemy import func, select

from crm_store.db import session_scope
from crm_store.enums import HandoffReason, TicketEventKind, TicketSource
from crm_store.models import (
    Attachment, Customer, DeviceCredential, ErasureRequest, Handoff, Ticket, TicketEvent, utcnow,
)
from crm_store.repositories.console import add_attachment
from crm_store.repositories.erasure import ERASE_STEPS, STORES, request_erasure, run_erasure
from crm_store.repositories.privacy import count_holdings, export_customer
from crm_store.repositories.tickets import add_ticket_event, open_ticket
from tests.privacy.builder import announcing_event, make_person, png_photo, scan_crm, scan_tracker


def _tickets_per_category(url: str) -> dict[str, int]:
    with session_scope(url, write=False) as s:
        return dict(s.execute(select(Ticket.category, func.count()).group_by(Ticket.category)).all())


def _snapshot(url: str, tracker) -> tuple:  # type: ignore[no-untyped-def]
    with session_scope(url, write=False) as s:
        req_rows = [(r.id, r.status, r.runs, repr(sorted(r.steps.items()))) for r in s.scalars(select(ErasureRequest))]
        counts = tuple(s.scalar(select(func.count()).select_from(m)) for m in (Customer, Ticket, Handoff, DeviceCredential))
    return req_rows, counts, tracker.count_rows()


def _new(url: str, tracker, **kw):  # type: ignore[no-untyped-def]
    with session_scope(url) as s:
        return make_person(s, tracker, **kw)


def _request(url: str, customer_id: int) -> int:
    with session_scope(url) as s:
        req, _ = request_erasure(s, customer_id=customer_id, requested_by="dpo", source="command")
        return req.id


def test_erase_leaves_no_trace_keeps_counts_and_spares_others(stores):
    url, tracker = stores
    person, other = _new(url, tracker), _new(url, tracker)
    categories = _tickets_per_category(url)
    assert scan_crm(url, person.needles) and scan_tracker(tracker, person.needles)  # the scan does find them
    revoked: list[list[str]] = []
    steps = run_erasure(url, _request(url, person.customer_id), tracker=tracker,
                        broker_revoke=lambda serials: revoked.append(sorted(serials)) or "reloaded")
    assert steps is not None and all(steps[s]["done"] for s in ERASE_STEPS)
    assert scan_crm(url, person.needles) == {}
    assert scan_crm(url, person.senders) == {}  # nothing left linked to their conversations either
    assert scan_tracker(tracker, person.needles) == 0
    assert tracker.conversation_events([person.bystander_sender]) == {}  # the anonymous chat that quoted a serial
    assert _tickets_per_category(url) == categories
    assert revoked == [sorted(person.serials)]
    assert steps["device_credentials"] == {**steps["device_credentials"], "rows": 2, "broker": "reloaded"}
    assert steps["telemetry"]["rows"] == 2 * 50 + 2 and steps["chat_conversations"]["rows"] == 9
    # The other customer is untouched everywhere.
    assert set(scan_crm(url, other.needles)) >= {"customers.full_name", "purchases.order_number", "devices.serial",
                                                 "attachments.filename", "attachments.data"}
    assert scan_tracker(tracker, [other.email]) == 4
    with session_scope(url, write=False) as s:
        req = s.scalar(select(ErasureRequest).where(ErasureRequest.customer_id == person.customer_id))
        assert req.status == "done" and req.work == {} and req.requested_by == "dpo"
        handoff = s.scalar(select(Handoff).where(Handoff.conversation_id.like("erased-%")))
        assert handoff is not None and handoff.customer_id is None


def test_rerun_changes_nothing_and_a_second_request_is_the_same(stores):
    url, tracker = stores
    person = _new(url, tracker)
    rid = _request(url, person.customer_id)
    run_erasure(url, rid, tracker=tracker)
    before = _snapshot(url, tracker)
    assert run_erasure(url, rid, tracker=tracker) is None
    assert _request(url, person.customer_id) == rid
    assert _snapshot(url, tracker) == before


class Crash(Exception):
    pass


def test_a_crash_half_way_is_finished_by_rerunning(stores):
    url, tracker = stores
    person = _new(url, tracker)
    rid = _request(url, person.customer_id)

    def crash_after(step: str) -> None:
        if step == "tickets":
            raise Crash

    with pytest.raises(Crash):
        run_erasure(url, rid, tracker=tracker, after_step=crash_after)
    with session_scope(url, write=False) as s:
        req = s.get(ErasureRequest, rid)
        assert req.status == "running" and set(req.steps) == set(ERASE_STEPS[:ERASE_STEPS.index("tickets") + 1])
        assert req.work["needles"]  # kept for the passes still to come
    # The lease of the crashed runner still holds: another runner waits; this process's holder is dead
    # only when its process is, so the test expires the lease as time would.
    assert run_erasure(url, rid, tracker=tracker) is None
    with session_scope(url) as s:
        s.get(ErasureRequest, rid).lease_until = s.get(ErasureRequest, rid).created_at
    steps = run_erasure(url, rid, tracker=tracker)
    assert steps is not None and set(steps) == set(ERASE_STEPS)
    assert scan_crm(url, person.needles) == {} and scan_tracker(tracker, person.needles) == 0
    with session_scope(url, write=False) as s:
        assert s.get(ErasureRequest, rid).runs == 2


def test_concurrent_requests_and_runners_make_one_erasure(stores):
    url, tracker = stores
    person = _new(url, tracker)
    ids: list[int] = []
    results: list[object] = []
    barrier = threading.Barrier(4)

    def ask() -> None:
        barrier.wait()
        ids.append(_request(url, person.customer_id))

    def run() -> None:
        barrier.wait()
        results.append(run_erasure(url, ids[0], tracker=tracker))

    for target in (ask, run):
        threads = [threading.Thread(target=target) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(set(ids)) == 1
    assert sum(r is not None for r in results) == 1
    with session_scope(url, write=False) as s:
        req = s.get(ErasureRequest, ids[0])
        assert req.status == "done" and req.runs == 1
    assert scan_crm(url, person.needles) == {}


def test_every_store_the_erase_touches_is_in_the_export(stores):
    url, tracker = stores
    person = _new(url, tracker)
    with session_scope(url, write=False) as s:
        doc = export_customer(s, customer_id=person.customer_id, tracker=tracker)
    assert doc is not None and doc["schema"] == "crm-customer-export/1"
    exported = {k for k in STORES if doc.get(k)}
    steps = run_erasure(url, _request(url, person.customer_id), tracker=tracker)
    erased = {k for k in STORES if steps[k]["rows"] > 0}
    assert erased == exported == set(STORES)
    assert set(doc["chat_conversations"]) == set(person.senders)
    assert doc["telemetry"][0]["summary"]["telemetry"]["count"] == 50
    assert any(person.email in e.get("text", "") for e in doc["chat_conversations"][person.senders[0]])
    assert {d["serial"] for d in doc["devices"]} == set(person.serials)
    assert doc["handoffs"][0]["packet"]["transcript"] and doc["tickets"][0]["events"]


def test_the_customers_photos_are_exported_and_erased_and_no_one_elses(stores):
    url, tracker = stores
    person, other = _new(url, tracker), _new(url, tracker)
    assert "attachments" in STORES
    with session_scope(url) as s:
        # A photo sent in an anonymous chat whose handoff quotes the customer's e-mail: the erasure blanks that
        # handoff as theirs, so the photo goes too (the export, which only gives what is surely theirs, leaves it).
        quoting = Handoff(conversation_id=f"anon-photo-{person.customer_id}", reason=HandoffReason.CUSTOMER_REQUEST,
                          trigger_key="customer_request", summary=f"says they are {person.email}",
                          first_response_due_at=utcnow())
        s.add(quoting)
        s.flush()
        quoted = add_attachment(s, conversation_id=quoting.conversation_id, handoff=quoting, ticket=None,
                                filename="door.png", content_type="image/png", data=png_photo(author="someone"))
        quoted_id = quoted.id
        doc = export_customer(s, customer_id=person.customer_id, tracker=tracker)
        ticket_number = s.scalar(select(Ticket.number).join(Attachment, Attachment.ticket_id == Ticket.id)
                                 .where(Attachment.id == person.attachment_ids[0]))
    assert doc is not None and [a["id"] for a in doc["attachments"]] == person.attachment_ids
    photo = doc["attachments"][0]
    assert photo == {**photo, "filename": f"{person.name} {person.serials[0]} drum.png", "content_type": "image/png",
                     "size": len(person.photo), "ticket": ticket_number, "conversation_id": person.senders[0]}
    assert photo["handoff_id"] and photo["created_at"] and len(photo["sha256"]) == 64
    assert base64.b64decode(photo["data_base64"]) == person.photo  # the photo itself: the archive is self-contained
    assert doc["customer_summary"]["attachments"] == 1
    steps = run_erasure(url, _request(url, person.customer_id), tracker=tracker)
    assert steps is not None and steps["attachments"]["rows"] == 2
    with session_scope(url, write=False) as s:
        assert s.get(Attachment, person.attachment_ids[0]) is None
        assert s.get(Attachment, quoted_id) is None
        kept = s.get(Attachment, other.attachment_ids[0])
        assert kept is not None and kept.data == other.photo and kept.conversation_id == other.senders[0]
    assert run_erasure(url, _request(url, person.customer_id), tracker=tracker) is None  # finished: nothing to redo


def test_ticket_events_of_erased_photos_are_blanked_and_no_one_elses(stores):
    url, tracker = stores
    person, other = _new(url, tracker), _new(url, tracker)
    with session_scope(url) as s:
        # An anonymous chat's ticket with a photo, whose handoff quotes the customer's e-mail: the photo goes
        # with them, and its event is on a ticket the tickets step leaves alone (it is not theirs).
        anon, _ = open_ticket(s, customer_id=None, device_id=None, source=TicketSource.CHAT, category="general",
                              title="Door seal", dedup_key=f"chat:anon-{person.customer_id}", author="bot",
                              description="the door seal is torn")
        quoting = Handoff(conversation_id=f"anon-event-{person.customer_id}", ticket_id=anon.id,
                          reason=HandoffReason.CUSTOMER_REQUEST, trigger_key="customer_request",
                          summary=f"says they are {person.email}", first_response_due_at=utcnow())
        s.add(quoting)
        s.flush()
        photo = add_attachment(s, conversation_id=quoting.conversation_id, handoff=quoting, ticket=anon,
                               filename="seal.png", content_type="image/png", data=png_photo(author="someone"))
        add_ticket_event(s, ticket=anon, kind=TicketEventKind.CUSTOMER_CONTACT, author="customer",
                         body="Photo from the chat: seal.png (0 KB)", data={"attachment_id": photo.id})
        s.flush()
        anon_id, anon_photo = anon.id, photo.id
        events = {"theirs": announcing_event(s, person.attachment_ids[0]), "anon": announcing_event(s, anon_photo),
                  "other": announcing_event(s, other.attachment_ids[0])}
        before = {k: (s.get(TicketEvent, e).body, s.get(TicketEvent, e).data) for k, e in events.items()}
        anon_rest = [(e.id, e.body) for e in s.get(Ticket, anon_id).events if e.id != events["anon"]]
    assert before["other"] == (f"Photo from the chat: {other.name} {other.serials[0]} drum.png (0 KB)",
                               {"attachment_id": other.attachment_ids[0]})
    run_erasure(url, _request(url, person.customer_id), tracker=tracker)
    with session_scope(url, write=False) as s:
        after = {k: (s.get(TicketEvent, e).body, s.get(TicketEvent, e).data) for k, e in events.items()}
        assert s.get(Attachment, anon_photo) is None and s.get(Ticket, anon_id).description == "the door seal is torn"
        # The anonymous ticket's other events (its creation) are not the customer's: untouched.
        assert [(e.id, e.body) for e in s.get(Ticket, anon_id).events if e.id != events["anon"]] == anon_rest
    assert after == {"theirs": ("[erased]", {}), "anon": ("[erased]", {}), "other": before["other"]}

def test_the_summary_counts_the_customers_photos(stores):
    url, tracker = stores
    person, other = _new(url, tracker), _new(url, tracker)
    with session_scope(url) as s:
        handoff = s.scalar(select(Handoff).where(Handoff.customer_id == person.customer_id))
        add_attachment(s, conversation_id=person.senders[0], handoff=handoff, ticket=None, filename="second.png",
                       content_type="image/png", data=person.photo)
        held = count_holdings(s, customer_id=person.customer_id)
        assert held == {"purchases": 2, "devices": 2, "tickets": 2, "chat_identities": 2, "photos": 2}
        assert count_holdings(s, customer_id=other.customer_id)["photos"] == 1
        assert count_holdings(s, customer_id=999_999_999)["photos"] == 0


def test_a_namesakes_records_are_not_erased_with_the_customers(stores):
    """Names are not unique, and the erasure found records to delete by the customer's name as well as by their
    identifiers: erasing one customer deleted a namesake's photo, blanked their ticket event and transcript and
    deleted their chat. The name is now only scrubbed from the customer's own records. Here B's name contains
    A's whole (A "Zelda Quist<t>", B "Zelda Quist<t>x1"), in B's handoff, photo, ticket event and chat."""
    url, tracker = stores
    tag = uuid.uuid4().hex[:6]
    a, b = _new(url, tracker, tag=tag), _new(url, tracker, tag=tag + "x1")
    assert a.name in b.name
    tracker.append(b.senders[0], [{"event": "user", "text": f"this is {b.name} again", "timestamp": 1.0}])
    with session_scope(url, write=False) as s:
        b_handoff = s.scalar(select(Handoff).where(Handoff.customer_id == b.customer_id))
        b_before = (b_handoff.summary, b_handoff.packet, [m.body for m in b_handoff.messages],
                    s.get(TicketEvent, announcing_event(s, b.attachment_ids[0])).body)
    b_events = len(tracker.conversation_events([b.senders[0]])[b.senders[0]])
    run_erasure(url, _request(url, a.customer_id), tracker=tracker)
    with session_scope(url, write=False) as s:
        b_handoff = s.scalar(select(Handoff).where(Handoff.customer_id == b.customer_id))
        assert s.get(Attachment, b.attachment_ids[0]) is not None
        assert (b_handoff.summary, b_handoff.packet, [m.body for m in b_handoff.messages],
                s.get(TicketEvent, announcing_event(s, b.attachment_ids[0])).body) == b_before
        assert s.get(Attachment, a.attachment_ids[0]) is None  # A's own are gone
    assert len(tracker.conversation_events([b.senders[0]])[b.senders[0]]) == b_events
    assert scan_crm(url, [a.email]) == {}
