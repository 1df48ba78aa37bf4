"""``POST /chat/missed``: the pieces of the bot's messages a web chat may have missed, read from Rasa's tracker store,
only for the holder of the session's key, as the channel emits them (``ts`` exact, ``part``, buttons, agent's name),
in pages, rate-limited, and 503 (not an empty answer) while the store cannot be read."""

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
        {"event": "bot", "timestamp": 12.5, "text": "Sam: on my way", "data": {}, "metadata": {"agent_name": "Sam"}},
    ])
    tracker.append("another-session-00001", [{"event": "bot", "timestamp": 11.0, "text": "not yours", "data": {}}])
    before = time.time()
    resp = client.post("/chat/missed", json=chat(SESSION))
    assert resp.status_code == 200 and before <= resp.json()["now"] <= time.time() and resp.json()["more"] is False
    blank = {"text": "", "buttons": [], "image": None, "attachment": None, "agent_name": None}
    assert resp.json()["pieces"] == [
        {**blank, "ts": 10.5, "part": 0, "text": "Hi!"},
        {**blank, "ts": 10.5, "part": 1, "text": "How can I help?", "buttons": [{"title": "My devices", "payload": "/list_devices"}]},
        {**blank, "ts": 11.75, "part": 0, "image": "https://example.com/a.png"},
        {**blank, "ts": 12.5, "part": 0, "text": "Sam: on my way", "agent_name": "Sam"}]
    after = client.post("/chat/missed", json=chat(SESSION, after=10.5)).json()["pieces"]
    assert [(p["ts"], p["part"]) for p in after] == [(11.75, 0), (12.5, 0)]
    # The session id alone (agents see it, logs may hold it) reads nothing; a malformed request is refused.
    assert client.post("/chat/missed", json={"session_id": SESSION}).status_code == 403
    assert client.post("/chat/missed", json={**chat(SESSION), "session_key": "0" * 32}).status_code == 403
    assert client.post("/chat/missed", json=chat(SESSION, after=-1)).status_code == 422
    assert client.post("/chat/missed", json=chat(SESSION, after="soon")).status_code == 422


def test_a_long_gap_comes_in_pages_oldest_first(client, tracker):
    tracker.append(SESSION, [{"event": "bot", "timestamp": 100.0 + i, "text": f"m{i}", "data": {}}
                             for i in range(MISSED_LIMIT + 5)])
    first = client.post("/chat/missed", json=chat(SESSION)).json()
    assert [p["text"] for p in first["pieces"]] == [f"m{i}" for i in range(MISSED_LIMIT)] and first["more"] is True
    assert first["next_after"] == 100.0 + MISSED_LIMIT - 1
    rest = client.post("/chat/missed", json=chat(SESSION, after=first["next_after"])).json()
    assert [p["text"] for p in rest["pieces"]] == [f"m{i}" for i in range(MISSED_LIMIT, MISSED_LIMIT + 5)]
    assert rest["more"] is False and rest["next_after"] == 100.0 + MISSED_LIMIT + 4


def test_a_page_with_nothing_to_show_still_moves_the_cursor_on(client, tracker):
    # Custom payloads only (the page shows nothing for them), then a message: paging must not stall on them.
    tracker.append(SESSION, [{"event": "bot", "timestamp": 200.0 + i, "text": None, "data": {"custom": {"n": i}}}
                             for i in range(MISSED_LIMIT + 1)] + [{"event": "bot", "timestamp": 300.0, "text": "after them"}])
    first = client.post("/chat/missed", json=chat(SESSION, after=150.0)).json()
    assert first["pieces"] == [] and first["more"] is True and first["next_after"] == 200.0 + MISSED_LIMIT - 1
    rest = client.post("/chat/missed", json=chat(SESSION, after=first["next_after"])).json()
    assert [p["text"] for p in rest["pieces"]] == ["after them"] and rest["more"] is False
    empty = client.post("/chat/missed", json=chat(SESSION, after=400.0)).json()
    assert empty["pieces"] == [] and empty["next_after"] == 400.0


def test_an_unreadable_store_is_a_503_and_no_store_is_no_pieces(client, monkeypatch):
    # A tracker store whose server refuses connections (as while it restarts): the page must not move its clock on.
    monkeypatch.setenv("TRACKER_STORE_URL", "postgresql+psycopg://postgres@127.0.0.1:9/tracker_away")
    get_settings.cache_clear()
    resp = client.post("/chat/missed", json=chat(SESSION))
    assert resp.status_code == 503 and "now" not in resp.json()
    monkeypatch.setenv("TRACKER_STORE_URL", "")
    monkeypatch.setenv("TRACKER_DIALECT", "")
    get_settings.cache_clear()
    resp = client.post("/chat/missed", json=chat(SESSION))
    assert resp.status_code == 200 and resp.json()["pieces"] == [] and resp.json()["more"] is False
    get_settings.cache_clear()


def test_one_chat_is_rate_limited(client, tracker):
    session = f"missed-rate-{time.time_ns()}"  # the in-process counters outlive one test
    assert client.post("/chat/missed", json={"session_id": session, "session_key": "0" * 32}).status_code == 403
    codes = [client.post("/chat/missed", json=chat(session)).status_code for _ in range(31)]
    assert codes[:30] == [200] * 30 and codes[30] == 429  # the refused call without the key was not counted
    assert client.post("/chat/missed", json=chat(session + "-other")).status_code == 200  # another chat is not


def test_a_clock_that_is_not_a_number_is_a_422_not_a_500(client):
    # Python's JSON reader takes NaN and Infinity; the answer (next_after) could then not be written as JSON.
    for bad in ("NaN", "Infinity", "-1"):
        body = '{"session_id": "%s", "session_key": "%s", "after": %s}' % (SESSION, chat(SESSION)["session_key"], bad)
        resp = client.post("/chat/missed", content=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == 422, (bad, resp.status_code)


def test_a_422_does_not_echo_what_was_sent(client):
    # FastAPI echoes the failing input by default: for a missing field, the whole body, the password with it.
    resp = client.post("/api/auth/token", json={"password": "hunter2-secret"})
    assert resp.status_code == 422 and "hunter2" not in resp.text
    assert resp.json()["detail"][0]["loc"] == ["body", "username"]
