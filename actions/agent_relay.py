"""While and after a person owns a conversation: the agent's name as the customer sees it, relaying agents'
replies, the queue timeout and the handback (the escalation itself: ``actions.handoff``).

The web service runs these through Rasa's HTTP API (``POST /conversations/{id}/execute``).
"""

from __future__ import annotations

from typing import Any

from rasa_sdk.events import ActiveLoop, ConversationResumed, EventType, SlotSet
from sqlalchemy.orm import Session

from actions.base import CrmAction, Turn
from crm_store.enums import HandoffStatus
from crm_store.repositories.agent_replies import claim_agent_messages
from crm_store.repositories.customers import get_customer
from crm_store.repositories.handoffs import claim_bot_resume, get_active_handoff, get_latest_handoff
from crm_store.repositories.timeout_notices import mark_told, owed_notice
from crm_store.repositories.users import get_user_by_username

# Role words some accounts carry as their full name: no name to show a customer.
_ROLE_NAMES = {"administrator", "admin", "supervisor", "agent", "system", "root", "operator", "staff"}
TEAM_NAME = "Service team"


def display_name(user: Any) -> str | None:
    """The first name a customer may see for a console user; None for a role account ("Administrator") or one
    without a real name (never the internal user name)."""
    full = (getattr(user, "full_name", None) or "").strip()
    if not full or full.lower() == str(getattr(user, "username", "")).lower():
        return None
    first = full.split()[0]
    return None if first.lower().strip(".") in _ROLE_NAMES else first


def agent_display_name(session: Session, username: str) -> str:
    """The agent's first name as the customer sees it, or "Service team"."""
    return display_name(get_user_by_username(session, username=username)) or TEAM_NAME


def joined_notice(name: str) -> str:
    if name == TEAM_NAME:
        return "A person from our service team has joined the chat."
    return f"{name} from our service team has joined the chat."


def announce_agent(turn: Turn, handoff: Any, name: str) -> list[EventType]:
    """"<name> joined" once per handoff (slot agent_joined holds the handoff announced)."""
    if handoff is None or turn.tracker.get_slot("agent_joined") == float(handoff.id):
        return []
    turn.dispatcher.utter_message(text=joined_notice(name), agent_joined=name)
    return [SlotSet("agent_joined", float(handoff.id))]


class ActionAgentJoined(CrmAction):
    """Tells the customer a person has taken their conversation (the web service may run it on claim)."""

    writes = False

    def name(self) -> str:
        return "action_agent_joined"

    def act(self, turn: Turn) -> list[EventType]:
        handoff = get_active_handoff(turn.session, conversation_id=turn.tracker.sender_id)
        if handoff is None or handoff.assignee is None:
            return []
        return announce_agent(turn, handoff, display_name(handoff.assignee) or TEAM_NAME)


class ActionRelayAgentMessages(CrmAction):
    """Delivers agents' pending replies to the customer's channel (called by the web service)."""

    def name(self) -> str:
        return "action_relay_agent_messages"

    def act(self, turn: Turn) -> list[EventType]:
        # Claimed (conditional UPDATE per reply) and committed before anything is said: of racing relays
        # (the reply route, the retry job of another replica) each reply goes out once, and a reply is
        # never shown without being recorded as delivered.
        handoff = get_active_handoff(turn.session, conversation_id=turn.tracker.sender_id)
        claimed = claim_agent_messages(turn.session, conversation_id=turn.tracker.sender_id)
        lines = [(agent_display_name(turn.session, m.author), m.author, m.body) for m in claimed]
        turn.session.commit()
        events: list[EventType] = []
        if lines:
            events = announce_agent(turn, handoff, lines[0][0]) or []
        for name, author, body in lines:
            # "agent" ends up in the BotUttered metadata: the console tells agents' lines from the bot's by it;
            # "agent_name" is what a chat client may show as the sender instead of the bot.
            turn.dispatcher.utter_message(text=f"{name}: {body}", agent=author, agent_name=name)
        return events


class ActionQueueTimeout(CrmAction):
    """Nobody was free in time (the web service moved the handoff to callbacks): resume and say what happens."""

    def name(self) -> str:
        return "action_queue_timeout"

    def act(self, turn: Turn) -> list[EventType]:
        sender = turn.tracker.sender_id
        handoff = owed_notice(turn.session, conversation_id=sender)
        # Recorded (conditionally) and committed before speaking: the sweeper retries a notice whose call
        # failed, and a retry that raced a slow first run, or followed one whose answer was lost, says nothing.
        # At most once, then: if Rasa dies between this commit and the message, the notice is not said again.
        if handoff is None or not mark_told(turn.session, handoff_id=handoff.id):
            latest = get_latest_handoff(turn.session, conversation_id=sender)
            # Nothing to say, but a callback's conversation is the bot's again: a retry whose first run was
            # told but never reached Rasa's tracker (Rasa died) must still resume it, or it stays paused.
            # An agent took it meanwhile (assigned) or it is queued: stay paused.
            return [ConversationResumed()] if latest and latest.status is HandoffStatus.CALLBACK else []
        record = get_customer(turn.session, customer_id=handoff.customer_id) if handoff.customer_id else None
        how = (f"call you back on {record.phone}" if record and record.phone
               else f"e-mail you at {record.email}" if record else "get back to you")
        number = handoff.ticket.number if handoff.ticket else None
        turn.session.commit()
        turn.dispatcher.utter_message(
            text="I'm sorry, everyone in our team is still busy. Rather than keep you waiting, I've passed your "
            f"request on{f' with ticket {number}' if number else ''}: an agent will {how} as soon as possible. "
            "In the meantime I'm back and happy to help with your appliances and tickets."
        )
        return [ConversationResumed()]


class ActionHandback(CrmAction):
    """The agent handed the conversation back: the bot resumes and asks for a rating."""

    def name(self) -> str:
        return "action_handback"

    def act(self, turn: Turn) -> list[EventType]:
        handoff = get_latest_handoff(turn.session, conversation_id=turn.tracker.sender_id)
        events: list[EventType] = [ConversationResumed()]
        if handoff is None:
            return events
        # Recorded (conditionally) and committed before speaking: a repeated or racing handback call
        # resumes the bot again but tells the customer and asks for a rating once.
        if not claim_bot_resume(turn.session, handoff_id=handoff.id):
            return events
        agent = (display_name(handoff.assignee) if handoff.assignee else None) or "Our team"
        turn.session.commit()
        if handoff.status is HandoffStatus.RESOLVED:
            text = f"{agent} has marked your request as solved and handed you back to me, the virtual assistant."
        else:
            text = f"{agent} has handed you back to me, the virtual assistant. I'm here for your appliances and tickets."
        turn.dispatcher.utter_message(text=text)
        turn.dispatcher.utter_message(response="utter_ask_csat_score")
        return events + [
            SlotSet("handoff_id", float(handoff.id)),
            SlotSet("csat_score", None),
            SlotSet("csat_comment", None),
            ActiveLoop("csat_form"),
            SlotSet("requested_slot", "csat_score"),
        ]
