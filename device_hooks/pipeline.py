"""From raw device messages to stored readings, rule transitions, tickets and the bot's outbox, in
one database transaction per batch.

The caller acknowledges a batch to the broker only after :meth:`Pipeline.process` returns, so a
crash loses nothing (the broker redelivers) and the unique key on device messages makes the
redelivery a no-op (nothing is counted, evaluated or ticketed twice).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from crm_store.db import get_engine, session_factory
from crm_store.enums import (
    DeviceMessageKind,
    FaultSeverity,
    ProactiveKind,
    RuleAction,
    TicketEventKind,
    TicketPriority,
    TicketSource,
    TicketStatus,
)
from crm_store.models import utcnow
from crm_store.repositories.catalogue import get_fault, list_enabled_rules
from crm_store.repositories.device_batches import (
    DeviceInfo,
    MessageRow,
    devices_by_serial,
    insert_device_messages,
    limit_statement_time,
    lock_rule_states,
    save_rule_states,
    set_last_seen,
)
from crm_store.repositories.devices import get_model_name
from crm_store.repositories.ingest import (
    DeadLetterQuota,
    increment_counters,
    insert_dead_letters,
    ration_dead_letters,
    topic_device,
)
from crm_store.repositories.lots import record_back_in_range, record_excursion
from crm_store.repositories.proactive import queue_notification
from crm_store.repositories.tickets import add_ticket_event, change_ticket_status, find_open_ticket, open_ticket
from device_hooks.rules import Raised, Rule, RuleState, Transition, device_fault, evaluate
from device_hooks.validation import MAX_PAYLOAD_BYTES, DeviceMessageIn, Rejected, validate

logger = logging.getLogger(__name__)

# last_seen_at is written at most this often per device: it is for "online?", not an audit trail.
LAST_SEEN_RESOLUTION = dt.timedelta(seconds=30)
# Longest a batch's statement (or its wait for another worker's lock on a device) may take on PostgreSQL.
STATEMENT_TIMEOUT_MS = 30_000


@dataclass(slots=True)
class RawMessage:
    topic: str
    payload: bytes
    received_at: dt.datetime
    source: str = "mqtt"


@dataclass
class BatchResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    tickets_opened: list[str] = field(default_factory=list)
    notifications: int = 0
    transitions: int = 0
    dead_letters_dropped: int = 0  # refused and counted, but not kept: the device's dead-letter quota was used up


def dedup_key(code: str) -> str:
    # The same key the chat uses, so a fault the device reports joins a ticket the customer opened.
    return f"fault:{code}"


def _priority(severity: FaultSeverity, safety_critical: bool) -> TicketPriority:
    if safety_critical:
        return TicketPriority.URGENT
    return {FaultSeverity.CRITICAL: TicketPriority.HIGH, FaultSeverity.WARNING: TicketPriority.NORMAL}.get(
        severity, TicketPriority.LOW
    )


class Pipeline:
    """Validates, stores and evaluates device messages. Not thread-safe: one per worker thread.

    Keeps nothing in memory that the database could contradict: device ownership and consent are read
    per batch, rule states are read per batch under a row lock on the batch's devices (so two workers
    sharing the stream evaluate one device one batch at a time), and a rolled-back batch leaves no trace
    here. Only the rule definitions are cached, for ``RULES_TTL`` seconds. Every statement is a
    ``crm_store.repositories`` function (``device_batches`` for the bulk ones) run in the batch's one
    transaction, which this class opens and commits.
    """

    RULES_TTL = 5.0

    def __init__(self, database_url: str, *, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
                 dead_letter_quota: DeadLetterQuota = DeadLetterQuota()) -> None:
        self.statement_timeout_ms = int(statement_timeout_ms)
        self.dead_letter_quota = dead_letter_quota
        self.engine = get_engine(database_url)
        self.sessions = session_factory(database_url)
        self.rules: dict[int, list[Rule]] = {}
        self._rules_at = -1e9
        self._last_seen: dict[int, dt.datetime] = {}
        self.totals: Counter[str] = Counter()

    def _load_rules(self, session: Session) -> None:
        if time.monotonic() - self._rules_at < self.RULES_TTL:
            return
        rules: dict[int, list[Rule]] = {}
        for r in list_enabled_rules(session):
            rules.setdefault(r.model_id, []).append(
                Rule(r.id, r.fault_code, r.metric, r.operator, r.threshold, r.hold_seconds, r.recovery_seconds,
                     r.action.value)
            )
        self.rules, self._rules_at = rules, time.monotonic()

    def process(self, batch: list[RawMessage], *, now: dt.datetime | None = None) -> BatchResult:
        """Handles a batch in one transaction; returns what happened. Raises only on database failure
        (then nothing of the batch is stored and the caller retries it, unacknowledged)."""
        now = now or utcnow()
        result = BatchResult()
        parsed: list[tuple[DeviceMessageIn, RawMessage]] = []
        dead: list[dict[str, object]] = []
        for raw in batch:
            try:
                parsed.append((validate(raw.topic, raw.payload, now=now), raw))
            except Rejected as rej:
                result.rejected[rej.reason] += 1
                dead.append(self._dead_letter(raw, rej))

        with self.sessions() as session, session.begin():
            # No wait on the database is unbounded (a lock held by a stuck session, a server that stopped
            # answering): the batch fails and the worker retries it. SQLite has its busy_timeout.
            limit_statement_time(session, timeout_ms=self.statement_timeout_ms)
            self._load_rules(session)
            # Owner and consent as they are now, so a revoked consent or a transferred device counts from
            # the next batch on.
            devices = devices_by_serial(session, {msg.serial for msg, _raw in parsed})
            valid: list[tuple[DeviceInfo, DeviceMessageIn, RawMessage]] = []
            seen: set[tuple[int, dt.datetime, int]] = set()
            for msg, raw in parsed:
                info = devices.get(msg.serial)
                if info is None:
                    rej = Rejected("unknown_device", f"no device with serial {msg.serial}")
                    result.rejected[rej.reason] += 1
                    dead.append(self._dead_letter(raw, rej))
                    continue
                key = (info.id, msg.ts, msg.seq)
                if key in seen:
                    result.duplicates += 1
                    continue
                seen.add(key)
                if not info.telemetry_consent and msg.kind is DeviceMessageKind.TELEMETRY:
                    result.rejected["no_consent"] += 1  # counted, deliberately not stored: the owner said no
                    continue
                valid.append((info, msg, raw))
            new = self._store(session, valid)
            result.accepted = len(new)
            result.duplicates += len(valid) - len(new)
            states = self._lock_states(session, {info.id for info, _m, _r in new})
            transitions: list[tuple[DeviceInfo, Transition, RawMessage]] = []
            for info, msg, raw in sorted(new, key=lambda v: (v[0].id, v[1].ts, v[1].seq)):
                for transition in self._evaluate(states, info, msg):
                    transitions.append((info, transition, raw))
            self._save_states(session, states)
            for info, transition, raw in transitions:
                self._handle(session, info, transition, raw, result)
            touched = self._touch_devices(session, new)
            if dead:
                # A device sending garbage fills the table no faster than its quota; the rest is only counted.
                keep = ration_dead_letters(session, [(topic_device(str(d["topic"])), str(d["reason"])) for d in dead],
                                           quota=self.dead_letter_quota, now=now)
                result.dead_letters_dropped = keep.count(False)
                dead = [letter for letter, kept in zip(dead, keep) if kept]
            insert_dead_letters(session, dead)
            counts = self._count(session, result)
        # Committed: only now may memory reflect the batch.
        self._last_seen.update(touched)
        self.totals.update(counts)
        for reason, n in result.rejected.items():
            logger.warning("rejected %d device message(s): %s", n, reason)
        if result.dead_letters_dropped:
            logger.warning("%d refused device message(s) counted but not kept: their device's dead-letter quota is used up",
                           result.dead_letters_dropped)
        return result

    # -- steps -------------------------------------------------------------------------------------

    @staticmethod
    def _dead_letter(raw: RawMessage, rej: Rejected) -> dict[str, object]:
        return {
            "received_at": raw.received_at, "source": raw.source, "topic": raw.topic[:300], "reason": rej.reason,
            "detail": rej.detail[:500], "payload": raw.payload[:MAX_PAYLOAD_BYTES].decode("utf-8", errors="replace"),
            "payload_size": len(raw.payload),
        }

    @staticmethod
    def _store(session: Session, valid: list[tuple[DeviceInfo, DeviceMessageIn, RawMessage]]) -> list[tuple[DeviceInfo, DeviceMessageIn, RawMessage]]:
        """Inserts the messages; returns those that were new (not stored by an earlier delivery), in the
        order the database reported them (COPY on PostgreSQL, multi-row INSERTs on SQLite)."""
        rows: list[MessageRow] = [(info.id, msg.kind.value, msg.seq, msg.ts, raw.received_at, msg.body)
                                  for info, msg, raw in valid]
        return [valid[i] for i in insert_device_messages(session, rows)]

    @staticmethod
    def _lock_states(session: Session, device_ids: set[int]) -> dict[tuple[int, str], RuleState]:
        """The rule states of these devices as committed, read under a lock on the devices' rows (taken in
        id order, so two workers never deadlock on each other): a second worker with readings of the same
        device waits there until this batch is committed, then sees its states."""
        return {(r.device_id, r.rule_key): RuleState(r.breach_since, r.active, r.normal_since, r.last_ts)
                for r in lock_rule_states(session, device_ids)}

    def _evaluate(self, states: dict[tuple[int, str], RuleState], info: DeviceInfo, msg: DeviceMessageIn) -> list[Transition]:
        out: list[Transition] = []
        if msg.kind is DeviceMessageKind.TELEMETRY:
            readings = msg.body["readings"]
            for rule in self.rules.get(info.model_id, ()):
                value = readings.get(rule.metric)
                if value is not None:
                    state = states.setdefault((info.id, rule.key), RuleState())
                    transition = evaluate(rule, state, msg.ts, value)
                    if transition is not None:
                        out.append(transition)
        elif msg.kind is DeviceMessageKind.FAULT:
            code = msg.body["code"]
            state = states.setdefault((info.id, f"code:{code}"), RuleState())
            transition = device_fault(code, msg.body["state"] == "raised", state, msg.ts)
            if transition is not None:
                out.append(transition)
        return out

    def _save_states(self, session: Session, states: dict[tuple[int, str], RuleState]) -> None:
        save_rule_states(session, [
            {"device_id": d, "rule_key": k, "breach_since": s.breach_since, "active": s.active,
             "normal_since": s.normal_since, "last_ts": s.last_ts}
            for (d, k), s in states.items() if s.changed
        ])

    def _handle(self, session: Session, info: DeviceInfo, transition: Transition, raw: RawMessage, result: BatchResult) -> None:
        result.transitions += 1
        rule = transition.rule
        if rule is not None and rule.action == RuleAction.QUARANTINE_LOT.value:
            self._lot_excursion(session, info, transition)
            return
        fault = get_fault(session, model_id=info.model_id, code=transition.fault_code)
        if isinstance(transition, Raised):
            model_name = get_model_name(session, model_id=info.model_id) or ""
            title = fault.title if fault else f"Device fault {transition.fault_code}"
            what = (f"{rule.metric} {rule.operator} {rule.threshold:g} since {transition.since:%Y-%m-%d %H:%M:%S} UTC"
                    if rule else f"device reported {transition.fault_code}")
            ticket, created = open_ticket(
                session, customer_id=info.customer_id, device_id=info.id, source=TicketSource.DEVICE,
                category=transition.fault_code, title=f"{title} ({model_name})", dedup_key=dedup_key(transition.fault_code),
                author=f"device:{info.serial}", description=f"Detected by the device: {what}.",
                fault_code=transition.fault_code,
                priority=_priority(fault.severity, fault.safety_critical) if fault else TicketPriority.NORMAL,
            )
            if created:
                result.tickets_opened.append(ticket.number or "")
                if queue_notification(session, ticket=ticket, kind=ProactiveKind.DEVICE_FAULT,
                                      safety_critical=bool(fault and fault.safety_critical),
                                      detected_at=raw.received_at) is not None:
                    result.notifications += 1
            return
        ticket = find_open_ticket(session, device_id=info.id, dedup_key=dedup_key(transition.fault_code))
        if ticket is None:
            return  # recovered before anyone opened a ticket, or an agent already closed it
        add_ticket_event(
            session, ticket=ticket, kind=TicketEventKind.DEVICE_RECOVERED, author=f"device:{info.serial}",
            body="Device-verified recovery: readings back to normal." if rule else "Device-verified recovery: the device cleared the fault.",
            data={"device_verified": True, "at": transition.at.isoformat()},
        )
        if fault is None or not fault.needs_technician:
            change_ticket_status(session, ticket=ticket, status=TicketStatus.RESOLVED, author=f"device:{info.serial}",
                                 note="device-verified recovery")
        if queue_notification(session, ticket=ticket, kind=ProactiveKind.DEVICE_RECOVERED, safety_critical=False,
                              detected_at=raw.received_at) is not None:
            result.notifications += 1

    def _lot_excursion(self, session: Session, info: DeviceInfo, transition: Transition) -> None:
        if isinstance(transition, Raised):
            lot = record_excursion(session, lot_id=info.monitors_lot_id, since=transition.since, detail={
                "logger": info.serial, "fault_code": transition.fault_code, "since": transition.since.isoformat(),
                "confirmed_at": transition.at.isoformat(), "value": transition.value,
            }) if info.monitors_lot_id else None
            if lot is not None:
                logger.warning("lot %s marked: temperature excursion (%s)", lot.code, transition.fault_code)
        else:  # the lot stays marked until inspected
            lot = record_back_in_range(session, lot_id=info.monitors_lot_id, at=transition.at) if info.monitors_lot_id else None
        if lot is None:
            logger.warning("shipment logger %s reported %s but monitors no lot", info.serial, transition.fault_code)

    def _touch_devices(self, session: Session, new: list[tuple[DeviceInfo, DeviceMessageIn, RawMessage]]) -> dict[int, dt.datetime]:
        latest: dict[int, dt.datetime] = {}
        for info, _msg, raw in new:
            if raw.received_at > latest.get(info.id, raw.received_at - dt.timedelta(1)):
                latest[info.id] = raw.received_at
        due = [{"id": d, "last_seen_at": t} for d, t in latest.items()
               if d not in self._last_seen or t - self._last_seen[d] >= LAST_SEEN_RESOLUTION]
        set_last_seen(session, due)
        return {row["id"]: row["last_seen_at"] for row in due}  # remembered once committed

    def _count(self, session: Session, result: BatchResult) -> Counter[str]:
        counts = Counter({"accepted": result.accepted, "duplicate": result.duplicates,
                          "tickets_opened": len(result.tickets_opened)})
        counts.update({f"rejected:{k}": v for k, v in result.rejected.items()})
        counts = Counter({k: v for k, v in counts.items() if v})
        if not counts:
            return counts
        increment_counters(session, counts)  # one atomic upsert, shared with the HTTP route
        return counts
