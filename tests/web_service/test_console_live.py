"""The console's and the chat's live routes: photos (type sniffed, size limit, stored with the ticket), chat
signals, canned responses' permissions, search of closed conversations, and the push hub reading the change
feed from the database (a change written elsewhere reaches a subscriber)."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select

from crm_store.db import session_scope
from crm_store.enums import HandoffStatus
from crm_store.models import ConversationSignal, Handoff, User
from tests.e2e.browser_kit import png
from tests.web_service.conftest import CHAT_SECRET, chat, login
from tests.web_service.test_handoffs import clean_queue, queue  # noqa: F401  (fixture)
from web_service.live import Hub


def conversation_of(url: str, handoff_id: int) -> str:
    with session_scope(url, write=False) as s:
        return s.get(Handoff, handoff_id).conversation_id


def upload(client, session_id: str, data: bytes, name: str = "photo.png"):  # type: ignore[no-untyped-def]
    return client.post("/chat/uploads", content=data, headers={"X-Chat-Session": session_id, "X-Filename": name,
                                                               "X-Chat-Key": str(chat(session_id)["session_key"]),
                                                               "Content-Type": "image/png"})


def test_photo_is_sniffed_limited_and_stored_with_the_ticket(client, clean_queue):  # noqa: F811
    handoff_id = queue(clean_queue)
    session_id = conversation_of(clean_queue, handoff_id)
    resp = upload(client, session_id, png(), "door%20seal.png")  # the page URL-encodes the name
    assert resp.status_code == 201, resp.text
    ticket = resp.json()["ticket"]
    staff = login(client)
    listed = client.get(f"/api/handoffs/{handoff_id}/attachments", headers=staff).json()
    assert [a["filename"] for a in listed] == ["door seal.png"] and listed[0]["content_type"] == "image/png"
    photo = f"/api/handoffs/{handoff_id}/attachments/{listed[0]['id']}"
    image = client.get(photo, headers=staff)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png" and image.content == png()
    assert client.get(photo).status_code == 401  # staff only
    # Another conversation's photo through this one (which the caller may read) is not found.
    other = queue(clean_queue)
    assert client.get(f"/api/handoffs/{other}/attachments/{listed[0]['id']}", headers=staff).status_code == 404
    events = client.get(f"/api/tickets/{ticket}", headers=staff).json()["events"]
    assert any("Photo from the chat: door seal.png" in e["body"] for e in events)

    assert upload(client, session_id, b"<html>not a photo</html>").status_code == 415  # the declared type is not trusted
    assert upload(client, session_id, b"\xff\xd8\xff" + b"0" * (5 * 1024 * 1024)).status_code == 413
    assert upload(client, f"nobody-{uuid.uuid4().hex}", png()).status_code == 409  # no ticket to attach it to
    assert client.post("/chat/uploads", content=png()).status_code == 400
    # The session id alone (agents see it) is not enough: without its key, 403.
    assert client.post("/chat/uploads", content=png(), headers={"X-Chat-Session": session_id, "Content-Type": "image/png",
                                                                "X-Chat-Key": "0" * 32}).status_code == 403
    for _ in range(10):  # ten photos an hour per conversation, then a clear refusal
        last = upload(client, session_id, png())
    assert last.status_code == 429 and "many photos" in last.json()["detail"]


def test_chat_signal_needs_the_session_key_and_is_recorded_only_during_a_handoff(client, clean_queue):  # noqa: F811
    stranger = f"anon-{uuid.uuid4().hex}"
    assert client.post("/chat/signal", json=chat(stranger, kind="typing")).status_code == 204
    session_id = conversation_of(clean_queue, queue(clean_queue))
    assert client.post("/chat/signal", json={"session_id": session_id, "kind": "sent"}).status_code == 403  # no key
    assert client.post("/chat/stream", json={"session_id": session_id, "session_key": "0" * 32}).status_code == 403
    assert client.post("/chat/signal", json=chat(session_id, kind="sent")).status_code == 204
    with session_scope(clean_queue, write=False) as s:
        kinds = {(c.conversation_id, c.kind) for c in s.query(ConversationSignal)}
    assert (session_id, "sent") in kinds and not any(c == stranger for c, _ in kinds)


def test_canned_responses_are_read_by_agents_and_managed_by_supervisors(client):
    agent, sup = login(client), login(client, "super1")
    title = f"Greeting {uuid.uuid4().hex[:6]}"
    assert client.post("/api/console/canned", json={"title": title, "body": "Hi {first_name}"}, headers=agent).status_code == 403
    created = client.post("/api/console/canned", json={"title": title, "body": "Hi {first_name}"}, headers=sup)
    assert created.status_code == 201
    assert client.post("/api/console/canned", json={"title": title, "body": "again"}, headers=sup).status_code == 409
    assert title in [c["title"] for c in client.get("/api/console/canned", headers=agent).json()]
    assert client.put("/api/console/canned/999999", json={"title": "x", "body": "y"}, headers=sup).status_code == 404
    assert client.delete(f"/api/console/canned/{created.json()['id']}", headers=agent).status_code == 403
    assert client.delete(f"/api/console/canned/{created.json()['id']}", headers=sup).status_code == 204


def test_search_finds_a_closed_conversation(client, clean_queue):  # noqa: F811
    handoff_id = queue(clean_queue)
    conversation = conversation_of(clean_queue, handoff_id)
    with session_scope(clean_queue) as s:  # a conversation agent1 handled (agents find what they may read)
        h = s.get(Handoff, handoff_id)
        h.status, h.active_key = HandoffStatus.RESOLVED, None
        h.assigned_user_id = s.scalar(select(User.id).where(User.username == "agent1"))
    found = client.post("/api/console/search", json={"q": conversation[4:]}, headers=login(client)).json()
    assert [h["id"] for h in found] == [handoff_id] and found[0]["status"] == "resolved"
    assert client.get("/api/console/stream").status_code == 401  # the push stream needs the bearer header


def test_hub_pushes_a_change_written_by_another_process(api_db, clean_queue):  # noqa: F811
    async def scenario() -> list[dict]:
        hub = Hub(api_db, interval=0.05)
        runner = asyncio.create_task(hub.run())
        inbox = hub.subscribe(lambda e: e["type"] == "handoff")
        async def first_read() -> None:  # the first read only sets the cursor
            while hub._reads < 1:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(first_read(), timeout=10)
        handoff_id = await asyncio.to_thread(queue, api_db)  # as the bot's action server would
        try:
            while True:
                event = await asyncio.wait_for(inbox.get(), timeout=10)
                if event["id"] == handoff_id:
                    return [event]
        finally:
            runner.cancel()

    events = asyncio.run(scenario())
    assert events[0]["change"] == "new" and events[0]["status"] == "queued"


def test_open_push_streams_do_not_hold_up_a_server_stop(api_db, tmp_path):
    """uvicorn waits for open responses on SIGTERM; the streams must end so the server stops promptly."""
    import http.client
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.e2e.conftest import ROOT, free_port

    port = free_port()
    env = dict(os.environ, DATABASE_URL=api_db, SECRET_KEY="k" * 40, CHAT_SESSION_SECRET=CHAT_SECRET, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "web_service.main:create_app", "--host", "127.0.0.1",
                             "--port", str(port), "--ws", "none"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("POST", "/chat/stream", body=json.dumps(chat("shutdown-test-1")),
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the server is still starting: poll until it answers
        assert resp.status == 200 and resp.readline().startswith(b"retry:")
        proc.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        proc.wait(timeout=15)
        assert time.monotonic() - stopped_at < 10
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_new_messages_of_messenger_conversations_are_pushed(api_db, clean_queue):  # noqa: F811
    """Messenger customers talk to Rasa only: the watcher reads the tracker (here a local stand-in for
    Rasa's HTTP API, serving a growing event list) and pushes a customer "sent" signal on a new message."""
    import http.server
    import json
    import threading

    from crm_store.repositories.handoffs import claim_handoff
    from crm_store.repositories.users import get_user_by_username
    from web_service.settings import WebSettings
    from web_service.transcript_watch import watch_transcripts

    handoff_id = queue(api_db)
    with session_scope(api_db) as s:
        h = s.get(Handoff, handoff_id)
        h.channel = "facebook"
        claim_handoff(s, handoff=h, user=get_user_by_username(s, username="agent1"))
        conversation = h.conversation_id
    events = [{"event": "user", "text": "hello"}]
    reads = [0]

    class Tracker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            reads[0] += 1
            body = json.dumps({"events": list(events)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tracker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = WebSettings(database_url=api_db, secret_key="k" * 40, rasa_url=f"http://127.0.0.1:{server.server_address[1]}",
                           rasa_timeout_seconds=5)

    async def scenario() -> dict:
        hub = Hub(api_db)
        inbox = hub.subscribe(lambda e: e["type"] == "signal" and e["conversation_id"] == conversation)
        watcher = asyncio.create_task(watch_transcripts(hub, settings, interval=0.05))
        try:
            async def first_round() -> None:  # the watcher has read the tracker (one user message) and read again
                while reads[0] < 2:
                    await asyncio.sleep(0.02)
            await asyncio.wait_for(first_round(), timeout=10)
            assert inbox.empty()  # the first read only records the count
            events.append({"event": "user", "text": "are you there?"})
            return await asyncio.wait_for(inbox.get(), timeout=10)
        finally:
            watcher.cancel()
            server.shutdown()

    event = asyncio.run(scenario())
    assert event["party"] == "customer" and event["kind"] == "sent"


def test_fault_history_hours_must_be_a_number_in_range(client):
    staff = login(client)
    for bad in ("nan", "inf", "0", "169"):
        assert client.get("/api/console/devices/WM80-23000102/faults", params={"hours": bad},
                          headers=staff).status_code == 422, bad
    assert client.get("/api/console/devices/WM80-23000102/faults", params={"hours": "2"}, headers=staff).status_code == 200
