"""The pipeline against a real database (SQLite and PostgreSQL): one ticket per fault episode, redelivery
and concurrency, recovery, lots, dead letters, consent, and the bot's outbox."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import func, select

from crm_store.db import session_scope
from crm_store.enums import LotStatus, ProactiveKind, ProactiveStatus, TicketEventKind, TicketSource, TicketStatus
from crm_store.models import (
    DeadLetter,
    Device,
    DeviceMessage,
    ProactiveMessage,
    ProductLot,
    ProductModel,
    Purchase,
    Ticket,
    TelemetryRule,
    utcnow,
)
from crm_store.enums import RuleAction
from crm_store.repositories.lots import customers_of_lot
from device_hooks.pipeline import Pipeline, RawMessage
from tests.device_hooks.conftest import Fleet, message


def tickets_of(url: str, device_id: int) -> list[Ticket]:
    with session_scope(url) as session:
        tickets = list(session.scalars(select(Ticket).where(Ticket.device_id == device_id).order_by(Ticket.id)))
        for t in tickets:
            _ = t.events
        return tickets


def warm_episode(serial: str, start: dt.datetime, minutes: int = 16) -> list[RawMessage]:
    return [message(serial, ts=start + dt.timedelta(minutes=m), readings={"compartment_temp_c": 10.5})
            for m in range(0, minutes + 1)]


def test_a_held_threshold_opens_one_device_ticket_and_queues_the_owners_message(db_url: str, fleet: Fleet):
    device_id, serial, _ = fleet.device("FR50")
    start = utcnow() - dt.timedelta(minutes=30)
    result = Pipeline(db_url).process(warm_episode(serial, start))
    assert result.accepted == 17 and len(result.tickets_opened) == 1
    [ticket] = tickets_of(db_url, device_id)
    assert ticket.source is TicketSource.DEVICE and ticket.fault_code == "E01" and ticket.status is TicketStatus.OPEN
    assert "compartment_temp_c gt 8" in ticket.description
    with session_scope(db_url) as session:
        [outbox] = session.scalars(select(ProactiveMessage).where(ProactiveMessage.ticket_id == ticket.id))
        assert outbox.kind is ProactiveKind.DEVICE_FAULT and outbox.status is ProactiveStatus.PENDING


def test_redelivered_and_repeated_messages_never_open_a_second_ticket(db_url: str, fleet: Fleet):
    device_id, serial, _ = fleet.device("WM80")
    fault = message(serial, "fault", code="E21")
    pipeline = Pipeline(db_url)
    assert pipeline.process([fault]).tickets_opened
    again = pipeline.process([fault, fault])  # the broker redelivers the same message twice
    assert again.accepted == 0 and again.duplicates == 2
    assert Pipeline(db_url).process([fault]).duplicates == 1  # a restarted worker: still stored once
    repeat = Pipeline(db_url).process([message(serial, "fault", code="E21")])  # the device says it again
    assert repeat.accepted == 1 and not repeat.tickets_opened
    [ticket] = tickets_of(db_url, device_id)
    kinds = [e.kind for e in ticket.events]
    assert kinds.count(TicketEventKind.CREATED) == 1 and kinds.count(TicketEventKind.DEVICE_EVENT) == 1


def test_concurrent_workers_open_exactly_one_ticket(db_url: str, fleet: Fleet):
    device_id, serial, _ = fleet.device("BL30")
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(n: int) -> None:
        pipeline = Pipeline(db_url)
        try:
            barrier.wait()
            # Different messages reporting the same fault, as two devices' retries or HTTP + MQTT would.
            pipeline.process([message(serial, "fault", code="F28", seq=1000 + n)])
        except BaseException as err:  # noqa: BLE001 - collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(tickets_of(db_url, device_id)) == 1


def test_recovery_is_recorded_as_device_verified_and_resolves_a_self_help_fault(db_url: str, fleet: Fleet):
    device_id, serial, _ = fleet.device("FR50")
    start = utcnow() - dt.timedelta(minutes=60)
    pipeline = Pipeline(db_url)
    pipeline.process(warm_episode(serial, start))
    normal = [message(serial, ts=start + dt.timedelta(minutes=m), readings={"compartment_temp_c": 4.0}) for m in range(20, 32)]
    result = pipeline.process(normal)
    assert result.transitions == 1
    [ticket] = tickets_of(db_url, device_id)
    assert ticket.status is TicketStatus.RESOLVED
    recovered = [e for e in ticket.events if e.kind is TicketEventKind.DEVICE_RECOVERED]
    assert recovered and recovered[0].data["device_verified"] is True
    with session_scope(db_url) as session:
        kinds = set(session.scalars(select(ProactiveMessage.kind).where(ProactiveMessage.ticket_id == ticket.id)))
    assert kinds == {ProactiveKind.DEVICE_FAULT, ProactiveKind.DEVICE_RECOVERED}
    # A new episode after recovery is a new ticket.
    later = warm_episode(serial, start + dt.timedelta(minutes=35))
    assert len(pipeline.process(later).tickets_opened) == 1
    assert len(tickets_of(db_url, device_id)) == 2


def test_a_restarted_worker_continues_a_breach_where_it_was(db_url: str, fleet: Fleet):
    device_id, serial, _ = fleet.device("FR50")
    start = utcnow() - dt.timedelta(minutes=30)
    first, rest = warm_episode(serial, start)[:10], warm_episode(serial, start)[10:]
    assert not Pipeline(db_url).process(first).tickets_opened  # 9 minutes: not yet
    assert len(Pipeline(db_url).process(rest).tickets_opened) == 1  # a new process, same breach
    assert len(tickets_of(db_url, device_id)) == 1


def test_invalid_messages_become_dead_letters_counted_by_reason(db_url: str, fleet: Fleet):
    _, serial, _ = fleet.device("DW60")
    now = utcnow()
    batch = [
        RawMessage(f"devices/{serial}/telemetry", b"{oops", now),
        RawMessage("devices/ZZ99-00000000/telemetry", message("ZZ99-00000000", readings={"a": 1}).payload, now),
        RawMessage(f"devices/{serial}/telemetry", b'{"ts": "2099-01-01T00:00:00Z", "seq": 1, "readings": {"a": 1}}', now),
        message(serial, readings={"water_temp_c": 50.0}),
    ]
    result = Pipeline(db_url).process(batch)
    assert result.accepted == 1
    assert dict(result.rejected) == {"json": 1, "unknown_device": 1, "timestamp_future": 1}
    with session_scope(db_url) as session:
        kept = session.scalars(select(DeadLetter).where(DeadLetter.topic.contains(serial))).all()
        assert {d.reason for d in kept} == {"json", "timestamp_future"}
        assert any(d.payload == "{oops" for d in kept)


def test_two_thousand_oversize_payloads_from_one_device_keep_only_its_quota_and_count_the_rest(db_url: str, fleet: Fleet):
    """The issue's flood (2,000 payloads of 60 KB from one device token, ~15 MB/s of dead letters): with a quota
    of 100 per device and hour, 100 are kept and 1,900 are counted per device and reason, across batches and two
    racing pipelines; another device's refused message is still kept."""
    from crm_store.repositories.ingest import OVER_QUOTA, DeadLetterQuota, counter_totals, dead_letter_tallies

    _, serial, _ = fleet.device("DW60")
    _, other, _ = fleet.device("FR50")
    now = utcnow()
    payload = b'{"ts": 1, "seq": 1, "readings": {"x": "' + b"A" * 60_000 + b'"}}'
    flood = [RawMessage(f"devices/{serial}/telemetry", payload, now) for _ in range(2000)]
    pipelines = [Pipeline(db_url, dead_letter_quota=DeadLetterQuota(per_device=100)) for _ in range(2)]
    with session_scope(db_url, write=False) as session:
        over_before = counter_totals(session).get(OVER_QUOTA, 0)
    results = []
    threads = [threading.Thread(target=lambda p=p, part=flood[i::2]: results.extend(
        p.process(part[k:k + 250]) for k in range(0, len(part), 250))) for i, p in enumerate(pipelines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sum(r.rejected["too_large"] for r in results) == 2000
    assert sum(r.dead_letters_dropped for r in results) == 1900
    last = pipelines[0].process([RawMessage(f"devices/{other}/telemetry", b"{oops", now)])
    assert last.dead_letters_dropped == 0
    with session_scope(db_url) as session:
        kept = session.scalar(select(func.count(DeadLetter.id)).where(DeadLetter.topic == f"devices/{serial}/telemetry"))
        assert kept == 100
        assert session.scalar(select(func.count(DeadLetter.id)).where(DeadLetter.topic == f"devices/{other}/telemetry")) == 1
        assert dead_letter_tallies(session, device=serial) == {"too_large": {"received": 2000, "stored": 100, "dropped": 1900}}
        totals = counter_totals(session)
        assert totals[OVER_QUOTA] - over_before == 1900 and totals["rejected:too_large"] >= 2000


def test_telemetry_of_an_owner_without_consent_is_not_stored(db_url: str, fleet: Fleet):
    device_id, serial, _ = fleet.device("AC12", consent_telemetry=False)
    result = Pipeline(db_url).process([message(serial, readings={"room_temp_c": 21.0})])
    assert result.accepted == 0 and result.rejected["no_consent"] == 1
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count(DeviceMessage.id)).where(DeviceMessage.device_id == device_id)) == 0


