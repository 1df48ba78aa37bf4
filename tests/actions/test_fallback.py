"""The fallback offers the intents the classifier nearly chose, and a menu when it had no idea."""

from __future__ import annotations

from actions.fallback import ActionFallback, closest_options

from .conftest import run_action, tracker_from


def fallback_conversation(ranking: list[tuple[str, float]]):
    top = {"name": "nlu_fallback", "confidence": 0.45}
    base = tracker_from("greet_socketio").events[:3]
    user = {"event": "user", "text": "the thing about my stuff", "input_channel": "socketio",
            "parse_data": {"intent": top, "entities": []}}
    latest = {"text": user["text"], "intent": top, "entities": [],
              "intent_ranking": [top] + [{"name": n, "confidence": c} for n, c in ranking]}
    return tracker_from("greet_socketio", events=base + [user], slots={}, latest_message=latest)


def test_near_misses_become_did_you_mean_buttons_best_first():
    tracker = fallback_conversation([("ask_ticket_status", 0.41), ("greet", 0.2), ("report_problem", 0.3),
                                     ("book_technician", 0.12), ("list_devices", 0.11), ("thank", 0.05)])
    events, messages = run_action(ActionFallback(), tracker)
    assert messages[0]["text"].startswith("Sorry, I'm not sure I understood. Did you mean")
    # Small talk is never offered; at most three; ranked as the classifier ranked them.
    assert [b["payload"] for b in messages[0]["buttons"]] == ["/ask_ticket_status", "/report_problem", "/book_technician"]
    assert [b["title"] for b in messages[0]["buttons"]][0] == "Check a ticket's status"
    assert [e["event"] for e in events] == ["rewind"]


def test_without_a_plausible_candidate_the_menu_of_what_the_bot_does_is_shown():
    tracker = fallback_conversation([("greet", 0.3), ("list_devices", 0.05)])
    _, messages = run_action(ActionFallback(), tracker)
    assert messages[0]["text"].startswith("Sorry, I didn't quite get that.")
    assert [b["payload"] for b in messages[0]["buttons"]] == ["/list_devices", "/report_problem", "/ask_ticket_status"]


def test_closest_options_tolerates_a_message_without_a_ranking():
    assert closest_options({}) == []
    assert closest_options({"intent_ranking": [{"name": "report_problem"}]}) == []
