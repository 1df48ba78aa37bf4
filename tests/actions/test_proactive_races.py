"""Proactive messages on PostgreSQL, through the real actions: a push into one tab racing a greeting in
another shows the message once, and a database error while recording it never shows it twice.

The CRM is a PostgreSQL database with the demo data; Anna (customer 1) has chats open in several tabs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from actions.customers import ActionGreet
from actions.proactive import ActionNotifyDeviceFault
from crm_store.db import get_engine, session_scope
from crm_store.enums import ProactiveKind, ProactiveStatus, TicketSource, TicketStatus
from crm_store.models import ProactiveMessage
from crm_store.repositories.customers import link_identity
from crm_store.repositories.devices import get_device_by_serial
from crm_store.repositories.tickets import change_ticket_status, find_open_ticket, open_ticket
from tests.actions.conftest import run_action, tracker_from
from tests.actions.test_proactive import pushed
from tests.conftest import migrated_database
from tests.races import race
from tests.rasa_standin import RasaStandIn

FRIDGE = "FR50-21000101"
ROUNDS = 15


@pytest.fixture(scope="module")
def pg_crm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from crm_store.demo_data import generate

    with migrated_database("postgresql", tmp_path_factory) as url:
        with session_scope(url) as s:
            generate(s, customers=40)
        yield url


@pytest.fixture
def crm(pg_crm: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from actions.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", pg_crm)
    monkeypatch.setenv("ACTION_SERVER_TOKEN", "test-token")
    get_settings.cache_clear()
    yield pg_crm
    get_settings.cache_clear()


def fault_for_anna(url: str, *, safety_critical: bool = False) -> tuple[int, str]:
    """A new device ticket of Anna's fridge and the outbox message the worker queued for it."""
    with session_scope(url) as s:
        device = get_device_by_serial(s, serial=FRIDGE)
        previous = find_open_ticket(s, device_id=device.id, dedup_key="fault:E01")
        if previous is not None:  # the last round's: settled, so this fault opens a new ticket
            change_ticket_status(s, ticket=previous, status=TicketStatus.RESOLVED, author="test")
        ticket, _ = open_ticket(s, customer_id=1, device_id=device.id, source=TicketSource.DEVICE, category="E01",
                                title="Compartment temperature too high", dedup_key="fault:E01",
                                author=f"device:{FRIDGE}", fault_code="E01")
        message = ProactiveMessage(customer_id=1, ticket_id=ticket.id, kind=ProactiveKind.DEVICE_FAULT,
                                   status=ProactiveStatus.PENDING, safety_critical=safety_critical)
        s.add(message)
        s.flush()
        return message.id, ticket.number or ""


def tabs(url: str, *names: str) -> None:
    with session_scope(url) as s:
        for name in names:
            link_identity(s, channel="socketio", external_id=name, customer_id=1)


def test_a_push_into_one_tab_and_a_greeting_in_another_show_the_message_once(crm):
    shown_by = {"push": 0, "greeting": 0}
    for r in range(ROUNDS):
        message_id, number = fault_for_anna(crm)
        tab_a, tab_b = f"tab-a-{r}", f"tab-b-{r}"
        tabs(crm, tab_a, tab_b)

        def deliver(i: int) -> list[str]:
            if i == 0:
                _, messages = run_action(ActionNotifyDeviceFault(), pushed(message_id, sender=tab_a))
            else:
                _, messages = run_action(ActionGreet(), tracker_from("greet_socketio", sender_id=tab_b))
            return [m.get("text") or "" for m in messages if number in (m.get("text") or "")]

        outcomes = race(2, deliver)
        assert all(o.ok for o in outcomes), outcomes
        assert len(outcomes[0].value) + len(outcomes[1].value) == 1, outcomes
        shown_by["push" if outcomes[0].value else "greeting"] += 1
        with session_scope(crm) as s:
            message = s.get(ProactiveMessage, message_id)
            assert message.status is ProactiveStatus.SENT
            assert message.conversation_id == (tab_a if outcomes[0].value else tab_b)


@pytest.fixture
def failing_recording(crm: str) -> Iterator[str]:
    """The database refuses to record the next 3 deliveries (a trigger raising on status 'sent')."""
    statements = [
        "CREATE SEQUENCE IF NOT EXISTS injected_faults",
        "SELECT setval('injected_faults', 1, false)",
        """CREATE OR REPLACE FUNCTION refuse_recording() RETURNS trigger AS $$
           BEGIN
             IF NEW.status = 'sent' AND OLD.status <> 'sent' AND nextval('injected_faults') <= 3 THEN
               RAISE EXCEPTION 'injected fault: recording the delivery failed';
             END IF;
             RETURN NEW;
           END $$ LANGUAGE plpgsql""",
        "CREATE TRIGGER refuse_recording BEFORE UPDATE ON proactive_messages FOR EACH ROW EXECUTE FUNCTION refuse_recording()",
    ]
    with get_engine(crm).begin() as conn:
        for sql in statements:
            conn.execute(text(sql))
    yield crm
    with get_engine(crm).begin() as conn:
        conn.execute(text("DROP TRIGGER refuse_recording ON proactive_messages"))


def test_a_database_error_while_recording_never_shows_a_safety_message_twice(failing_recording, monkeypatch):
    """The worker pushes through (a stand-in of) Rasa's HTTP API, which runs the real action; the first
    three attempts to record the delivery fail in the database. The customer sees the message once."""
    from device_hooks import notifier as notifier_module
    from device_hooks.notifier import Notifier
    from device_hooks.pipeline import Pipeline

    url = failing_recording
    message_id, number = fault_for_anna(url, safety_critical=True)
    monkeypatch.setattr(notifier_module, "RETRY_AFTER", dt.timedelta(0))  # retry at once, not in 30 s
    rasa = RasaStandIn("up")
    tab = "tab-safety"
    try:
        async def push_until_settled() -> int:
            async with httpx.AsyncClient() as client:
                notifier = Notifier(Pipeline(url), rasa.url, "token", client)
                for runs in range(1, 10):
                    tabs(url, tab)  # the chat reports it is open (presence)
                    await notifier.run_once()
                    with session_scope(url) as s:
                        if s.get(ProactiveMessage, message_id).status is not ProactiveStatus.PENDING:
                            return runs
                return -1

        runs = asyncio.run(push_until_settled())
        shown = [t for t in rasa.told(tab) if number in t]
        assert len(shown) == 1 and shown[0].startswith("Important, please read this first"), rasa.told(tab)
        with session_scope(url) as s:
            message = s.get(ProactiveMessage, message_id)
            assert message.status is ProactiveStatus.SENT and runs == 4
            # Three recorded failed attempts, then the delivery.
            assert message.attempts == 4 and message.last_error == "the bot did not confirm the message"
    finally:
        rasa.close()
