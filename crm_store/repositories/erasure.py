"""Right to erasure: a customer's personal data removed or irreversibly anonymised in every store.

An erasure is a resumable state machine kept in ``erasure_requests`` (one per customer). ``run_erasure``
takes the request's lease with a conditional UPDATE, then runs the steps of :data:`ERASE_STEPS` in order;
each step's CRM changes and its ``{"done": true, "rows": n}`` entry commit in one transaction guarded by the
lease (``UPDATE ... WHERE holder = me``, row count checked), so a runner killed half way leaves only whole
steps done and a re-run (or another replica after the lease expires) finishes the rest. Steps in other
stores (Rasa's tracker store, the MQTT broker's password file) are idempotent deletes done before their step
commits. Re-running a finished request changes nothing.

Tickets and handoffs stay as anonymous records (category, status, times, SLA figures survive); everything
else that names the customer is deleted (the photos they sent in the chat included, and the failed chat
verifications recorded under hashes of their e-mail address). Which rows are theirs is
defined once, for the erasure and the export alike, in :mod:`crm_store.repositories.customer_scope`. The
request keeps who asked, when, which stores and how many rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import String, cast, delete, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_store.db import session_scope
from crm_store.models import (
    AuthFailure, ChannelIdentity, ConsentEvent, CsatRating, Customer, DeadLetter, DeadLetterTally, Device,
    DeviceCredential, DeviceMessage, DeviceRuleState, ErasureRequest, Handoff, HandoffMessage, Interaction,
    ProactiveMessage, Purchase, Ticket, TicketEvent, utcnow,
)
from crm_store.repositories.console import delete_attachments
from crm_store.repositories.customer_scope import (
    Context, attachment_filter, auth_failure_filter, dead_letter_filter, erasure_senders, handoff_filter, identifiers,
    ticket_filter,
)
from crm_store.tracker_store import TrackerStore

logger = logging.getLogger(__name__)

ERASED = "[erased]"
LEASE = dt.timedelta(minutes=5)
# The stores an erasure touches, in the order it touches them. The export has a section for each
# (tests compare the two lists). Chat conversations come first and again last: a conversation still
# running while the CRM rows go could write its tracker once more. Attachments go before the handoffs and
# tickets they are kept with: those steps unlink them from the customer. Verification failures are found by
# hashing the customer's e-mail address, so they go before the customer row that holds it; and after the
# purchases and devices, so that deleting a lock-out cannot reopen guessing at an account that still verifies.
ERASE_STEPS = (
    "chat_conversations", "device_credentials", "telemetry", "dead_letters", "attachments", "handoffs", "tickets",
    "proactive_messages", "csat", "interactions", "channel_identities", "consent_history", "purchases", "devices",
    "auth_failures", "customer", "chat_conversations_final",
)
STORES = tuple(s for s in ERASE_STEPS if s != "chat_conversations_final")

BrokerRevoke = Callable[[list[str]], str]


class LostLease(RuntimeError):
    """Another runner took the request over (this one was too slow): stop without committing."""


def request_erasure(session: Session, *, customer_id: int, requested_by: str, source: str,
                    delay: dt.timedelta = dt.timedelta(0)) -> tuple[ErasureRequest, bool]:
    """The customer's erasure request, created if there is none open; returns (request, created).
    Idempotent: an open request is returned as it is (a unique key makes two concurrent requests one), and
    so is the finished one while the customer stays erased. ``delay``: when a chat asks, the request waits
    until that conversation's turn is stored (otherwise Rasa would write it back after the delete)."""
    existing = get_erasure_for_customer(session, customer_id=customer_id)
    if existing is not None and (existing.status != "done" or session.get(Customer, customer_id) is None):
        return existing, False
    req = ErasureRequest(customer_id=customer_id, active_customer_id=customer_id, requested_by=requested_by[:64],
                         source=source, status="pending",
                         not_before=utcnow() + delay, runs=0, steps={}, work={})
    try:
        with session.begin_nested():
            session.add(req)
            session.flush()
    except IntegrityError:
        existing = get_erasure_for_customer(session, customer_id=customer_id)
        if existing is None or existing.status == "done":
            raise
        return existing, False
    logger.info("erasure request %d created (source %s)", req.id, source)
    return req, True


