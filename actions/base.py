"""Shared behaviour of actions: a CRM unit of work per action, customer resolution, safe failure.

Event-loop rule: rasa-sdk runs every action's ``run`` on the action server's single event loop, so
CRM work (blocking SQLAlchemy calls that can wait seconds on a locked database) always runs in a worker
thread: ``CrmAction`` runs ``act`` there, ``CrmFormValidationAction`` runs the whole form validation
(its sync ``extract_*``/``validate_*`` methods query the CRM) there, and any other ``async def run``
that touches the CRM uses ``asyncio.to_thread``.

Slots this module needs in domain.yml: ``customer_id`` (float) and ``customer_name`` (text), both custom.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import ActiveLoop, EventType, FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy.orm import Session

from actions.settings import get_settings
from crm_store.db import is_sqlite, session_scope
from crm_store.repositories.customers import CustomerProfile, find_customer_by_identity, get_profile, is_linked

logger = logging.getLogger(__name__)

CRM_UNAVAILABLE = (
    "Sorry, I can't reach our customer records right now. Please try again in a few minutes; "
    "nothing you told me is lost."
)


@contextmanager
def crm_session(*, write: bool = True) -> Iterator[Session]:
    """A CRM unit of work owned by the calling action: committed when the block succeeds.

    ``write=False`` for lookups: a read-only transaction, which on SQLite never takes the write lock.
    Blocking: call it from a worker thread, never on the event loop.
    """
    with session_scope(get_settings().database_url, write=write) as session:
        yield session


def sender_channel(tracker: Tracker) -> str | None:
    """The input channel of the conversation (``socketio``, ``rest``, ``facebook``), if known."""
    return tracker.get_latest_input_channel()


VERIFICATION_EXPIRED = (
    "For your security, a verification lasts a limited time and yours has expired. Please confirm your details "
    "again before I show anything from your account."
)


def linked_customer(session: Session, tracker: Tracker, *, touch: bool = True) -> CustomerProfile | None:
    """The customer this chat was verified as, while that verification lasts (``VERIFICATION_TTL_MINUTES``).

    Decided by the CRM's chat-link row for the conversation's channel and id, whose ``verified_at`` only a
    successful verification sets: never by a slot or anything else in the conversation.
    """
    channel = sender_channel(tracker)
    if not channel:
        return None
    customer = find_customer_by_identity(session, channel=channel, external_id=tracker.sender_id,
                                         verified_within=get_settings().verification_ttl, touch=touch)
    return get_profile(session, customer_id=customer.id) if customer is not None else None


def resolve_customer(session: Session, tracker: Tracker, *, may_write: bool = True
                     ) -> tuple[CustomerProfile | None, list[EventType]]:
    """Who the customer is: the chat's verified link (see :func:`linked_customer`), checked on every action.

    Returns the profile (or None) and the slot events that bring ``customer_id``/``customer_name`` in line:
    set for a newly found link, cleared when the verification expired or the customer was erased.
    ``may_write=False`` in a read-only unit of work: the link's last-seen time is then left as it is.
    """
    slot = tracker.get_slot("customer_id")
    # Touching the link's last-seen time writes: only on the first look-up, as before the slot is set.
    profile = linked_customer(session, tracker, touch=may_write and slot is None)
    if profile is None:
        return None, ([] if slot is None else forget_customer())
    if slot is not None and int(slot) == profile.id:
        return profile, []
    return profile, customer_slots(profile)


def forget_customer() -> list[EventType]:
    return [SlotSet("customer_id", None), SlotSet("customer_name", None)]


def verification_expired(tracker: Tracker, identity_events: list[EventType]) -> bool:
    """Whether these identity events end a verification the conversation had (its link expired or is gone)."""
    return tracker.get_slot("customer_id") is not None and any(
        e.get("event") == "slot" and e.get("name") == "customer_id" and e.get("value") is None for e in identity_events)


def resolving_writes(tracker: Tracker) -> bool:
    """Whether :func:`resolve_customer` will write: finding a chat's linked identity with the ``customer_id`` slot
    still empty touches the link's last-seen time.

    With the slot set, or no channel, it only reads. On SQLite a read-only look-up first says whether the chat
    has a verification link at all (most chats do not, until they verify), so their units of work need not queue
    for the single write lock. On PostgreSQL writers do not block each other: no look-up, the answer is yes.
    Blocking: call it from a worker thread."""
    channel = sender_channel(tracker)
    if tracker.get_slot("customer_id") is not None or not channel:
        return False
    settings = get_settings()
    if not is_sqlite(settings.database_url):
        return True
    with crm_session(write=False) as session:
        return is_linked(session, channel=channel, external_id=tracker.sender_id,
                         verified_within=settings.verification_ttl)


def customer_slots(profile: CustomerProfile) -> list[EventType]:
    return [SlotSet("customer_id", float(profile.id)), SlotSet("customer_name", profile.first_name)]


@dataclass
class Turn:
    """Everything an action needs for one run."""

    dispatcher: CollectingDispatcher
    tracker: Tracker
    domain: dict[str, Any]
    session: Session
    customer: CustomerProfile | None


class CrmAction(Action, ABC):
    """An action that works on the CRM. Subclasses implement ``name`` and ``act``.

    Runs ``act`` in a worker thread (database calls must not block the action server's event
    loop) inside one unit of work, and turns any failure into a helpful reply, never silence.
    An action that only reads sets ``writes = False``: its unit of work is then read-only unless
    resolving the customer writes (see :func:`resolving_writes`). One that writes only in some turns
    overrides :meth:`writes_in`.
    """

    writes: ClassVar[bool] = True

    def writes_in(self, tracker: Tracker) -> bool:
        """Whether this turn's unit of work may write (on SQLite it then queues for the write lock).
        Runs in the worker thread, before the unit of work."""
        return self.writes or resolving_writes(tracker)

    @abstractmethod
    def name(self) -> str:
        """The action's name in domain.yml."""

    @abstractmethod
    def act(self, turn: Turn) -> list[EventType]:
        """The action's work; its returned events follow the identity events."""

    def answers_in_place(self, tracker: Tracker) -> bool:
        """For a form's closing action: whether the form's validation action may run it itself, in the
        validation's own call (see :meth:`CrmFormValidationAction.closing_action`). False when its events would
        start another form: the closing events are applied inside the form action, which deactivates after them."""
        return True

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        try:
            return await asyncio.to_thread(self.run_in_thread, dispatcher, tracker, domain)
        except Exception:
            logger.exception("action %s failed (conversation %s)", self.name(), tracker.sender_id)
            dispatcher.utter_message(text=CRM_UNAVAILABLE)
            return []

    def run_in_thread(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
                      ) -> list[EventType]:
        """The action's work, blocking (call it from a worker thread); raises what ``act`` or the CRM raised."""
        write = self.writes_in(tracker)
        while True:  # twice at most: the second unit of work writes
            with crm_session(write=write) as session:
                customer, events = resolve_customer(session, tracker, may_write=write)
                # A read-only unit of work finds a linked customer with the slot empty only when the chat was
                # verified after writes_in looked: the turn may write after all, so it starts again as a write.
                if write or customer is None or tracker.get_slot("customer_id") is not None:
                    if verification_expired(tracker, events):
                        logger.info("verification of conversation %s expired", tracker.sender_id)
                        dispatcher.utter_message(text=VERIFICATION_EXPIRED)
                        tracker.add_slots(events)  # the action sees the conversation as anonymous
                    return events + self.act(Turn(dispatcher, tracker, domain, session, customer))
            write = True


