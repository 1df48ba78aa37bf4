"""The customer's privacy requests from the chat: export summary, erasure only after confirmation,
device alerts switched off with a recorded consent change."""

from __future__ import annotations

from sqlalchemy import select

from actions.customers import ActionResumeRequest
from actions.privacy import ActionConfirmErasure
from crm_store.db import session_scope
from crm_store.enums import HandoffReason
from crm_store.models import AccessAudit, Customer, ErasureRequest, Handoff, utcnow
from crm_store.repositories.console import add_attachment
from crm_store.repositories.privacy import consent_history
from tests.actions.conftest import run_action, slots_of, tracker_from


def _resume(request: str):  # type: ignore[no-untyped-def]
    return run_action(ActionResumeRequest(), tracker_from("linked_request", slots={"customer_id": 1.0,
                                                                                  "pending_request": request}))


def test_export_request_sums_up_and_is_audited_without_sending_the_archive_in_the_chat(crm_url):
    with session_scope(crm_url) as s:  # a photo Anna sent in a chat with an agent
        handoff = Handoff(conversation_id="anna-photo-chat", customer_id=1, reason=HandoffReason.CUSTOMER_REQUEST,
                          trigger_key="customer_request", summary="", first_response_due_at=utcnow())
        s.add(handoff)
        s.flush()
        add_attachment(s, conversation_id=handoff.conversation_id, handoff=handoff, ticket=None,
                       filename="drum.png", content_type="image/png", data=b"\x89PNG\r\n\x1a\n")
    events, messages = _resume("data_export")
    assert "3 purchase(s), 3 appliance(s)" in messages[0]["text"] and "e-mail address registered" in messages[0]["text"]
    assert "1 photo(s) you sent in the chat" in messages[0]["text"]
    assert "anna.schmidt@example.com" not in messages[0]["text"]
    with session_scope(crm_url, write=False) as s:
        row = s.scalar(select(AccessAudit).where(AccessAudit.action == "export_requested"))
        assert (row.actor, row.customer_id) == ("customer:chat", 1)


def test_erasure_is_explained_and_needs_confirmation(crm_url):
    events, messages = _resume("erasure")
    assert "cannot be undone" in messages[0]["text"]
    assert [b["payload"] for b in messages[0]["buttons"]] == ["/confirm_erasure", "/deny"]
    assert slots_of(events)["privacy_pending"] == "erasure"
    with session_scope(crm_url, write=False) as s:
        assert s.scalar(select(ErasureRequest)) is None  # nothing happens before the confirmation
    # A confirmation the bot did not ask for queues nothing.
    events, messages = run_action(ActionConfirmErasure(), tracker_from("linked_request", slots={"customer_id": 1.0}))
    assert "delete my data" in messages[0]["text"]
    with session_scope(crm_url, write=False) as s:
        assert s.scalar(select(ErasureRequest)) is None
    events, messages = run_action(ActionConfirmErasure(), tracker_from(
        "linked_request", slots={"customer_id": 1.0, "privacy_pending": "erasure"}))
    assert "erasure request is registered" in messages[0]["text"]
    assert slots_of(events)["customer_id"] is None
    with session_scope(crm_url, write=False) as s:
        req = s.scalar(select(ErasureRequest))
        assert (req.customer_id, req.source, req.status) == (1, "chat", "pending")
        assert req.not_before > req.created_at  # starts after this turn is stored


def test_stop_device_alerts_revokes_proactive_consent_with_history(crm_url):
    events, messages = _resume("revoke_alerts")
    assert "won't send you messages" in messages[0]["text"]
    with session_scope(crm_url, write=False) as s:
        assert s.get(Customer, 1).consent_proactive is False
        assert [(e.kind, e.granted, e.source, e.actor) for e in consent_history(s, customer_id=1)] == [
            ("proactive", False, "chat", "customer")]
