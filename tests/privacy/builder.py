"""A customer with data in every store (CRM and Rasa tracker store), and scans for their identifiers.

Shared by the privacy tests and the privacy benchmark.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
import zlib
from dataclasses import dataclass, field

from sqlalchemy import LargeBinary, MetaData, String, cast, func, inspect, literal, or_, select, text
from sqlalchemy.orm import Session

from crm_store.demo_data import seed_catalogue
from crm_store.enums import (
    DeviceMessageKind, HandoffMessageKind, HandoffReason, JourneyStage, ProactiveKind, ProactiveStatus, TicketPriority,
    TicketSource,
)
from crm_store.models import (
    Attachment, ChannelIdentity, CsatRating, Customer, DeadLetter, Device, DeviceMessage, DeviceRuleState, Handoff,
    HandoffMessage, Interaction, ProactiveMessage, ProductModel, Purchase, TicketEvent, utcnow,
)
from crm_store.repositories.console import add_attachment
from crm_store.repositories.lockouts import VERIFY_IDENTITY, reserve_attempt
from crm_store.repositories.privacy import set_consent
from crm_store.repositories.tickets import add_ticket_event, open_ticket
from crm_store.enums import TicketEventKind
from crm_store.db import get_engine
from crm_store.tracker_store import TrackerStore
from device_hooks.broker import issue_credential


@dataclass
class Person:
    customer_id: int
    name: str
    email: str
    phone: str
    orders: list[str]
    serials: list[str]
    senders: list[str]
    bystander_sender: str = ""  # an anonymous chat that quoted one of the serials
    device_ids: list[int] = field(default_factory=list)
    attachment_ids: list[int] = field(default_factory=list)  # photos sent in the chat, with the handoff's ticket
    photo: bytes = b""

    @property
    def needles(self) -> list[str]:
        return [self.name, self.email, self.phone, *self.orders, *self.serials]


def _models(session: Session) -> dict[str, ProductModel]:
    return {m.code: m for m in session.scalars(select(ProductModel))} or seed_catalogue(session)


def make_person(session: Session, tracker: TrackerStore | None, *, telemetry: int = 50, tag: str | None = None) -> Person:
    """Creates a customer with purchases, two devices (credentials, telemetry, rule state, dead letters),
    a chat ticket and a device ticket with events, a handoff with transcript and notes, a photo sent in that
    chat (its name and its metadata name the customer), CSAT, journey events, a held proactive message,
    consent history, a failed chat verification with their e-mail address and two chat conversations
    (socket.io and REST)."""
    tag = tag or uuid.uuid4().hex[:6]
    n = int(uuid.uuid4().int % 900000) + 100000
    models = _models(session)
    name, email, phone = f"Zelda Quist{tag}", f"zelda.{tag}@example.org", f"+44 20 7{n % 1000:03d} {n:06d}"
    customer = Customer(full_name=name, email=email, phone=phone, customer_since=dt.date(2022, 5, 1), city="Leeds")
    session.add(customer)
    session.flush()
    p = Person(customer.id, name, email, phone, [], [], [f"sio-{tag}", f"rest-{tag}"])
    now = utcnow()
    for i, code in enumerate(("WM80", "FR50")):
        serial = f"{code}-24{n:06d}"[:-1] + str(i)
        device = Device(serial=serial, model=models[code], owner=customer, location="kitchen")
        session.add(device)
        session.flush()
        issue_credential(session, device)
        order = f"ORD-2024-{n + i:06d}"
        session.add(Purchase(order_number=order, customer=customer, model_id=device.model_id, device_id=device.id,
                             purchased_at=now, price_cents=49900))
        p.orders.append(order)
        p.serials.append(serial)
        p.device_ids.append(device.id)
        session.add_all(DeviceMessage(device_id=device.id, kind=DeviceMessageKind.TELEMETRY, seq=k,
                                      ts=now - dt.timedelta(seconds=telemetry - k), received_at=now,
                                      body={"serial": serial, "temp_c": 20 + k % 7}) for k in range(telemetry))
        session.add(DeviceRuleState(device_id=device.id, rule_key="code:E21", active=True, last_ts=now))
        session.add(DeadLetter(source="mqtt", topic=f"devices/{serial}/telemetry", reason="bad_json", detail="x",
                               payload=f'{{"serial": "{serial}", "t":', payload_size=20))
    for channel, sender in zip(("socketio", "rest"), p.senders):
        session.add(ChannelIdentity(channel=channel, external_id=sender, customer_id=customer.id))
    chat_ticket, _ = open_ticket(session, customer_id=customer.id, device_id=None, source=TicketSource.CHAT,
                                 category="washing_machine", title=f"Drum noise, order {p.orders[0]}",
                                 dedup_key=f"chat:{uuid.uuid4().hex[:8]}", author="bot",
                                 description=f"{name} ({email}, {phone}) says the drum of {p.serials[0]} bangs")
    add_ticket_event(session, ticket=chat_ticket, kind=TicketEventKind.NOTE, author="agent1",
                     body=f"Called {phone}", data={"serial": p.serials[0]})
    device_ticket, _ = open_ticket(session, customer_id=customer.id, device_id=p.device_ids[1], source=TicketSource.DEVICE,
                                   category="E21", title="Door open too long (FR50)", dedup_key="fault:E21",
                                   author="device", description=f"fault E21 on {p.serials[1]}")
    handoff = Handoff(conversation_id=p.senders[0], channel="socketio", customer_id=customer.id, ticket_id=chat_ticket.id,
                      reason=HandoffReason.CUSTOMER_REQUEST, trigger_key="customer_request", priority=TicketPriority.NORMAL,
                      summary=f"{name} wants a person about {p.serials[0]}", first_response_due_at=now,
                      packet={"customer": {"name": name, "email": email},
                              "transcript": [{"from": "customer", "text": f"I am {email}, order {p.orders[0]}"}]},
                      closed_at=now)
    session.add(handoff)
    session.flush()
    session.add_all([HandoffMessage(handoff_id=handoff.id, kind=HandoffMessageKind.AGENT, author="agent1",
                                    body=f"Hello {name}, I see order {p.orders[0]}"),
                     HandoffMessage(handoff_id=handoff.id, kind=HandoffMessageKind.NOTE, author="agent1",
                                    body=f"phone {phone}")])
    # Stored as POST /chat/uploads stores it: the photo with the handoff and its ticket, and a ticket event.
    p.photo = png_photo(author=name)
    photo = add_attachment(session, conversation_id=p.senders[0], handoff=handoff, ticket=chat_ticket,
                           filename=f"{name} {p.serials[0]} drum.png", content_type="image/png", data=p.photo)
    add_ticket_event(session, ticket=chat_ticket, kind=TicketEventKind.CUSTOMER_CONTACT, author="customer",
                     body=f"Photo from the chat: {photo.filename} (0 KB)", data={"attachment_id": photo.id})
    p.attachment_ids.append(photo.id)
    session.add(CsatRating(customer_id=customer.id, ticket_id=chat_ticket.id, conversation_id=p.senders[0], score=4,
                           comment=f"thanks, {name}"))
    session.add(Interaction(customer_id=customer.id, stage=JourneyStage.START, event="chat_started", channel="rest",
                            conversation_id=p.senders[1], data={"email": email}))
    session.add(ProactiveMessage(customer_id=customer.id, ticket_id=device_ticket.id, kind=ProactiveKind.DEVICE_FAULT,
                                 status=ProactiveStatus.HELD, reason="no_consent"))
    # Counted as actions/verification.py counts a try; typed in capitals, the same key (key_hash normalises).
    reserve_attempt(session, scope=VERIFY_IDENTITY, key=f" {email.upper()}")
    set_consent(session, customer=customer, changes={"proactive": False}, source="chat", actor="customer")
    set_consent(session, customer=customer, changes={"marketing": True}, source="api", actor="admin")
    session.flush()
    if tracker is not None:
        t0 = now.timestamp()
        for sender in p.senders:
            tracker.append(sender, [
                {"event": "action", "name": "action_session_start", "timestamp": t0},
                {"event": "user", "text": f"my email is {email}", "timestamp": t0 + 1,
                 "parse_data": {"intent": {"name": "verify"}}},
                {"event": "slot", "name": "email", "value": email, "timestamp": t0 + 1},
                {"event": "bot", "text": f"Thanks {name.split()[0]}! Your {p.serials[0]} is fine.", "timestamp": t0 + 2},
            ])
        p.bystander_sender = f"anon-{tag}"
        tracker.append(p.bystander_sender, [{"event": "user", "text": f"is {p.serials[1]} recalled?", "timestamp": t0}])
    return p


def png_photo(*, author: str) -> bytes:
    """A valid 1×1 PNG whose metadata (a tEXt chunk, as cameras and phones write) names ``author``."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"tEXt", b"Author\x00" + author.encode()) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
            + chunk(b"IEND", b""))