def test_a_safety_critical_fault_is_urgent_and_bypasses_quiet_hours(db_url: str, fleet: Fleet):
    now = utcnow()
    # Quiet hours that always cover "now": from an hour ago to an hour ahead, in UTC.
    quiet = {"quiet_hours_start": (now - dt.timedelta(hours=1)).time().replace(microsecond=0),
             "quiet_hours_end": (now + dt.timedelta(hours=1)).time().replace(microsecond=0), "timezone": "UTC"}
    _, gas_serial, _ = fleet.device("BL30", **quiet)
    _, pump_serial, _ = fleet.device("WM80", **quiet)
    pipeline = Pipeline(db_url)
    pipeline.process([message(gas_serial, "fault", code="E99"), message(pump_serial, "fault", code="E21")])
    with session_scope(db_url) as session:
        rows = {m.ticket.device.serial: m for m in session.scalars(select(ProactiveMessage).join(Ticket).join(Device)
                                                                  .where(Device.serial.in_([gas_serial, pump_serial])))}
        gas, pump = rows[gas_serial], rows[pump_serial]
        assert gas.safety_critical and gas.due_at <= utcnow() and gas.ticket.priority.value == "urgent"
        assert pump.reason == "quiet_hours" and pump.due_at > now + dt.timedelta(minutes=30)