def get_erasure(session: Session, *, request_id: int) -> ErasureRequest | None:
    return session.get(ErasureRequest, request_id)


def get_erasure_for_customer(session: Session, *, customer_id: int) -> ErasureRequest | None:
    """The customer's open erasure request, else their latest finished one, else None."""
    return session.scalar(select(ErasureRequest).where(ErasureRequest.customer_id == customer_id)
                          .order_by(ErasureRequest.active_customer_id.is_(None), ErasureRequest.id.desc()).limit(1))


def runnable_erasures(session: Session, *, now: dt.datetime | None = None) -> list[int]:
    """Ids of requests due and not running under a live lease (new ones, and ones whose runner died)."""
    now = now or utcnow()
    return list(session.scalars(select(ErasureRequest.id).where(
        ErasureRequest.status != "done", ErasureRequest.not_before <= now,
        or_(ErasureRequest.lease_until.is_(None), ErasureRequest.lease_until < now)).order_by(ErasureRequest.id)))


def is_erasure_pending(session: Session, *, customer_id: int) -> bool:
    req = get_erasure_for_customer(session, customer_id=customer_id)
    return req is not None and req.status != "done"


def _dead_local_holder(holder: str | None) -> bool:
    """Whether ``holder`` (host:pid:nonce) was a process on this host that no longer exists (killed)."""
    if not holder or holder.count(":") < 2:
        return False
    host, pid, _ = holder.rsplit(":", 2)
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _claim(url: str, request_id: int, holder: str, *, now: dt.datetime) -> bool:
    """Takes the request's lease: free, expired, or held by a dead process of this host (a crashed run
    re-run at once). Conditional UPDATE, row count checked: one runner at a time."""
    with session_scope(url) as session:
        current = session.scalar(select(ErasureRequest.holder).where(ErasureRequest.id == request_id))
        free = or_(ErasureRequest.lease_until.is_(None), ErasureRequest.lease_until < now)
        if _dead_local_holder(current):
            free = or_(free, ErasureRequest.holder == current)
        result = session.execute(
            update(ErasureRequest)
            .where(ErasureRequest.id == request_id, ErasureRequest.status != "done", ErasureRequest.not_before <= now,
                   free)
            .values(status="running", holder=holder, lease_until=now + LEASE, runs=ErasureRequest.runs + 1))
        return result.rowcount == 1