def announcing_event(session: Session, attachment_id: int) -> int:
    """Id of the ticket event that announced the photo (as POST /chat/uploads records it)."""
    ticket_id = session.get(Attachment, attachment_id).ticket_id
    return session.scalar(select(TicketEvent.id).where(TicketEvent.ticket_id == ticket_id,
                                                       TicketEvent.kind == TicketEventKind.CUSTOMER_CONTACT)
                          .order_by(TicketEvent.id.desc()).limit(1))


def scan_crm(url: str, needles: list[str]) -> dict[str, int]:
    """{table.column: hits} of every column of every CRM table containing any needle (binary columns too:
    a photo's metadata may name its author)."""
    engine = get_engine(url)
    hits: dict[str, int] = {}
    with engine.connect() as conn:
        meta = MetaData()
        meta.reflect(conn)  # the tables the database has, not only those the models name
        for table in meta.sorted_tables:
            for col in table.columns:
                if not isinstance(col.type, LargeBinary):
                    cond = or_(*[cast(col, String).ilike(f"%{n}%") for n in needles])
                elif conn.dialect.name == "postgresql":  # bytea casts to hex; "escape" keeps printable bytes
                    cond = or_(*[func.encode(col, "escape").ilike(f"%{n}%") for n in needles])
                else:  # SQLite's LIKE stops at a NUL byte, which binary data has
                    cond = or_(*[func.instr(col, literal(n.encode(), LargeBinary)) > 0 for n in needles])
                count = conn.execute(select(text("count(*)")).select_from(table).where(cond)).scalar()
                if count:
                    hits[f"{table.name}.{col.name}"] = int(count)
    return hits


def scan_tracker(tracker: TrackerStore, needles: list[str]) -> int:
    """Rows of Rasa's events table naming any needle (as stored: JSON text)."""
    with tracker.engine.connect() as conn:
        if not inspect(conn).has_table("events"):
            return 0
        return sum(int(conn.execute(text("SELECT count(*) FROM events WHERE lower(data) LIKE :p OR lower(sender_id) LIKE :p"),
                                    {"p": f"%{n.lower()}%"}).scalar() or 0) for n in needles)
