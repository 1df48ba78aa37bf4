"""Chaos on the production topology: kill -9 of one Rasa server, one action server, one web replica and
one device worker, in the middle of a conversation, of an agent handoff and of a telemetry stream with a
fault episode. After each kill the customer's next message is answered through the load balancer, the
handoff is intact, and the supervisor brings the process back without a hand; at the end there is no
duplicate ticket and the proactive message reached the customer once.

Bounded: one telemetry simulator of 20 devices for at most 240 s, all on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import threading
import urllib.request
import uuid

import pytest

from tests.e2e.conftest import ROOT, Stack, http_ok, wait_until
from tests.e2e.test_device_flows import free_warning_code, query, verify_as, wait_for_bot
from tests.e2e.test_handoff_flow import SioCustomer, agent_token, find_handoff  # noqa: F401  (fixture)


def texts(replies: list[dict]) -> str:
    return "\n".join(r.get("text", "") for r in replies)


def say_through_lb(stack: Stack, sender: str, message: str) -> str:
    """The customer's next message through the load balancer; retried only on a refused/reset connection
    (never on an answer), as a chat client would resend."""
    answer: list[str] = []

    def send() -> bool:
        answer.append(texts(stack.say(sender, message)))
        return True

    wait_until(send, 60, f"{message!r} is answered through the load balancer")
    return answer[-1]


def back_and_serving(stack: Stack, name: str, old_pid: int) -> None:
    stack.wait_restarted(name, old_pid, timeout=60)
    kind = name.split("-")[0]
    if kind == "rasa":
        def status():  # type: ignore[no-untyped-def]
            return stack.rasa_request("/status", base=stack.instance_url(name))

        wait_until(lambda: json.loads(urllib.request.urlopen(status(), timeout=5).read()).get("model_file"), 300,
                   f"{name} has its model again")
    elif kind in ("web", "actions"):
        wait_until(lambda: http_ok(f"{stack.instance_url(name)}/health"), 60, f"{name} answers /health")


class PresenceHeartbeat:
    """What the open chat page does: reports presence every 15 s (the notifier pushes only to a chat seen
    within the last 60 s). A report that fails during a kill is simply missed, as in the browser."""

    def __init__(self, stack: Stack, customer: SioCustomer) -> None:
        self.stop = threading.Event()
        self.customer = customer

        def beat() -> None:
            while True:
                req = urllib.request.Request(f"{stack.web_url}/chat/presence", method="POST",
                                             data=json.dumps(self.customer.proof()).encode(),
                                             headers={"Content-Type": "application/json"})
                try:
                    urllib.request.urlopen(req, timeout=10).close()
                except OSError:
                    pass
                if self.stop.wait(15):
                    return

        self.thread = threading.Thread(target=beat, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def reconnected(stack: Stack, customer: SioCustomer) -> SioCustomer:
    """The web chat reconnects with its session id when its Rasa server went away; so does this customer."""
    if customer.proc.poll() is None and not any(e.get("event") == "disconnect" for e in list(customer.events.queue)):
        return customer
    customer.close()
    return SioCustomer(stack, session_id=customer.session_id, session_key=customer.session_key)


pytestmark = pytest.mark.production_only


def test_kill_9_of_one_of_each_keeps_conversations_handoffs_and_proactive_messages_whole(stack: Stack, agent_token: str):  # noqa: F811
    serial, email, order, customer_id = query(stack, """
        SELECT d.serial, c.email, p.order_number, c.id FROM devices d JOIN customers c ON c.id = d.customer_id
        JOIN purchases p ON p.device_id = d.id
        WHERE c.consent_proactive AND c.id > 20
          AND c.id NOT IN (SELECT customer_id FROM tickets WHERE open_dedup_key IS NOT NULL AND customer_id IS NOT NULL)
        ORDER BY c.id DESC LIMIT 1""")[0]
    code = free_warning_code(stack, serial)
    sender = f"chaos-{uuid.uuid4().hex[:8]}"
    started = dt.datetime.now(dt.timezone.utc)
    watcher = SioCustomer(stack)  # the device owner's open web chat, through the load balancer
    asker = SioCustomer(stack)  # a customer who will talk to an agent
    telemetry = None
    heartbeat = None
    try:
        verify_as(watcher, email, order)
        heartbeat = PresenceHeartbeat(stack, watcher)

        # A conversation under way over REST: the e-mail is given, the order number not yet.
        assert "e-mail" in say_through_lb(stack, sender, "which appliances do I have?")
        assert "order number" in say_through_lb(stack, sender, "anna.schmidt@example.com")

        # 1. A Rasa server dies mid-conversation: the next message is answered by the other one, from the
        #    shared tracker store; the lock store keeps the two from handling one conversation at once.
        old = stack.kill9("rasa-1")
        assert "found your account" in say_through_lb(stack, sender, "ORD-2021-000101")
        back_and_serving(stack, "rasa-1", old)
        watcher = reconnected(stack, watcher)
        asker = reconnected(stack, asker)

        # A telemetry stream from 20 other devices for the rest of the test.
        telemetry = subprocess.Popen(
            [str(ROOT / ".venv-app" / "bin" / "python"), "-m", "device_hooks.simulator", "--tokens-file",
             str(stack.work / "device_tokens.json"), *stack.simulator_args(), "run", "--devices", "20",
             "--interval", "1", "--duration", "240"],
            cwd=ROOT, env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        # 2. An action server dies: the next message needs an action (the device list) and gets it.
        old = stack.kill9("actions-1")
        assert "appliances registered with us" in say_through_lb(stack, sender, "what devices do I have?")
        back_and_serving(stack, "actions-1", old)

        # 3. A web replica dies during a handoff: the agent's console goes on through the other replica.
        asker.say("I want to talk to a person")
        asker.wait_for("bringing in a person from our service team")
        handoff = find_handoff(stack, agent_token, asker.session_id)
        assert stack.api("POST", f"/api/handoffs/{handoff['id']}/claim", agent_token)[0] == 200
        claimed = stack.api("GET", f"/api/handoffs/{handoff['id']}", agent_token)[1]
        old = stack.kill9("web-1")
        # As the console sends it: with an Idempotency-Key, so the load balancer may repeat it on the other
        # replica if web-1's socket took it before it died (the CI failure: a 502 for an unanswered request).
        status, sent = stack.api("POST", f"/api/handoffs/{handoff['id']}/messages", agent_token,
                                 {"body": "Maria here, after the outage"}, headers={"Idempotency-Key": uuid.uuid4().hex})
        assert status == 201 and sent["delivered"] is True, sent
        asker.wait_for("Maria: Maria here, after the outage", 30)
        assert query(stack, "SELECT count(*) FROM handoff_messages WHERE handoff_id = ? AND kind = 'agent'",
                     handoff["id"]) == [(1,)]
        back_and_serving(stack, "web-1", old)
        status, detail = stack.api("GET", f"/api/handoffs/{handoff['id']}", agent_token)
        assert status == 200 and detail["bot_paused"] is True
        assert (detail["status"], detail["assignee"], detail["claimed_at"]) == (claimed["status"], "maria", claimed["claimed_at"])
        assert [h["id"] for h in stack.api("GET", "/api/handoffs", agent_token)[1]
                if h["conversation_id"] == asker.session_id] == [handoff["id"]]

        # 4. A worker dies during the telemetry stream; the device reports a fault: one ticket, one message.
        old = stack.kill9("worker-1")
        subprocess.run([str(ROOT / ".venv-app" / "bin" / "python"), "-m", "device_hooks.simulator", "--tokens-file",
                        str(stack.work / "device_tokens.json"), *stack.simulator_args(), "inject", serial, code],
                       cwd=ROOT, env=stack.env, check=True, capture_output=True, timeout=60)
        pushed = wait_for_bot(watcher, r"T-\d{6}", timeout=90)
        number = re.search(r"T-\d{6}", pushed["text"]).group(0)
        assert code in pushed["text"]
        back_and_serving(stack, "worker-1", old)
        assert watcher.silent_for(5), watcher.received[-1]  # not a second time

        # The customer's conversation goes on after all four.
        assert "open a repair ticket" in say_through_lb(stack, sender, "what can you do?")
        assert query(stack, "SELECT count(*) FROM proactive_messages m JOIN tickets t ON t.id = m.ticket_id "
                            "WHERE t.number = ? AND m.status = 'sent'", number) == [(1,)]
        assert query(stack, "SELECT count(*) FROM tickets WHERE customer_id = ? AND open_dedup_key = ?",
                     customer_id, f"fault:{code}") == [(1,)]
        # No device got two tickets for one fault during the test (20 devices streaming, four kills; nothing
        # closes a ticket meanwhile, so a second one would be a duplicate, open or not).
        assert query(stack, "SELECT device_id, fault_code, count(*) FROM tickets WHERE source = 'device' AND created_at >= ? "
                            "GROUP BY device_id, fault_code HAVING count(*) > 1", started) == []
        # Every process is up: the four restarted ones and those never touched.
        pids = stack.pids()
        assert set(pids) >= {"rasa-1", "rasa-2", "actions-1", "actions-2", "web-1", "web-2", "worker-1", "worker-2", "haproxy"}
        for name in ("rasa-1", "rasa-2", "actions-1", "actions-2", "web-1", "web-2"):
            path = "/" if name.startswith("rasa") else "/health"
            assert http_ok(stack.instance_url(name) + path), name
        said = "".join(stack.output or [])
        for name in ("rasa-1", "actions-1", "web-1", "worker-1"):
            assert f"{name} restarted (pid {pids[name]}" in said
    finally:
        if heartbeat is not None:
            heartbeat.close()
        if telemetry is not None:
            telemetry.terminate()
            telemetry.wait(timeout=10)
        watcher.close()
        asker.close()
