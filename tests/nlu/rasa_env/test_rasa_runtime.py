"""nlu.rasa_runtime: Rasa accepts and refuses action server responses exactly as before (its speed is measured by
`make bench-chat`, not here)."""

from __future__ import annotations

import asyncio

import jsonschema
import pytest

import nlu  # noqa: F401 - importing the package applies the speed-ups, as Rasa's component loading does
from rasa.core.actions.action import RemoteAction

GOOD = {
    "events": [{"event": "slot", "name": "customer_id", "value": 1.0, "timestamp": None}],
    "responses": [{"text": "Thank you, Anna, I've found your account.", "buttons": []}],
}
BAD = [
    {"events": "not a list", "responses": []},
    {"events": [{"event": "no_such_event"}], "responses": []},
    {"events": [{"event": "slot"}], "responses": []},  # a slot event without a name
    {"events": [], "responses": ["not an object"]},
]


def original(result: dict) -> str | None:
    """What Rasa 3.6's own check (jsonschema.validate on the response schema) says: None or the message."""
    try:
        jsonschema.validate(result, RemoteAction.action_response_format_spec())
        return None
    except jsonschema.ValidationError as err:
        return err.message


def test_the_rasa_process_uses_the_reused_validator():
    assert RemoteAction._validate_action_result.__module__ == "nlu.rasa_runtime"


def test_valid_responses_are_accepted():
    action = RemoteAction("action_greet", None)
    assert original(GOOD) is None
    assert action._validate_action_result(GOOD) is True
    assert action._validate_action_result({}) is True


@pytest.mark.parametrize("result", BAD)
def test_invalid_responses_are_refused_with_the_same_error(result: dict):
    expected = original(result)
    assert expected is not None
    with pytest.raises(jsonschema.ValidationError) as err:
        RemoteAction("action_greet", None)._validate_action_result(result)
    assert err.value.message.startswith(expected + ". Failed to validate Action server response from API")



def test_the_sqlite_tracker_store_writes_ahead_and_keeps_every_turn(tmp_path):
    import sqlite3

    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.events import ActionExecuted, UserUttered
    from rasa.shared.core.trackers import DialogueStateTracker

    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tmp_path / "tracker.db"))
    tracker = DialogueStateTracker("customer-1", slots=[])
    for turn in range(3):
        tracker.update(UserUttered(f"hello {turn}", {"name": "greet", "confidence": 1.0}))
        tracker.update(ActionExecuted("action_listen"))
        asyncio.run(store.save(tracker))
    stored = asyncio.run(store.retrieve("customer-1"))
    assert [e.text for e in stored.events if isinstance(e, UserUttered)] == ["hello 0", "hello 1", "hello 2"]
    with sqlite3.connect(tmp_path / "tracker.db") as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # stored in the file itself
