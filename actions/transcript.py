"""Reading a conversation's events for an escalation: the transcript an agent sees, what the bot tried,
fallback streaks, and how frustrated the customer sounds. Pure functions over Rasa's event dicts."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

TRANSCRIPT_MAX_TURNS = 200
# Actions that are bookkeeping, not something the bot tried for the customer.
_QUIET_ACTIONS = {"action_listen", "action_session_start", "action_extract_slots", "action_relay_agent_messages"}
_DESCRIBED_ACTIONS = {
    "verify_form": "asked for details to verify the customer",
    "problem_form": "collected the problem report",
    "action_open_ticket": "opened or updated a ticket",
    "action_resume_request": "answered a request about devices or tickets",
    "action_fallback": "did not understand a message (fallback)",
    "action_greet": "greeted the customer",
}
# A form's validation that completed it ran the form's closing action in the same call (actions/base.py,
# closing_action): Rasa logs the form, its events, then FollowupAction("action_listen") before the form ends.
# (A form the CRM could not serve ends before its follow-up: end_form_unanswered.)
_CLOSED_IN_PLACE = {"verify_form": "action_resume_request", "problem_form": "action_open_ticket"}


# What the customer's messages were about, in words an agent reads at a glance (not intent names).
INTENT_LABELS = {
    "greet": "greeting", "goodbye": "goodbye", "thank": "thanks", "affirm": "yes", "deny": "no",
    "bot_challenge": "whether they talk to a bot", "ask_capabilities": "what the assistant can do",
    "stop": "stopping a question", "out_of_scope": "something outside our service",
    "verify_identity": "verifying who they are", "inform": "giving details",
    "list_devices": "their registered appliances", "report_problem": "reporting a problem",
    "ask_ticket_status": "a ticket's status", "request_human": "asking for a person",
    "express_frustration": "frustration", "ask_device_status": "how their appliances are doing",
    "fault_self_help": "self-help for a fault", "book_technician": "booking a technician",
    "faq": "a product question",
}

def triggered(event: dict[str, Any]) -> bool:
    """A user event a service triggered (``EXTERNAL_*`` intent: a device fault, a ticket update), which
    Rasa records with the text "EXTERNAL: <intent>": never something the customer wrote."""
    intent = str(((event.get("parse_data") or {}).get("intent") or {}).get("name") or "")
    return intent.startswith("EXTERNAL_") or str(event.get("text") or "").startswith("EXTERNAL: EXTERNAL_")


def transcript(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation's messages (customer, bot, and "system" for triggered events) with their times, oldest first."""
    turns = []
    for event in events:
        kind = event.get("event")
        if kind not in ("user", "bot") or not event.get("text"):
            continue
        at = event.get("timestamp")
        system = kind == "user" and triggered(event)
        turns.append({
            "from": "system" if system else "customer" if kind == "user" else "bot",
            "text": "Proactive message: " + str(event["text"]).removeprefix("EXTERNAL: ") if system else str(event["text"])[:4000],
            "at": dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat() if at else None,
        })
    return turns[-TRANSCRIPT_MAX_TURNS:]


def fallback_streak(events: list[dict[str, Any]]) -> int:
    """How many messages in a row before this one the bot answered with its fallback."""
    streak = 0
    for event in reversed(events):
        if event.get("event") == "action":
            name = event.get("name")
            if name == "action_fallback":
                streak += 1
            elif name not in _QUIET_ACTIONS:
                break
        elif event.get("event") in ("session_started", "pause", "resume", "restart"):
            break
    return streak


def user_texts(events: list[dict[str, Any]]) -> list[str]:
    """What the customer wrote (not the events services triggered, which would read as repetition)."""
    return [str(e.get("text") or "") for e in events if e.get("event") == "user" and e.get("text") and not triggered(e)]


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def is_repetition(texts: list[str]) -> bool:
    """The latest message says (nearly) what one of the previous three said."""
    if len(texts) < 2:
        return False
    latest = _words(texts[-1])
    if len(latest) < 2:
        return False
    for earlier in texts[-4:-1]:
        other = _words(earlier)
        if other and len(latest & other) / len(latest | other) >= 0.7:
            return True
    return False


def frustration_score(texts: list[str], *, phrases: list[str], said_frustrated: bool) -> int:
    """Frustration from wording, shouting and repetition (see escalation.yml for the scale)."""
    if not texts:
        return int(said_frustrated)
    latest = texts[-1]
    lowered = latest.lower()
    score = int(said_frustrated)
    score += min(2, sum(1 for p in phrases if p.lower() in lowered))
    letters = [c for c in latest if c.isalpha()]
    shouting = latest.count("!") >= 2 or (len(letters) >= 8 and sum(c.isupper() for c in letters) / len(letters) > 0.7)
    score += int(shouting)
    score += int(is_repetition(texts))
    return score


def bot_tried(events: list[dict[str, Any]]) -> list[str]:
    """A short account of what the bot did in this conversation, for the agent."""
    tried: list[str] = []
    intents: list[str] = []
    form: str | None = None  # the action that ran last, until its form ends
    for event in events:
        kind, name = event.get("event"), event.get("name")
        if kind == "followup" and name == "action_listen" and form in _CLOSED_IN_PLACE:
            name, form = _CLOSED_IN_PLACE[form], None  # the form's closing action, run in the form's own call
        elif kind == "action":
            form = name
        elif kind == "active_loop" and name is None:
            form = None
            continue
        else:
            if kind == "user":
                intent = ((event.get("parse_data") or {}).get("intent") or {}).get("name")
                if intent and intent not in intents:
                    intents.append(intent)
            continue
        line = _DESCRIBED_ACTIONS.get(name)  # type: ignore[arg-type]
        if line and (not tried or tried[-1] != line):
            tried.append(line)
    fallbacks = sum(1 for e in events if e.get("event") == "action" and e.get("name") == "action_fallback")
    topics = [INTENT_LABELS[i] for i in intents if i in INTENT_LABELS]
    summary = [f"customer's messages were about: {', '.join(topics) or 'nothing yet'}"]
    if fallbacks:
        summary.append(f"fallbacks: {fallbacks}")
    return summary + tried
