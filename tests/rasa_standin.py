"""A stand-in for Rasa's HTTP API on 127.0.0.1, for tests of what calls Rasa (web service, device worker).

It is a real HTTP server on a free port. ``mode`` says how it behaves:

- ``"up"``: runs the project's real custom actions against the CRM, as Rasa's server would for
  ``trigger_intent`` (EXTERNAL_device_* → action_notify_device_*) and ``execute`` (the named action), one
  action at a time per conversation (Rasa's lock store), and records what each conversation was told;
- ``"down"``: answers 503 (Rasa up but failing);
- ``"hang"``: accepts the request and never answers until ``close()`` (a frozen Rasa);
- ``"lost"``: runs the action as ``"up"`` does, then drops the connection without answering (the answer of
  a call that did its work is lost on the way back).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

ACTIONS = {
    "action_relay_agent_messages": ("actions.agent_relay", "ActionRelayAgentMessages"),
    "action_handback": ("actions.agent_relay", "ActionHandback"),
    "action_queue_timeout": ("actions.agent_relay", "ActionQueueTimeout"),
    "action_notify_device_fault": ("actions.proactive", "ActionNotifyDeviceFault"),
    "action_notify_device_recovered": ("actions.proactive", "ActionNotifyDeviceRecovered"),
    "action_notify_ticket_update": ("actions.safety", "ActionNotifyTicketUpdate"),
    "action_deliver_device_events": ("actions.safety", "ActionDeliverDeviceEvents"),
}
TRIGGERS = {"EXTERNAL_device_fault": "action_notify_device_fault",
            "EXTERNAL_device_recovered": "action_notify_device_recovered",
            "EXTERNAL_ticket_update": "action_notify_ticket_update"}


class RasaStandIn:
    def __init__(self, mode: str = "up") -> None:
        self.mode = mode
        self.said: dict[str, list[str]] = defaultdict(list)  # conversation → texts shown to the customer
        self.calls: list[tuple[str, str, str]] = []  # (conversation, route, action or intent)
        self.hanging = 0  # requests held open right now
        self.released = threading.Event()
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                parts = urlparse(self.path).path.strip("/").split("/")
                conversation, route = unquote(parts[1]), parts[2]
                name = body.get("name", "")
                with standin._guard:
                    standin.calls.append((conversation, route, name))
                if standin.mode == "hang":
                    with standin._guard:
                        standin.hanging += 1
                    standin.released.wait(120)
                    self.close_connection = True
                    return  # no answer at all: the client sees the connection drop
                if standin.mode == "down":
                    self._send(503, {"error": "stand-in is down"})
                    return
                if route == "tracker":
                    self._send(200, {"sender_id": conversation, "events": []})
                    return
                action = TRIGGERS.get(name, name) if route == "trigger_intent" else name
                with standin._locks[conversation]:  # Rasa runs one message per conversation at a time
                    texts = standin._run(action, conversation, body)
                with standin._guard:
                    standin.said[conversation] += texts
                if standin.mode == "lost":
                    self.close_connection = True
                    return
                self._send(200, {"messages": [{"text": t} for t in texts]})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="rasa-standin", daemon=True)
        self._thread.start()

    def _run(self, action: str, conversation: str, body: dict[str, Any]) -> list[str]:
        import importlib

        from tests.actions.conftest import run_action, tracker_from

        module, cls = ACTIONS[action]
        entities = body.get("entities") or {}
        proactive_id = entities.get("proactive_id")
        tracker = tracker_from(
            "device_fault_pushed", sender_id=conversation, slots={"proactive_id": proactive_id},
            latest_message={"text": f"EXTERNAL: {body.get('name')}", "intent": {"name": body.get("name")},
                            "entities": [{"entity": k, "value": v} for k, v in entities.items()]},
        )
        _events, messages = run_action(getattr(importlib.import_module(module), cls)(), tracker)
        return [m.get("text") or m.get("response") or "" for m in messages]

    def told(self, conversation: str | None = None) -> list[str]:
        with self._guard:
            if conversation is not None:
                return list(self.said.get(conversation, []))
            return [t for texts in self.said.values() for t in texts]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
