"""Erasure and export on SQLite and PostgreSQL, with a real tracker store on the same backend."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from crm_store.db import session_scope
from crm_store.models import Customer, DeviceCredential, ErasureRequest, Handoff, Ticket
from crm_store.repositories.erasure import ERASE_STEPS, STORES, request_erasure, run_erasure
from crm_store.repositories.privacy import export_customer
from tests.privacy.builder import make_person, scan_crm, scan_tracker


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
    assert scan_tracker(tracker, person.needles) == 0
    assert tracker.conversation_events([person.bystander_sender]) == {}  # the anonymous chat that quoted a serial
    assert _tickets_per_category(url) == categories
    assert revoked == [sorted(person.serials)]
    assert steps["device_credentials"] == {**steps["device_credentials"], "rows": 2, "broker": "reloaded"}
    assert steps["telemetry"]["rows"] == 2 * 50 + 2 and steps["chat_conversations"]["rows"] == 9
    # The other customer is untouched everywhere.
    assert set(scan_crm(url, other.needles)) >= {"customers.full_name", "purchases.order_number", "devices.serial"}
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