def end_form_unanswered(dispatcher: CollectingDispatcher) -> list[EventType]:
    """A form turn the CRM could not serve (unreachable, or the validation failed): says so and ends the form,
    then listens. Otherwise the form would ask for details nobody can check now (a verified customer was
    asked for their e-mail address again during a database outage, and their answer then got no reply at
    all: tests/e2e/test_outages.py), or its closing action would run on unfilled slots. The slots stay, so
    the customer's next request picks up what they already said."""
    dispatcher.utter_message(text=CRM_UNAVAILABLE)
    return [SlotSet("requested_slot", None), ActiveLoop(None), FollowupAction("action_listen")]


def completes_form(events: list[EventType], requested: str | None) -> bool:
    """Whether a validation's events complete the form (the next requested slot is none) and Rasa will accept
    them: with a slot asked for, Rasa rejects a form turn that set no other slot (rasa.core.actions.forms)."""
    if any(e.get("event") in ("followup", "active_loop") for e in events):
        return False  # the validation ended the form itself (end_form_unanswered, an interruption)
    asked = [e for e in events if e.get("event") == "slot" and e.get("name") == "requested_slot"]
    if not asked or asked[-1].get("value") is not None:
        return False
    return requested is None or any(e.get("event") == "slot" and e.get("name") != "requested_slot" for e in events)