def _record_step(session: Session, request_id: int, holder: str, name: str, rows: int, **extra: Any) -> None:
    req = session.get(ErasureRequest, request_id)
    assert req is not None
    steps = dict(req.steps or {})
    steps[name] = {"done": True, "rows": int(rows), "at": utcnow().isoformat(timespec="seconds"), **extra}
    values: dict[str, Any] = {"steps": steps, "lease_until": utcnow() + LEASE}
    if name == ERASE_STEPS[-1]:
        values.update(status="done", completed_at=utcnow(), holder=None, lease_until=None, work={},
                      active_customer_id=None)
    result = session.execute(update(ErasureRequest)
                             .where(ErasureRequest.id == request_id, ErasureRequest.holder == holder)
                             .values(**values).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise LostLease(f"erasure request {request_id} was taken over")


def run_erasure(url: str, request_id: int, *, tracker: TrackerStore | None = None,
                broker_revoke: BrokerRevoke | None = None, holder: str | None = None,
                after_step: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """Runs (or finishes) erasure request ``request_id``; returns its steps, or None when another runner holds
    it or it is not due yet. ``broker_revoke(serials)`` removes device accounts from the running broker and
    returns what it did (``"reloaded"``, ``"no local broker"``). ``after_step`` is called after each committed
    step (the resume test pauses there to kill the process). Raises on a failure; re-run to continue."""
    holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if holder.count(":") != 2:
        raise ValueError("holder is host:pid:nonce")
    if not _claim(url, request_id, holder, now=utcnow()):
        return None
    while True:
        with session_scope(url) as session:
            req = session.get(ErasureRequest, request_id)
            assert req is not None
            if req.status == "done":
                return dict(req.steps)
            todo = [s for s in ERASE_STEPS if not (req.steps or {}).get(s, {}).get("done")]
            name = todo[0]
            ctx = _context(session, req)
            rows, extra = _STEPS[name](session, ctx, tracker=tracker, broker_revoke=broker_revoke)
            _record_step(session, request_id, holder, name, rows, **extra)
        logger.info("erasure request %d: %s done (%d rows)", request_id, name, rows)
        if after_step is not None:
            after_step(name)


def _context(session: Session, req: ErasureRequest) -> Context:
    cid = req.customer_id
    ctx = Context(customer_id=cid)
    customer = session.get(Customer, cid)
    devices = list(session.execute(select(Device.id, Device.serial).where(Device.customer_id == cid)))
    ctx.device_ids = [d.id for d in devices]
    ctx.serials = [d.serial for d in devices]
    orders = list(session.scalars(select(Purchase.order_number).where(Purchase.customer_id == cid)))
    if customer is not None:
        ctx.needles = [n for n in (customer.email, customer.phone) if n]
        ctx.names = [customer.full_name] if customer.full_name else []
        # Not kept on the request: the auth_failures step runs before the customer step, so a re-run that
        # still has it to do still finds the customer row.
        ctx.identifiers = identifiers(customer)
    ctx.needles += orders + ctx.serials
    senders = set(erasure_senders(session, customer_id=cid))
    # Kept on the request while it runs (and emptied when it is done): the last tracker pass runs after the
    # rows that name the senders and the customer are gone.
    work = dict(req.work or {})
    senders.update(work.get("senders", []))
    ctx.senders = sorted(senders)
    ctx.needles = sorted(set(ctx.needles) | set(work.get("needles", [])))
    ctx.names = sorted(set(ctx.names) | set(work.get("names", [])))
    if work.get("senders") != ctx.senders or work.get("needles") != ctx.needles or work.get("names") != ctx.names:
        req.work = {"senders": ctx.senders, "needles": ctx.needles, "names": ctx.names}
    return ctx


def _scrub(text: str | None, needles: list[str]) -> str | None:
    if not text:
        return text
    for needle in sorted(needles, key=len, reverse=True):
        text = re.sub(re.escape(needle), ERASED, text, flags=re.IGNORECASE)
    return text


# -- steps: each returns (rows touched, extra facts for the audit record) -------------------------------

def _chat(session: Session, ctx: Context, *, tracker: TrackerStore | None, **_: Any) -> tuple[int, dict[str, Any]]:
    if tracker is None:
        return 0, {"skipped": "no tracker store configured"}
    # Conversations linked to the customer, and any other conversation that quotes their identifiers
    # (an e-mail typed into a verification that failed, a serial given in an anonymous chat).
    senders = set(ctx.senders) | tracker.senders_mentioning(ctx.needles)
    return tracker.delete_conversations(senders), {"conversations": len(senders)}


def _credentials(session: Session, ctx: Context, *, broker_revoke: BrokerRevoke | None, **_: Any) -> tuple[int, dict[str, Any]]:
    broker = broker_revoke(ctx.serials) if (broker_revoke and ctx.serials) else "none needed" if not ctx.serials else "not configured"
    rows = session.execute(update(DeviceCredential)
                           .where(DeviceCredential.device_id.in_(ctx.device_ids), DeviceCredential.revoked_at.is_(None))
                           .values(revoked_at=utcnow())).rowcount if ctx.device_ids else 0
    return rows, {"broker": broker}


def _telemetry(session: Session, ctx: Context, **_: Any) -> tuple[int, dict[str, Any]]:
    if not ctx.device_ids:
        return 0, {}
    n = session.execute(delete(DeviceMessage).where(DeviceMessage.device_id.in_(ctx.device_ids))).rowcount
    n += session.execute(delete(DeviceRuleState).where(DeviceRuleState.device_id.in_(ctx.device_ids))).rowcount
    return n, {}


def _dead_letters(session: Session, ctx: Context, **_: Any) -> tuple[int, dict[str, Any]]:
    if not ctx.serials:
        return 0, {}
    n = session.execute(delete(DeadLetter).where(dead_letter_filter(ctx.serials))
                        .execution_options(synchronize_session=False)).rowcount
    # The quota tallies name the serial too (counts only, but a serial is the customer's device).
    n += session.execute(delete(DeadLetterTally).where(DeadLetterTally.device.in_(ctx.serials))
                         .execution_options(synchronize_session=False)).rowcount
    return n, {}


def _attachments(session: Session, ctx: Context, **_: Any) -> tuple[int, dict[str, Any]]:
    # The photos (bytes, file name, conversation) go, and the ticket events that announced them are blanked
    # (also on a ticket the tickets step does not touch: one of an anonymous chat that quoted them). Before the
    # handoffs and tickets steps, whose rows link the photos to the customer.
    return delete_attachments(session, attachment_filter(ctx), marker=ERASED), {}


def _handoffs(session: Session, ctx: Context, **_: Any) -> tuple[int, dict[str, Any]]:
    # Including any other conversation's handoff that quotes them, as the tracker step does for conversations.
    handoffs = list(session.scalars(select(Handoff).where(handoff_filter(ctx))))
    for h in handoffs:
        anonymous = f"erased-{h.id}"
        h.customer_id, h.summary, h.packet = None, ERASED, {"erased": True}
        h.conversation_id = anonymous
        if h.active_key is not None:
            h.active_key = anonymous
    ids = [h.id for h in handoffs]
    if ids:
        session.execute(update(HandoffMessage).where(HandoffMessage.handoff_id.in_(ids)).values(body=ERASED)
                        .execution_options(synchronize_session=False))
    session.flush()
    return len(handoffs), {}


def _tickets(session: Session, ctx: Context, **_: Any) -> tuple[int, dict[str, Any]]:
    tickets = list(session.scalars(select(Ticket).where(ticket_filter(ctx))))
    words = ctx.needles + ctx.names  # the name too: these tickets are theirs
    for t in tickets:
        # Category, status, priority, source and times stay: counts and SLA figures survive.
        t.customer_id, t.device_id, t.description = None, None, ERASED
        t.title = _scrub(t.title, words) or ""
        t.dedup_key = _scrub(t.dedup_key, words) or ""
        t.open_dedup_key = _scrub(t.open_dedup_key, words)
    ids = [t.id for t in tickets]
    if ids:
        session.execute(update(TicketEvent).where(TicketEvent.ticket_id.in_(ids), TicketEvent.body != "")
                        .values(body=ERASED).execution_options(synchronize_session=False))
        session.execute(update(TicketEvent).where(TicketEvent.ticket_id.in_(ids)).values(data={})
                        .execution_options(synchronize_session=False))
    session.flush()
    return len(tickets), {}


def _delete_where(model: Any, *conds: Any) -> Callable[..., tuple[int, dict[str, Any]]]:
    def step(session: Session, ctx: Context, **_: Any) -> tuple[int, dict[str, Any]]:
        where = [c(ctx) for c in conds]
        where = [w for w in where if w is not None]
        return session.execute(delete(model).where(or_(*where)).execution_options(synchronize_session=False)).rowcount, {}
    return step


def _csat(session: Session, ctx: Context, **_: Any) -> tuple[int, dict[str, Any]]:
    conds = [CsatRating.customer_id == ctx.customer_id]
    if ctx.senders:
        conds.append(CsatRating.conversation_id.in_(ctx.senders))
    # Scores stay for the CSAT figures; who gave them and what they wrote go.
    return session.execute(update(CsatRating).where(or_(*conds))
                           .values(customer_id=None, comment=None, conversation_id=None)
                           .execution_options(synchronize_session=False)).rowcount, {}


def _anonymise_devices(session: Session, ctx: Context, **_: Any) -> tuple[int, dict[str, Any]]:
    # The row stays, under a serial that names nobody: a device worker that still has the device in its
    # registry cache may store a late message for it (a foreign key to a deleted row would fail its batch).
    # The broker no longer admits the device, and retention removes whatever arrives late.
    return session.execute(
        update(Device).where(Device.customer_id == ctx.customer_id)
        .values(serial=literal("erased-") + cast(Device.id, String), customer_id=None, location=None,
                installed_on=None, firmware_version=None, last_seen_at=None, monitors_lot_id=None)
        .execution_options(synchronize_session=False)).rowcount, {}


def _auth_failures(session: Session, ctx: Context, **_: Any) -> tuple[int, dict[str, Any]]:
    # Failed verifications with their e-mail address (counts, times, lock), whoever made them. A client
    # address's count is not theirs to erase (shared addresses) and ages out with retention.
    return session.execute(delete(AuthFailure).where(auth_failure_filter(ctx))
                           .execution_options(synchronize_session=False)).rowcount, {}


def _customer(session: Session, ctx: Context, **_: Any) -> tuple[int, dict[str, Any]]:
    return session.execute(delete(Customer).where(Customer.id == ctx.customer_id)).rowcount, {}


def _chat_final(session: Session, ctx: Context, *, tracker: TrackerStore | None, **_: Any) -> tuple[int, dict[str, Any]]:
    if tracker is None:
        return 0, {"skipped": "no tracker store configured"}
    senders = set(ctx.senders) | tracker.senders_mentioning(ctx.needles)
    return tracker.delete_conversations(senders), {}


_STEPS: dict[str, Callable[..., tuple[int, dict[str, Any]]]] = {
    "chat_conversations": _chat,
    "device_credentials": _credentials,
    "telemetry": _telemetry,
    "dead_letters": _dead_letters,
    "attachments": _attachments,
    "handoffs": _handoffs,
    "tickets": _tickets,
    "proactive_messages": _delete_where(ProactiveMessage, lambda c: ProactiveMessage.customer_id == c.customer_id),
    "csat": _csat,
    "interactions": _delete_where(Interaction, lambda c: Interaction.customer_id == c.customer_id,
                                  lambda c: Interaction.conversation_id.in_(c.senders) if c.senders else None),
    "channel_identities": _delete_where(ChannelIdentity, lambda c: ChannelIdentity.customer_id == c.customer_id),
    "consent_history": _delete_where(ConsentEvent, lambda c: ConsentEvent.customer_id == c.customer_id),
    "purchases": _delete_where(Purchase, lambda c: Purchase.customer_id == c.customer_id),
    "devices": _anonymise_devices,
    "auth_failures": _auth_failures,
    "customer": _customer,
    "chat_conversations_final": _chat_final,
}
assert tuple(_STEPS) == ERASE_STEPS


def erasure_public(req: ErasureRequest) -> dict[str, Any]:
    """The audit record as the API shows it: who, when, which stores, how many rows (no personal data)."""
    return {"id": req.id, "customer_id": req.customer_id, "requested_by": req.requested_by, "source": req.source,
            "status": req.status, "created_at": req.created_at, "completed_at": req.completed_at, "runs": req.runs,
            "steps": {k: {kk: vv for kk, vv in v.items()} for k, v in (req.steps or {}).items()}}

