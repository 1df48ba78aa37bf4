"""Verifying an anonymous chat against the CRM, shared by every form that needs to know the customer."""

from __future__ import annotations

import logging
import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.base import crm_session, customer_slots, sender_channel
from actions.settings import get_settings
from crm_store.enums import JourneyStage
from crm_store.repositories.customers import get_profile, link_identity, verify_customer
from crm_store.repositories.interactions import record_interaction
from crm_store.repositories.lockouts import (
    VERIFY_CLIENT,
    VERIFY_IDENTITY,
    LockoutPolicy,
    clear_failures,
    release_attempt,
    reserve_attempts,
)

logger = logging.getLogger(__name__)

# The local part takes the characters RFC 5322 allows unquoted (o'neil@…, a+b@…) but & / = ? (they join an
# address to the text around it in URLs and "email=…", and are rare in real addresses), starting with a letter
# or digit so that a quote before it stays out: a narrower class matched
# only the tail of such an address, so its owner could never verify and failures were counted under someone
# else's address (the one the tail spells), where their erasure and export did not find them.
EMAIL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.!#$%'*+^_`{|}~-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
LOCKED_OUT_TEXT = (
    "I'm sorry, there have been too many attempts to verify these details, so I can't check them right now. "
    "Please try again later, or contact our service team by phone or e-mail."
)


def client_key(tracker: Tracker) -> str | None:
    """The chat client's key set by the input guard (a hash of its address), when the channel knows it."""
    metadata = (tracker.latest_message or {}).get("metadata") or {}
    key = metadata.get("client") if isinstance(metadata, dict) else None
    return key if isinstance(key, str) and key else None


REFERENCE_RE = re.compile(r"\b(ORD-\d{4}-\d{6}|(?:FR|WM|DW|BL|AC)\d{2}-\d{8})\b", re.IGNORECASE)


class VerificationMixin:
    """Validators for ``verify_email`` and ``verify_reference``, shared by every form that verifies.

    Slots needed in domain.yml: verify_email, verify_reference, verify_attempts, verify_locked,
    customer_id, customer_name. A failed check never says which part was wrong, so that nobody
    can learn whether an e-mail address is registered.
    """

    VERIFY_SLOTS = ["verify_email", "verify_reference"]

    @staticmethod
    def needs_verification(tracker: Tracker) -> bool:
        return tracker.get_slot("customer_id") is None and not tracker.get_slot("verify_locked")

    def extract_verify_email(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        """An e-mail address anywhere in the message, also when the form asked something else or has just
        started ("anna@example.com ORD-2021-000101", "hi, I'm anna@example.com, order ...")."""
        if tracker.get_slot("requested_slot") == "verify_email":
            return {}  # the from_text mapping has it; validation picks the address out of it
        match = EMAIL_RE.search(str((tracker.latest_message or {}).get("text") or ""))
        return {"verify_email": match.group(0)} if match else {}

    def extract_verify_reference(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        """An order or serial number anywhere in the message, when an e-mail address is known or comes with it."""
        if tracker.get_slot("requested_slot") == "verify_reference":
            return {}
        match = REFERENCE_RE.search(str((tracker.latest_message or {}).get("text") or ""))
        if match is None or not EMAIL_RE.search(str(tracker.get_slot("verify_email") or "")):
            return {}
        return {"verify_reference": match.group(1)}

    def validate_verify_email(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        match = EMAIL_RE.search(str(slot_value or ""))
        if match is None:
            dispatcher.utter_message(
                text="That doesn't look like an e-mail address. Please type it like name@example.com, or say \"stop\"."
            )
            return {"verify_email": None}
        return {"verify_email": match.group(0).lower()}

    def validate_verify_reference(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> dict[str, Any]:
        match = REFERENCE_RE.search(str(slot_value or ""))
        if match is None:
            dispatcher.utter_message(
                text="I need an order number like ORD-2024-000123 or a serial number like WM80-23000123."
            )
            return {"verify_reference": None}
        # The e-mail slot may hold the whole message it came in ("it's anna@example.com, order ...").
        found = EMAIL_RE.search(str(tracker.get_slot("verify_email") or ""))
        if found is None:
            return {"verify_reference": None}  # the e-mail was refused (and said so) in this same message
        email = found.group(0).lower()
        client = client_key(tracker)
        settings = get_settings()
        identity_policy = LockoutPolicy(max_failures=settings.verify_max_failures_per_identity)
        client_policy = LockoutPolicy(max_failures=settings.verify_max_failures_per_client)
        with crm_session() as session:
            # Counted outside the conversation (a new chat, a new session or a typed command lifts nothing) and
            # before the check, in its own transaction: racing guesses from several action servers get at most
            # the policy's number of checks between them.
            locked = reserve_attempts(session, [(VERIFY_IDENTITY, email, identity_policy)]
                                      + ([(VERIFY_CLIENT, client, client_policy)] if client else []))
        if locked is not None:
            logger.info("verification refused while locked out (conversation %s)", tracker.sender_id)
            dispatcher.utter_message(text=LOCKED_OUT_TEXT)
            return {"verify_email": None, "verify_reference": None, "verify_locked": True}
        profile = None
        with crm_session() as session:
            customer = verify_customer(session, email=email, reference=match.group(1))
            if customer is not None:  # a failure was counted with the reservation above
                clear_failures(session, scope=VERIFY_IDENTITY, key=email)
                if client:
                    release_attempt(session, scope=VERIFY_CLIENT, key=client, policy=client_policy)
                channel = sender_channel(tracker)
                if channel:
                    link_identity(session, channel=channel, external_id=tracker.sender_id, customer_id=customer.id)
                record_interaction(
                    session, customer_id=customer.id, stage=JourneyStage.START, event="chat_verified",
                    channel=channel, conversation_id=tracker.sender_id,
                )
                profile = get_profile(session, customer_id=customer.id)
        if customer is not None and profile is not None:
            logger.info("conversation %s verified", tracker.sender_id)
            dispatcher.utter_message(text=f"Thank you, {profile.first_name}, I've found your account.")
            slots = {e["name"]: e["value"] for e in customer_slots(profile)}
            return {"verify_reference": match.group(1).upper(), "verify_attempts": 0, **slots}

        attempts = int(tracker.get_slot("verify_attempts") or 0) + 1
        limit = get_settings().verify_max_attempts
        logger.info("verification failed for conversation %s (attempt %d of %d)", tracker.sender_id, attempts, limit)
        reset = {"verify_email": None, "verify_reference": None, "verify_attempts": attempts}
        if attempts >= limit:
            dispatcher.utter_message(
                text=(
                    "I'm sorry, I couldn't verify those details, and to protect our customers' accounts I'll stop "
                    "trying in this conversation. Our service team can help you by phone or e-mail."
                )
            )
            return {**reset, "verify_locked": True}
        left = limit - attempts
        dispatcher.utter_message(
            text=(
                "Sorry, those details don't match an account I can find. Please check the e-mail address and the "
                f"number and try again ({left} {'try' if left == 1 else 'tries'} left)."
            )
        )
        return reset
