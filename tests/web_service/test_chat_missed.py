"""``POST /chat/missed``: the bot's messages a web chat may have missed, read from Rasa's tracker store, only for
the holder of the session's key, as the page needs them (``ts`` exact, buttons, pieces it can cut)."""

from __future__ import annotations

import time

from tests.web_service.conftest import chat
from web_service.routes.chat import MISSED_LIMIT
from web_service.settings import get_settings

SESSION = "missed-test-session-0001"


def test_the_bot_messages_after_the_given_time_for_the_key_holder_only(client, tracker):
    tracker.append(SESSION, [
        {"event": "user", "timestamp": 10.0, "text": "my customer text"},
        {"event": "bot", "timestamp": 10.5, "text": "Hi!\n\nHow can I help?",
         "data": {"buttons": [{"title": "My devices", "payload": "/list_devices"}]}},
        {"event": "bot", "timestamp": 11.75, "text": None, "data": {"image": "https://example.com/a.png"}},
        {"event": "bot", "timestamp": 12.0, "text": None, "data": {"custom": {"anything": 1}}},  # nothing the page shows
    ])
    tracker.append("another-session-00001", [{"event": "bot", "timestamp": 11.0, "text": "not yours", "data": {}}])
    before = time.time()
    resp = client.post("/chat/missed", json=chat(SESSION))
    assert resp.status_code == 200 and before <= resp.json()["now"] <= time.time()
    assert resp.json()["messages"] == [
        {"ts": 10.5, "text": "Hi!\n\nHow can I help?", "buttons": [{"title": "My devices", "payload": "/list_devices"}], "image": None},
        {"ts": 11.75, "text": "", "buttons": [], "image": "https://example.com/a.png"}]
    assert [m["ts"] for m in client.post("/chat/missed", json=chat(SESSION, after=10.5)).json()["messages"]] == [11.75]
    # The session id alone (agents see it, logs may hold it) reads nothing; a malformed request is refused.
    assert client.post("/chat/missed", json={"session_id": SESSION}).status_code == 403
    assert client.post("/chat/missed", json={**chat(SESSION), "session_key": "0" * 32}).status_code == 403
    assert client.post("/chat/missed", json=chat(SESSION, after=-1)).status_code == 422
    assert client.post("/chat/missed", json=chat(SESSION, after="soon")).status_code == 422


def test_at_most_the_latest_messages_and_nothing_without_a_tracker_store(client, tracker, monkeypatch):
    tracker.append(SESSION, [{"event": "bot", "timestamp": 100.0 + i, "text": f"m{i}", "data": {}}
                             for i in range(MISSED_LIMIT + 5)])
    got = client.post("/chat/missed", json=chat(SESSION)).json()["messages"]
    assert [m["text"] for m in got] == [f"m{i}" for i in range(5, MISSED_LIMIT + 5)]
    monkeypatch.setenv("TRACKER_STORE_URL", "")
    monkeypatch.setenv("TRACKER_DIALECT", "")
    get_settings.cache_clear()
    resp = client.post("/chat/missed", json=chat(SESSION))
    assert resp.status_code == 200 and resp.json()["messages"] == []
