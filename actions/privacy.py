"""The customer's own privacy requests from the chat: "send me my data", "delete my data", "stop sending me
device alerts". Each needs a verified customer (verify_form runs first, then action_resume_request calls
``privacy_reply``).

* Export: the bot sums up what is held and records the request in the access audit; the privacy team sends
  the archive to the registered e-mail address (no download link in the chat: a link would be a secret in a
  URL, readable by anyone the chat transcript reaches).
* Erasure: the bot says exactly what will happen and asks for confirmation (button ``/confirm_erasure``);
  once confirmed, an erasure request is queued to start ``CHAT_ERASURE_DELAY_SECONDS`` (60 s) later (after this
  turn is stored, so it is erased too), and the conversation continues as an anonymous one.
* Device alerts: proactive messages consent revoked, recorded with source ``chat``.
"""

from __future__ import annotations

from rasa_sdk.events import EventType, SlotSet

from actions.base import CrmAction, Turn
from actions.settings import get_settings
from crm_store.repositories.customers import get_customer
from crm_store.repositories.erasure import request_erasure
from crm_store.repositories.privacy import count_holdings, record_access, set_consent

PRIVACY_REQUESTS = ("data_export", "erasure", "revoke_alerts")

ERASURE_EXPLAINED = (
    "Erasing your data deletes your profile, purchases, registered appliances and their readings, the photos you "
    "sent us, and our chat conversations with you, and removes your name and details from your support tickets "
    "(the tickets stay as anonymous records). Your appliances will be disconnected from our service at once. "
    "This cannot be undone. "
    "Do you want me to erase your data?"
)


def privacy_reply(turn: Turn, request: str) -> list[EventType]:
    """The answer to a privacy request of the verified ``turn.customer``."""
    assert turn.customer is not None
    customer, say = turn.customer, turn.dispatcher.utter_message
    if request == "data_export":
        record_access(turn.session, actor="customer:chat", action="export_requested", customer_id=customer.id)
        held = count_holdings(turn.session, customer_id=customer.id)
        say(text=(
            f"Here is what we hold about you, {customer.first_name}: your profile and consent choices, "
            f"{held['purchases']} purchase(s), {held['devices']} "
            f"appliance(s) with their readings, {held['tickets']} support ticket(s), {held['photos']} photo(s) "
            f"you sent in the chat, and {held['chat_identities']} linked chat conversation(s). "
            "I've passed your request to our privacy team: they will send the complete archive (one JSON file) to "
            "the e-mail address registered with us, within 30 days at the latest. I don't send it here, "
            "so that nobody else who can see this chat gets it."))
        return []
    if request == "erasure":
        say(text=ERASURE_EXPLAINED, buttons=[{"title": "Yes, erase my data", "payload": "/confirm_erasure"},
                                             {"title": "No, keep it", "payload": "/deny"}])
        return [SlotSet("privacy_pending", "erasure")]
    row = get_customer(turn.session, customer_id=customer.id)
    assert row is not None
    set_consent(turn.session, customer=row, changes={"proactive": False}, source="chat", actor="customer")
    say(text=("Done: I won't send you messages about your appliances' faults any more. You'll still see them "
              "here when you come to the chat, and you can switch alerts back on through our service team."))
    return []


class ActionConfirmErasure(CrmAction):
    """Queues the erasure the customer has just confirmed (only after the bot asked, to a verified customer)."""

    def name(self) -> str:
        return "action_confirm_erasure"

    def act(self, turn: Turn) -> list[EventType]:
        if turn.customer is None or turn.tracker.get_slot("privacy_pending") != "erasure":
            turn.dispatcher.utter_message(text="If you want us to erase your data, say \"delete my data\" and "
                                               "I'll tell you what that means first.")
            return [SlotSet("privacy_pending", None)]
        request_erasure(turn.session, customer_id=turn.customer.id, requested_by="customer:chat", source="chat",
                        delay=get_settings().chat_erasure_delay)
        turn.dispatcher.utter_message(text=(
            "Your erasure request is registered. Within a few minutes everything we hold about you will be deleted "
            "as I described, including this conversation. If you write again afterwards, I won't know who you are. "
            "Goodbye, and thank you for having been our customer."))
        return [SlotSet("privacy_pending", None), SlotSet("customer_id", None), SlotSet("customer_name", None)]