class CrmFormValidationAction(FormValidationAction, ABC):
    """A form validation action that first links the chat to its customer when it can.

    rasa-sdk calls ``extract_<slot>``/``validate_<slot>`` directly from its async ``run``; ours are plain
    functions that query the CRM. So the whole validation runs in a worker thread, on an event loop of
    its own, and the action server's loop keeps serving other conversations meanwhile.
    """

    @abstractmethod
    def name(self) -> str:
        """``validate_<form name>``."""

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        return await asyncio.to_thread(self._run_in_thread, dispatcher, tracker, domain)

    def _run_in_thread(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        try:
            identity_events = self._identity_events(tracker)
        except Exception:
            logger.exception("customer lookup failed (conversation %s)", tracker.sender_id)
            return end_form_unanswered(dispatcher)
        if verification_expired(tracker, identity_events):
            logger.info("verification of conversation %s expired", tracker.sender_id)
            dispatcher.utter_message(text=VERIFICATION_EXPIRED)
        tracker.add_slots(identity_events)
        try:
            interrupted = self.interrupt(dispatcher, tracker, domain)
            if interrupted is not None:
                return identity_events + interrupted
            requested = tracker.get_slot("requested_slot")
            validation = super(CrmFormValidationAction, self).run(dispatcher, tracker, domain)
            events = identity_events + asyncio.run(validation)
        except Exception:
            logger.exception("form validation failed (conversation %s)", tracker.sender_id)
            return identity_events + end_form_unanswered(dispatcher)
        if completes_form(events, requested):
            return events + self._close_in_place(dispatcher, tracker, domain)
        return events

    def closing_action(self) -> CrmAction | None:
        """The action the form's rule runs once the form is complete (bot/data), or None.

        When the validation completes the form, this call runs that action too and ends the turn with
        ``FollowupAction("action_listen")``: the customer's answer costs Rasa one call to the action server
        instead of two (a completed verification's reply waited 245 ms at the median for its two calls under
        load, one call's 102 ms; README, Performance). The rule still runs it when :meth:`CrmAction.answers_in_place`
        says no. A closing action that fails here is rolled back and answered as :meth:`CrmAction.run` answers a
        failure: ``CRM_UNAVAILABLE``, once."""
        return None

    def _close_in_place(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        # The tracker already holds the identity and validation slots (added above and by rasa-sdk's validation).
        closing = self.closing_action()
        if closing is None or not closing.answers_in_place(tracker):
            return []
        tracker.slots["requested_slot"] = None
        tracker.active_loop = {}  # as the closing action sees the conversation after the form
        # What this call said so far is part of the conversation the closing action reads (an escalation's
        # transcript), as it would be after the form's own events were logged.
        tracker.events = list(tracker.events) + [
            {"event": "bot", "text": m.get("text"), "timestamp": time.time()} for m in dispatcher.messages]
        own = CollectingDispatcher()
        try:
            closing_events = closing.run_in_thread(own, tracker, domain)
        except Exception:
            # Its unit of work rolled back. What the rule's own call did on a failure: say so once and listen, the
            # request's slots kept (running it again now would wait as long on the same locked or absent database).
            logger.exception("%s failed inside %s (conversation %s)", closing.name(), self.name(), tracker.sender_id)
            dispatcher.utter_message(text=CRM_UNAVAILABLE)
            return [FollowupAction("action_listen")]
        dispatcher.messages.extend(own.messages)
        if any(e.get("event") == "followup" for e in closing_events):
            return closing_events
        return closing_events + [FollowupAction("action_listen")]

    def interrupt(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType] | None:
        """A message that is not an answer to the form (a request for a person, another question): the
        events that handle it instead of slot validation, or None to validate as usual. Runs in the
        worker thread, before any ``extract_``/``validate_`` method."""
        return None

    @staticmethod
    def _identity_events(tracker: Tracker) -> list[EventType]:
        write = resolving_writes(tracker)
        with crm_session(write=write) as session:
            return resolve_customer(session, tracker, may_write=write)[1]
