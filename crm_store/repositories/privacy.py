"""Export of everything held about a customer, consent with its history, and the staff access audit.

The export (``export_customer``) is one JSON document, schema ``crm-customer-export/1``::

    {"schema": "crm-customer-export/1", "generated_at": ISO-8601 UTC, "customer_id": int,
     "stores": [names of the sections below, the same names as erasure.STORES],
     "customer": {profile and current consent},            "consent_history": [{kind, granted, source, actor, at}],
     "purchases": [...], "devices": [{serial, model, location, ...}],
     "device_credentials": [{serial, created_at, revoked_at}]  (never the secrets),
     "telemetry": [{serial, summary: {kind: {count, first_ts, last_ts}}, messages: [{kind, seq, ts, received_at, body}]}]
                  (raw messages within the telemetry retention period),
     "dead_letters": [{received_at, source, topic, reason, detail, payload}] (those sent as their devices),
     "tickets": [{number, category, title, description, status, ..., events: [{kind, author, body, data, at}]}],
     "handoffs": [{reason, status, summary, packet (incl. transcript), ..., messages: [{kind, author, body, at}]}],
     "attachments": [{id, filename, content_type, size, sha256, created_at, ticket (number), handoff_id,
                      conversation_id, data_base64}]  (photos sent in the chat, the image itself included),
     "proactive_messages": [...], "csat": [{score, comment, at}], "interactions": [...],
     "channel_identities": [{channel, external_id, verified_at, last_seen_at}],
     "auth_failures": [{scope, identifier, failures, first_failure_at, last_failure_at, locked_until, locked}]
                      (failed chat verifications with their e-mail address; never the key hash),
     "chat_conversations": {sender id: [Rasa events as stored in the tracker store]}}

Times are ISO-8601 in UTC. Only ``crm_store`` reads the CRM; the tracker store is read through
:class:`crm_store.tracker_store.TrackerStore`.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from crm_store.models import (
    AccessAudit, Attachment, AuthFailure, ChannelIdentity, ConsentEvent, CsatRating, Customer, DeadLetter, Device,
    DeviceCredential, DeviceMessage, Handoff, Interaction, ProactiveMessage, Purchase, Ticket, utcnow,
)
from crm_store.repositories.customer_scope import (
    Context, attachment_filter, auth_failure_filter, dead_letter_filter, own_context,
)
from crm_store.repositories.erasure import STORES
from crm_store.repositories.lockouts import key_hash
from crm_store.tracker_store import TrackerStore

EXPORT_SCHEMA = "crm-customer-export/1"
CONSENT_KINDS = ("telemetry", "proactive", "marketing")
CONSENT_SOURCES = ("api", "console", "chat", "import")


# -- consent ---------------------------------------------------------------------------------------

def current_consent(customer: Customer) -> dict[str, bool]:
    return {"telemetry": customer.consent_telemetry, "proactive": customer.consent_proactive,
            "marketing": customer.consent_marketing}


def set_consent(session: Session, *, customer: Customer, changes: dict[str, bool], source: str, actor: str,
                now: dt.datetime | None = None) -> list[ConsentEvent]:
    """Applies consent changes ({kind: granted}) and records each real change with time and source.

    Each change is one conditional ``UPDATE … WHERE consent_<kind> <> :granted``, and only an update that changed
    the row records an event: a change made meanwhile by someone else (the customer in the chat, staff in the
    console) is never read stale, so a revocation is not lost behind a simultaneous grant, and the history matches
    the final state. Raises ValueError for an unknown kind or source. The device worker reads
    ``consent_telemetry`` afresh within its cache period (≤ 5 s), so a revoked telemetry consent refuses the
    device's next message.
    """
    if source not in CONSENT_SOURCES:
        raise ValueError(f"unknown consent source {source!r}")
    if unknown := set(changes) - set(CONSENT_KINDS):
        raise ValueError(f"unknown consent kind {sorted(unknown)[0]!r}")
    now = now or utcnow()
    events = []
    for kind, granted in changes.items():
        column = getattr(Customer, f"consent_{kind}")
        changed = session.execute(update(Customer).where(Customer.id == customer.id, column != bool(granted))
                                  .values({column: bool(granted)}).execution_options(synchronize_session=False))
        # The loaded object shows the stored value either way (no second write of it at flush).
        set_committed_value(customer, f"consent_{kind}", bool(granted))
        if changed.rowcount != 1:
            continue
        event = ConsentEvent(customer_id=customer.id, kind=kind, granted=bool(granted), source=source,
                             actor=actor[:64], created_at=now)
        session.add(event)
        events.append(event)
    session.flush()
    return events


def consent_history(session: Session, *, customer_id: int) -> list[ConsentEvent]:
    return list(session.scalars(select(ConsentEvent).where(ConsentEvent.customer_id == customer_id)
                                .order_by(ConsentEvent.created_at, ConsentEvent.id)))


# -- access audit ----------------------------------------------------------------------------------

def record_access(session: Session, *, actor: str, action: str, customer_id: int | None) -> AccessAudit:
    """Records a staff access to a customer's data (view_360, export, erase, consent). No personal data."""
    row = AccessAudit(actor=actor[:64], action=action[:32], customer_id=customer_id, created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def list_access(session: Session, *, customer_id: int | None = None, limit: int = 200) -> list[AccessAudit]:
    stmt = select(AccessAudit).order_by(AccessAudit.id.desc()).limit(limit)
    if customer_id is not None:
        stmt = stmt.where(AccessAudit.customer_id == customer_id)
    return list(session.scalars(stmt))


# -- export ----------------------------------------------------------------------------------------

def count_holdings(session: Session, *, customer_id: int) -> dict[str, int]:
    """How many of each kind of record are held about the customer, for the bot's summary of an export
    request: ``{"purchases": n, "devices": n, "tickets": n, "chat_identities": n, "photos": n}`` (0 for an
    unknown id). Photos are counted as the export lists them (sent in their chats or kept with their tickets)."""
    kinds = (("purchases", Purchase, Purchase.customer_id), ("devices", Device, Device.customer_id),
             ("tickets", Ticket, Ticket.customer_id), ("chat_identities", ChannelIdentity, ChannelIdentity.customer_id))
    held = {name: session.scalar(select(func.count()).select_from(model).where(column == customer_id)) or 0
            for name, model, column in kinds}
    customer = session.get(Customer, customer_id)
    if customer is not None:
        ctx = own_context(session, customer=customer)
        held["photos"] = session.scalar(select(func.count()).select_from(Attachment).where(attachment_filter(ctx))) or 0
    else:
        held["photos"] = 0
    return held


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _row(obj: Any, *cols: str) -> dict[str, Any]:
    return {c: _plain(getattr(obj, c)) for c in cols}


def export_customer(session: Session, *, customer_id: int, tracker: TrackerStore | None,
                    telemetry_retention: dt.timedelta | None = None, now: dt.datetime | None = None) -> dict[str, Any] | None:
    """Everything held about the customer as one JSON-ready dict (schema in the module doc), or None."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        return None
    now = now or utcnow()
    devices = list(session.scalars(select(Device).where(Device.customer_id == customer_id).order_by(Device.id)))
    device_ids = [d.id for d in devices]
    serial_of = {d.id: d.serial for d in devices}
    doc: dict[str, Any] = {"schema": EXPORT_SCHEMA, "generated_at": _plain(now), "customer_id": customer_id,
                           "stores": list(STORES)}
    doc["customer"] = {**_row(customer, "full_name", "email", "phone", "preferred_language", "loyalty_tier",
                              "customer_since", "city", "timezone", "quiet_hours_start", "quiet_hours_end", "created_at"),
                       "consent": current_consent(customer)}
    doc["consent_history"] = [{**_row(e, "kind", "granted", "source", "actor"), "at": _plain(e.created_at)}
                              for e in consent_history(session, customer_id=customer_id)]
    doc["purchases"] = [{**_row(p, "order_number", "purchased_at", "price_cents", "sales_channel"),
                         "model": p.model.code, "serial": serial_of.get(p.device_id or -1)}
                        for p in session.scalars(select(Purchase).where(Purchase.customer_id == customer_id)
                                                 .order_by(Purchase.purchased_at))]
    doc["devices"] = [{**_row(d, "serial", "location", "installed_on", "firmware_version", "last_seen_at"),
                       "model": d.model.code, "category": _plain(d.model.category)} for d in devices]
    doc["device_credentials"] = [{"serial": serial_of[c.device_id], **_row(c, "created_at", "revoked_at")}
                                 for c in session.scalars(select(DeviceCredential)
                                                          .where(DeviceCredential.device_id.in_(device_ids)))]
    doc["telemetry"] = _telemetry(session, devices, since=now - telemetry_retention if telemetry_retention else None)
    serials = [d.serial for d in devices]
    doc["dead_letters"] = [_row(x, "received_at", "source", "topic", "reason", "detail", "payload")
                           for x in session.scalars(select(DeadLetter).where(dead_letter_filter(serials))
                                                    .order_by(DeadLetter.id))] if serials else []
    tickets = list(session.scalars(select(Ticket).where(Ticket.customer_id == customer_id).order_by(Ticket.id)))
    doc["tickets"] = [{**_row(t, "number", "source", "category", "title", "description", "fault_code", "priority",
                              "status", "created_at", "updated_at", "resolved_at"),
                       "serial": serial_of.get(t.device_id or -1),
                       "events": [{**_row(e, "kind", "author", "body", "data"), "at": _plain(e.created_at)}
                                  for e in t.events]} for t in tickets]
    handoffs = list(session.scalars(select(Handoff).where(Handoff.customer_id == customer_id).order_by(Handoff.id)))
    doc["handoffs"] = [{**_row(h, "conversation_id", "channel", "reason", "status", "priority", "language", "summary",
                               "packet", "created_at", "claimed_at", "first_response_at", "closed_at"),
                        "messages": [{**_row(m, "kind", "author", "body"), "at": _plain(m.created_at)} for m in h.messages]}
                       for h in handoffs]
    ctx = own_context(session, customer=customer)
    senders = ctx.senders
    doc["attachments"] = _attachments(session, ctx)
    doc["proactive_messages"] = [_row(m, "kind", "status", "created_at", "sent_at", "channel", "reason")
                                 for m in session.scalars(select(ProactiveMessage)
                                                          .where(ProactiveMessage.customer_id == customer_id))]
    doc["csat"] = [{**_row(r, "score", "comment", "conversation_id"), "at": _plain(r.created_at)}
                   for r in session.scalars(select(CsatRating).where(CsatRating.customer_id == customer_id))]
    doc["interactions"] = [_row(i, "stage", "event", "channel", "conversation_id", "data", "occurred_at")
                           for i in session.scalars(select(Interaction).where(Interaction.customer_id == customer_id)
                                                    .order_by(Interaction.occurred_at))]
    doc["channel_identities"] = [_row(i, "channel", "external_id", "verified_at", "last_seen_at")
                                 for i in session.scalars(select(ChannelIdentity)
                                                          .where(ChannelIdentity.customer_id == customer_id))]
    doc["auth_failures"] = _auth_failures(session, ctx, now=now)
    doc["chat_conversations"] = tracker.conversation_events(senders) if tracker is not None else {}
    doc["customer_summary"] = {k: len(v) for k, v in doc.items() if isinstance(v, list) and k != "stores"}
    return doc


def _attachments(session: Session, ctx: Context) -> list[dict[str, Any]]:
    """Photos as the erasure finds them (without ``needles``: none from others' chats that only quote them)."""
    return [{**_row(a, "id", "filename", "content_type", "size", "sha256", "created_at"), "ticket": number,
             **_row(a, "handoff_id", "conversation_id"), "data_base64": base64.b64encode(a.data).decode("ascii")}
            for a, number in session.execute(select(Attachment, Ticket.number)
                                             .outerjoin(Ticket, Ticket.id == Attachment.ticket_id)
                                             .where(attachment_filter(ctx)).order_by(Attachment.id))]


def _auth_failures(session: Session, ctx: Context, *, now: dt.datetime) -> list[dict[str, Any]]:
    """Failed verifications recorded under the customer's identifiers, as the erasure finds them.

    What a data subject sees: which identifier was tried (``"email"``), in which check, how many times, when,
    and whether checks with it are refused now. These are attempts anyone may have made with their address, and
    telling them is the point: someone guessing at their account. The key hash is left out: it is SHA-256 of the
    scope and their e-mail address (no pepper, nothing secret in it), so it adds nothing they do not hold, and
    it is our lookup key rather than information about them. No other key's record is read or shown."""
    kind_of = {(i.scope, key_hash(i.scope, i.value)): i.kind for i in ctx.identifiers}
    return [{"scope": f.scope, "identifier": kind_of.get((f.scope, f.key_hash)),
             **_row(f, "failures", "first_failure_at", "last_failure_at", "locked_until"),
             "locked": f.locked_until is not None and f.locked_until > now}
            for f in session.scalars(select(AuthFailure).where(auth_failure_filter(ctx)).order_by(AuthFailure.id))]


def _telemetry(session: Session, devices: list[Device], *, since: dt.datetime | None) -> list[dict[str, Any]]:
    out = []
    for d in devices:
        summary = {
            _plain(kind): {"count": n, "first_ts": _plain(first), "last_ts": _plain(last)}
            for kind, n, first, last in session.execute(
                select(DeviceMessage.kind, func.count(), func.min(DeviceMessage.ts), func.max(DeviceMessage.ts))
                .where(DeviceMessage.device_id == d.id).group_by(DeviceMessage.kind))
        }
        stmt = select(DeviceMessage.kind, DeviceMessage.seq, DeviceMessage.ts, DeviceMessage.received_at,
                      DeviceMessage.body).where(DeviceMessage.device_id == d.id).order_by(DeviceMessage.ts, DeviceMessage.seq)
        if since is not None:
            stmt = stmt.where(DeviceMessage.received_at >= since)
        messages = [{"kind": _plain(k), "seq": s, "ts": _plain(ts), "received_at": _plain(r), "body": b}
                    for k, s, ts, r, b in session.execute(stmt)]
        out.append({"serial": d.serial, "summary": summary, "messages": messages})
    return out


def delete_access_before(session: Session, *, before: dt.datetime) -> int:
    """Retention of the access audit."""
    return session.execute(delete(AccessAudit).where(AccessAudit.created_at < before)).rowcount
