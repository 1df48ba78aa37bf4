"""The conversation suite (bench/dialogue_suite.yml) run against a real stack over Rasa's REST channel.

Each conversation is played as a customer would: a fresh sender id, a demo customer of its own whose appliances
match what the conversation needs (``needs: {fridge: 2}`` = exactly two fridges), placeholders such as ``{email}``,
``{order}``, ``{fridge2}`` (the second fridge's serial) filled from the CRM. Every turn's replies must contain each
``expect`` entry (a string, or a list of which any one will do) and none of ``absent``; at the end ``handoff``
(queued for this conversation or not), ``tickets`` (new open tickets of the customer, not counting the handoff's
own), ``ticket_device`` (``fridge#2``: the category's n-th device in the order the bot shows them, or ``any#n``)
and ``ticket_text`` are checked against the CRM.

Used by bench/bench_dialogue.py (``make bench-dialogue``) and tests/e2e/test_dialogue_cases.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML

from crm_store.db import session_scope
from crm_store.models import Customer, Device, Purchase
from crm_store.repositories.devices import list_devices_for_customer
from crm_store.repositories.handoffs import get_latest_handoff
from crm_store.repositories.tickets import list_tickets

SUITE = pathlib.Path(__file__).with_name("dialogue_suite.yml")


@dataclass
class Outcome:
    id: str
    category: str
    passed: bool
    held_out: bool
    person_needed: bool
    handed_over: bool
    case: int | None = None
    failures: list[str] = field(default_factory=list)
    transcript: list[dict[str, Any]] = field(default_factory=list)


def load_suite(path: pathlib.Path = SUITE) -> list[dict[str, Any]]:
    return list(YAML(typ="safe").load(path.read_text())["conversations"])


class Customers:
    """Hands out demo customers (never the README's Anna, never one with open tickets) by their appliances."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.used: set[int] = set()

    def take(self, needs: dict[str, int], distinct_locations: bool = False) -> dict[str, str]:
        from sqlalchemy import select

        with session_scope(self.database_url, write=False) as session:
            ids = list(session.scalars(select(Customer.id).where(Customer.id > 1).order_by(Customer.id)))
            for customer_id in ids:
                if customer_id in self.used or list_tickets(session, customer_id=customer_id, only_open=True):
                    continue
                customer = session.get(Customer, customer_id)
                if customer is None or customer.loyalty_tier.value in ("gold", "platinum"):
                    continue
                devices = list_devices_for_customer(session, customer_id=customer_id)
                by_kind: dict[str, list[Device]] = {}
                for device in devices:
                    by_kind.setdefault(device.model.category.value, []).append(device)
                if any(len(by_kind.get(kind, [])) != n for kind, n in needs.items()):
                    continue
                if distinct_locations and any(
                        len({d.location for d in by_kind[k]}) != len(by_kind[k]) or None in {d.location for d in by_kind[k]}
                        for k in needs if needs[k] > 1):
                    continue
                order = session.scalar(select(Purchase.order_number).where(Purchase.customer_id == customer_id)
                                       .order_by(Purchase.id))
                self.used.add(customer_id)
                values = {"email": customer.email, "order": str(order), "customer_id": str(customer_id),
                          "first_name": customer.full_name.split()[0]}
                for kind, listed in by_kind.items():
                    for i, device in enumerate(listed, 1):
                        suffix = "" if i == 1 else str(i)
                        values[f"{kind}{suffix}"] = device.serial
                        values[f"{kind}{suffix}_location"] = device.location or ""
                values["_devices"] = json.dumps([[d.serial, d.model.category.value] for d in devices])
                return values
        raise LookupError(f"no unused demo customer with exactly {needs}")


def say(rasa_url: str, sender: str, message: str, timeout: float = 120, token: str | None = None) -> list[dict[str, Any]]:
    """One REST message. ``token``: the stack's REST_CHANNEL_TOKEN (a production stack's REST channel requires
    it); default: this process's environment."""
    token = os.environ.get("REST_CHANNEL_TOKEN", "") if token is None else token
    req = urllib.request.Request(f"{rasa_url}/webhooks/rest/webhook",
                                 data=json.dumps({"sender": sender, "message": message}).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _fill(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


def _device_for(spec: str, values: dict[str, str]) -> str | None:
    kind, _, index = spec.partition("#")
    devices = json.loads(values["_devices"])
    listed = [serial for serial, category in devices if kind == "any" or category == kind]
    n = int(index or 1)
    return listed[n - 1] if len(listed) >= n else None


def run_conversation(conv: dict[str, Any], rasa_url: str, database_url: str, customers: Customers,
                     rest_token: str | None = None) -> Outcome:
    values = customers.take(conv.get("needs") or {}, bool(conv.get("distinct_locations")))
    sender = f"suite-{conv['id']}-{uuid.uuid4().hex[:6]}"
    customer_id = int(values["customer_id"])
    with session_scope(database_url, write=False) as session:
        before = {t.number for t in list_tickets(session, customer_id=customer_id, only_open=True)}
    outcome = Outcome(conv["id"], conv["category"], True, bool(conv.get("held_out")), bool(conv.get("person_needed")),
                      False, conv.get("case"))
    for n, turn in enumerate(conv["turns"], 1):
        message = _fill(turn["say"], values)
        try:
            replies = say(rasa_url, sender, message, token=rest_token)
        except Exception as exc:  # a timeout or a 500 is a failed conversation, not a crashed suite
            outcome.failures.append(f"turn {n}: {exc!r}")
            break
        text = "\n".join(r.get("text") or "" for r in replies)
        outcome.transcript.append({"customer": message[:200], "bot": text})
        lowered = text.lower()
        for expected in turn.get("expect") or []:
            options = expected if isinstance(expected, list) else [expected]
            if not any(_fill(o, values).lower() in lowered for o in options):
                outcome.failures.append(f"turn {n}: expected {options!r} in {text[:300]!r}")
        for absent in turn.get("absent") or []:
            if _fill(absent, values).lower() in lowered:
                outcome.failures.append(f"turn {n}: did not expect {absent!r} in {text[:300]!r}")
        if not replies and not turn.get("silent"):
            outcome.failures.append(f"turn {n}: no reply")
    end = conv.get("end") or {}
    with session_scope(database_url, write=False) as session:
        handoff = get_latest_handoff(session, conversation_id=sender)
        outcome.handed_over = handoff is not None
        new = [t for t in list_tickets(session, customer_id=customer_id, only_open=True)
               if t.number not in before and t.category != "escalation"]
        if "handoff" in end and outcome.handed_over != bool(end["handoff"]):
            outcome.failures.append(f"end: handoff {'queued' if outcome.handed_over else 'not queued'}")
        if "tickets" in end and len(new) != int(end["tickets"]):
            outcome.failures.append(f"end: {len(new)} new tickets, expected {end['tickets']}")
        if end.get("ticket_device"):
            wanted = _device_for(end["ticket_device"], values)
            got = [t.device.serial if t.device else None for t in new]
            if got != [wanted]:
                outcome.failures.append(f"end: ticket on {got}, expected [{wanted}] ({end['ticket_device']})")
        if end.get("ticket_text"):
            bodies = " ".join((t.events[0].body or "") for t in new if t.events).lower()
            if end["ticket_text"].lower() not in bodies:
                outcome.failures.append(f"end: ticket text lacks {end['ticket_text']!r}: {bodies[:200]!r}")
    outcome.passed = not outcome.failures
    return outcome


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    """passed/total, per category, the held-out share separately, and the containment rate: of the conversations
    that needed no person, the share that ended without a handoff."""
    def counts(items: list[Outcome]) -> dict[str, int]:
        return {"passed": sum(o.passed for o in items), "total": len(items)}

    categories: dict[str, list[Outcome]] = {}
    for o in outcomes:
        categories.setdefault(o.category, []).append(o)
    no_person = [o for o in outcomes if not o.person_needed]
    cases = sorted({o.case for o in outcomes if o.case is not None})
    return {
        **counts(outcomes),
        "pass_rate": round(sum(o.passed for o in outcomes) / max(len(outcomes), 1), 4),
        "held_out": counts([o for o in outcomes if o.held_out]),
        "trained_share": counts([o for o in outcomes if not o.held_out]),
        "per_category": {k: counts(v) for k, v in sorted(categories.items())},
        "issue_cases": {str(c): counts([o for o in outcomes if o.case == c]) for c in cases},
        "containment_rate": round(sum(not o.handed_over for o in no_person) / max(len(no_person), 1), 4),
        "escalated_when_needed": {"handed_over": sum(o.handed_over for o in outcomes if o.person_needed),
                                  "total": sum(o.person_needed for o in outcomes)},
        "failures": {o.id: o.failures for o in outcomes if o.failures},
    }