def test_no_consent_to_proactive_messages_holds_the_message_for_the_next_chat(db_url: str, fleet: Fleet):
    _, serial, _ = fleet.device("DW45", consent_proactive=False)
    Pipeline(db_url).process([message(serial, "fault", code="E22")])
    with session_scope(db_url) as session:
        [held] = session.scalars(select(ProactiveMessage).join(Ticket).join(Device).where(Device.serial == serial))
        assert held.status is ProactiveStatus.HELD and held.reason == "no_consent"


def test_a_shipment_logger_excursion_marks_its_lot_and_the_lot_lists_its_customers(db_url: str, fleet: Fleet):
    _, buyer_serial, _ = fleet.device("FR70")
    with session_scope(db_url) as session:
        fr70 = session.scalar(select(ProductModel).where(ProductModel.code == "FR70"))
        logger_model = ProductModel(code=f"CLT{utcnow().microsecond}", name="Test logger", category="cold_chain_logger")
        session.add(logger_model)
        session.flush()
        session.add(TelemetryRule(model_id=logger_model.id, fault_code="X01", metric="cargo_temp_c", operator="gt",
                                  threshold=8.0, hold_seconds=1800, recovery_seconds=1800, action=RuleAction.QUARANTINE_LOT))
        lot = ProductLot(code=f"LOT-T-{utcnow().microsecond}", model_id=fr70.id)
        session.add(lot)
        session.flush()
        buyer = session.scalar(select(Device).where(Device.serial == buyer_serial))
        session.add(Purchase(order_number=f"ORD-LOT-{lot.id}", customer_id=buyer.customer_id, model_id=fr70.id,
                             device_id=buyer.id, purchased_at=utcnow(), price_cents=1, lot_id=lot.id))
        logger_device = Device(serial=f"CL01-T{lot.id:06d}", model=logger_model, monitors_lot_id=lot.id)
        session.add(logger_device)
        lot_id, logger_serial = lot.id, logger_device.serial
    start = utcnow() - dt.timedelta(hours=2)
    readings = [message(logger_serial, ts=start + dt.timedelta(minutes=5 * i), readings={"cargo_temp_c": 12.0}) for i in range(8)]
    result = Pipeline(db_url).process(readings)
    assert result.transitions == 1 and not result.tickets_opened
    with session_scope(db_url) as session:
        lot = session.get(ProductLot, lot_id)
        assert lot.status is LotStatus.EXCURSION and lot.excursion_detail["logger"] == logger_serial
        assert [d.serial for _c, _p, d in customers_of_lot(session, lot_id=lot_id)] == [buyer_serial]
