"""The chat part of the fuzz harness (bench/fuzz.py), run in Rasa's environment (.venv-rasa: aiohttp, python-socketio).

    .venv-rasa/bin/python bench/fuzz_chat.py SPEC.json OUT.json

SPEC (written by bench/fuzz.py): ``rasa_url``, ``seed``, ``rest_messages``, ``sio_messages``, ``concurrency``,
``guesses`` (verification references to try, in order), ``guess_concurrency``, ``xff_pool`` (client addresses the
brute force rotates through in ``X-Forwarded-For``), ``victim`` (the brute force's target: email, order, serial,
phone), ``owners`` (two seeded customers who verify legitimately, one per channel, whose conversation ids the fuzz then
replays on the other channel), ``known`` (every seeded customer's e-mail, phone, serial and order number, lower-case).

OUT: per-source counts, failures by kind (``http_5xx``, ``hangs_over_5s``, ``data_leaks``, ``transport_errors``) with a
few examples each, the brute force's outcome (``linked_replies``, reply kinds, senders used) and latencies.
A data leak is a seeded identifier in a reply that no message of the same conversation contained (a conversation that typed
the victim's e-mail and one of their references verified legitimately and is not checked).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import socketio

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from bench.fuzz_inputs import chat_text, malformed_rest_bodies  # noqa: E402

HANG_S = 5.0
WAIT_S = 30.0  # a reply later than HANG_S is a hang; later than this, none came
QUIET_S = 0.35  # socket.io has no end-of-turn marker: the turn is over after this long without a message
LINKED = "found your account"
# The bot's words when it hands a conversation to a person: from then on it is silent (an agent answers), so on
# socket.io, which has no end-of-turn marker, a conversation ends there instead of waiting for replies that never come.
HANDED_OVER = ("in the queue", "bringing in a person", "is offline right now", "who has your conversation")


class Recorder:
    def __init__(self, known: list[str], victim: dict[str, str] | None = None) -> None:
        self.known = [k for k in known if k]
        # The e-mail, order and serial that "other customer" messages quote (lower-case).
        self.credentials = [victim[k].lower() for k in ("email", "order", "serial")] if victim else []
        self.counts: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.examples: dict[str, list[Any]] = {}
        self.latencies: dict[str, list[float]] = {}

    def fail(self, kind: str, example: Any) -> None:
        self.failures[kind] += 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < 8:
            shown.append(example)

    def reply(self, source: str, category: str, conversation_inputs: list[str], text: str, seconds: float | None,
              status: int | None = None) -> None:
        """Checks one reply: status, time, seeded identifiers the conversation did not type itself."""
        self.counts[source] += 1
        self.counts[f"{source}:{category}"] += 1
        if seconds is not None:
            self.latencies.setdefault(source, []).append(seconds)
        if status is not None and status >= 500:
            self.fail("http_5xx", {"source": source, "category": category, "status": status, "input": conversation_inputs[-1][:120]})
        if seconds is None or seconds > HANG_S:
            self.fail("hangs_over_5s", {"source": source, "category": category, "seconds": seconds,
                                        "input": conversation_inputs[-1][:120]})
        typed = " ".join(conversation_inputs).lower()
        lowered = text.lower()
        if self.credentials and self.credentials[0] in typed and any(ref in typed for ref in self.credentials[1:]):
            # The conversation typed the victim's e-mail and one of their references: it knows the credentials, and
            # the account it reads back is the verification working, not a leak.
            self.counts[f"{source}:verified_with_typed_credentials"] += 1
            return
        leaked = [k for k in self.known if k in lowered and k not in typed]
        if leaked:
            self.fail("data_leaks", {"source": source, "category": category, "leaked": leaked[:3], "reply": text[:300]})


def reply_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for msg in messages:
        if isinstance(msg, dict):
            parts.append(str(msg.get("text") or ""))
            for button in msg.get("buttons") or msg.get("quick_replies") or []:
                parts.append(str(button.get("title", "")) + " " + str(button.get("payload", "")))
    return "\n".join(parts)


async def rest_post(http: aiohttp.ClientSession, url: str, body: Any, xff: str | None,
                    raw: bytes | None = None) -> tuple[int | None, str, float | None]:
    # As the trusted back end the REST channel requires (bench/fuzz.py passes the stack's token): the fuzz is
    # after what gets past authentication.
    token = os.environ.get("REST_CHANNEL_TOKEN", "")
    headers = {"Content-Type": "application/json", **({"X-Forwarded-For": xff} if xff else {}),
               **({"Authorization": f"Bearer {token}"} if token else {})}
    started = time.monotonic()
    try:
        async with http.post(f"{url}/webhooks/rest/webhook", data=raw if raw is not None else json.dumps(body),
                             headers=headers, timeout=aiohttp.ClientTimeout(total=WAIT_S)) as resp:
            payload = await resp.read()
            seconds = time.monotonic() - started
            try:
                text = reply_text(json.loads(payload)) if resp.status == 200 else payload.decode(errors="replace")
            except (ValueError, TypeError, AttributeError):
                text = payload.decode(errors="replace")
            return resp.status, text, seconds
    except (asyncio.TimeoutError, aiohttp.ClientError):
        return None, "", None


class SioConversation:
    """One web-chat session over Rasa's socket.io channel, from a client address of our choosing."""

    def __init__(self, url: str, xff: str | None) -> None:
        self.url, self.xff = url, xff
        self.sio = socketio.AsyncClient(reconnection=False)
        self.inbox: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.confirmed = asyncio.Event()
        self.sio.on("bot_uttered", self._on_bot)
        self.sio.on("session_confirm", self._on_confirm)

    async def _on_bot(self, data: Any) -> None:
        self.inbox.append(data if isinstance(data, dict) else {"text": str(data)})
        self.arrived.set()

    async def _on_confirm(self, data: Any) -> None:
        # The server issues the session (its id and key); a requested id is only resumed with its key.
        self.session_id = data["session_id"] if isinstance(data, dict) else data
        self.confirmed.set()

    async def open(self, session_id: str) -> None:
        self.session_id = session_id
        await self.sio.connect(self.url, transports=["websocket"], socketio_path="socket.io", wait_timeout=WAIT_S,
                               headers={"X-Forwarded-For": self.xff} if self.xff else {})
        await self.sio.emit("session_request", {"session_id": session_id})
        await asyncio.wait_for(self.confirmed.wait(), WAIT_S)

    async def turn(self, message: Any, *, raw_event: Any = None, expect_reply: bool = True) -> tuple[str, float | None]:
        """Sends a message; returns the turn's text and the seconds to its first message (None: none came)."""
        self.inbox.clear()
        self.arrived.clear()
        started = time.monotonic()
        await self.sio.emit("user_uttered", raw_event if raw_event is not None else
                            {"message": message, "session_id": self.session_id})
        try:
            await asyncio.wait_for(self.arrived.wait(), WAIT_S if expect_reply else QUIET_S * 3)
        except asyncio.TimeoutError:
            return "", None
        first = time.monotonic() - started
        while True:  # the rest of the turn
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), QUIET_S)
            except asyncio.TimeoutError:
                return reply_text(self.inbox), first

    async def close(self) -> None:
        try:
            await self.sio.disconnect()
        except Exception:  # noqa: BLE001 - the server may have gone; nothing to clean up
            pass


def _xff(rng: random.Random) -> str | None:
    # Most conversations from addresses of their own (the per-address limit would refuse nearly all of a
    # single-address fuzz, which tests the limiter rather than the bot); a tenth from the fuzz's own address.
    return None if rng.random() < 0.1 else f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


async def verify_owner(http: aiohttp.ClientSession, url: str, channel: str, owner: dict[str, str], rec: Recorder) -> str:
    """A seeded customer verifies in a conversation of their own; returns its id (to be replayed elsewhere)."""
    conv = f"owner-{channel}-{uuid.uuid4().hex}"
    text = f"{owner['email']} {owner['order']}"
    if channel == "rest":
        status, reply, _ = await rest_post(http, url, {"sender": conv, "message": text}, f"192.0.2.{random.randrange(1, 250)}")
        ok = status == 200 and LINKED in reply
    else:
        sio = SioConversation(url, f"198.51.100.{random.randrange(1, 250)}")
        await sio.open(conv)
        reply, _ = await sio.turn(text)
        await sio.close()
        ok = LINKED in reply
    if not ok:
        rec.fail("setup", {"channel": channel, "reply": reply[:300]})
    return conv


async def rest_fuzz(http: aiohttp.ClientSession, spec: dict[str, Any], rec: Recorder, hijack: str) -> None:
    rng = random.Random(spec["seed"])
    url, victim = spec["rasa_url"], spec["victim"]
    for category, raw in malformed_rest_bodies(rng):
        status, text, seconds = await rest_post(http, url, None, _xff(rng), raw=raw)
        rec.reply("rest", f"malformed_{category}", [raw[:200].decode(errors="replace")], text if status == 200 else "",
                  seconds, status)
    budget = [spec["rest_messages"]]

    async def conversation(worker: int) -> None:
        local = random.Random(spec["seed"] * 1000 + worker)
        while budget[0] > 0:
            # One conversation in twenty replays the socket.io owner's session id over REST.
            replay = local.random() < 0.05
            sender, xff, typed = (hijack if replay else f"fuzz-{uuid.uuid4().hex}"), _xff(local), []
            for _ in range(local.randint(1, 6)):
                if budget[0] <= 0:
                    return
                budget[0] -= 1
                category, text = ("session_replay", local.choice(["what devices do I have", "show my tickets",
                                                                  "what's my phone number"])) if replay else chat_text(local, victim)
                typed.append(text)
                status, reply, seconds = await rest_post(http, url, {"sender": sender, "message": text}, xff)
                rec.reply("rest", category, typed, reply, seconds, status)

    await asyncio.gather(*(conversation(i) for i in range(spec["concurrency"])))


async def sio_fuzz(spec: dict[str, Any], rec: Recorder, hijack: str) -> None:
    url, victim = spec["rasa_url"], spec["victim"]
    budget = [spec["sio_messages"]]

    async def conversation(worker: int) -> None:
        local = random.Random(spec["seed"] * 7919 + worker)
        while budget[0] > 0:
            replay = local.random() < 0.05
            sio = SioConversation(url, _xff(local))
            try:
                await sio.open(hijack if replay else f"fuzz-{uuid.uuid4().hex}")
            except Exception as exc:  # noqa: BLE001 - a refused connection is a finding, not the end of the run
                rec.fail("transport_errors", {"source": "socketio", "error": repr(exc)[:200]})
                budget[0] -= 1
                await sio.close()
                continue
            typed: list[str] = []
            try:
                for n in range(local.randint(1, 6)):
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                    if not replay and n == 0 and local.random() < 0.15:
                        # Malformed events: no reply is owed; the connection and the server must survive them.
                        event = local.choice(["hello", None, 5, [], {"message": 5, "session_id": sio.session_id},
                                              {"message": "hi"}, {"message": "hi", "session_id": {"$ne": 1}},
                                              {"message": None, "session_id": sio.session_id},
                                              {"message": "hi", "session_id": sio.session_id, "metadata": {"client": "x"}}])
                        typed.append(json.dumps(event))
                        text, _ = await sio.turn(None, raw_event=event if event is not None else "null", expect_reply=False)
                        rec.reply("socketio", "malformed_event", typed, text, 0.0)
                        continue
                    category, text = ("session_replay", local.choice(["what devices do I have", "show my tickets"])) \
                        if replay else chat_text(local, victim)
                    typed.append(text)
                    reply, seconds = await sio.turn(text)
                    rec.reply("socketio", category, typed, reply, seconds)
                    if any(marker in reply.lower() for marker in HANDED_OVER):
                        rec.counts["socketio_handed_over"] += 1
                        break
            finally:
                await sio.close()

    await asyncio.gather(*(conversation(i) for i in range(max(1, spec["concurrency"] // 2))))


async def brute_force(http: aiohttp.ClientSession, spec: dict[str, Any], rec: Recorder) -> dict[str, Any]:
    """Each guess from a fresh conversation (REST sender or, one in ten, a socket.io session), each from one of
    ``xff_pool`` client addresses in turn: the victim's e-mail with a guessed order or serial number."""
    url, email = spec["rasa_url"], spec["victim"]["email"]
    guesses = list(enumerate(spec["guesses"]))
    pool = [f"172.16.{i // 250}.{i % 250 + 1}" for i in range(spec["xff_pool"])]
    kinds: Counter[str] = Counter()
    linked: list[dict[str, Any]] = []
    senders: list[str] = []
    latencies: list[float] = []

    def classify(text: str, status: int | None) -> str:
        lowered = text.lower()
        if status is not None and status != 200:
            return f"http_{status}"
        for key, marker in (("linked", LINKED), ("locked_out", "too many attempts"), ("rate_limited", "faster than"),
                            ("wrong_details", "don't match"), ("stopped_trying", "stop trying")):
            if marker in lowered:
                return key
        return "other" if text else "no_reply"

    async def worker(w: int) -> None:
        while guesses:
            n, ref = guesses.pop(0)
            text, xff = f"{email} {ref}", pool[n % len(pool)]
            sender = f"guess-{uuid.uuid4().hex}"
            senders.append(sender)
            if n % 10 == 9:
                sio = SioConversation(url, xff)
                try:
                    await sio.open(sender)
                    reply, seconds = await sio.turn(text)
                    status = 200
                except Exception:  # noqa: BLE001
                    reply, seconds, status = "", None, None
                finally:
                    await sio.close()
            else:
                status, reply, seconds = await rest_post(http, url, {"sender": sender, "message": text}, xff)
            kind = classify(reply, status)
            kinds[kind] += 1
            if seconds is not None:
                latencies.append(seconds)
            if status is not None and status >= 500:
                rec.fail("http_5xx", {"source": "bruteforce", "status": status})
            if kind == "linked":
                linked.append({"guess": n, "reference": ref, "sender": sender})

    await asyncio.gather(*(worker(w) for w in range(spec["guess_concurrency"])))
    return {"guesses_sent": sum(kinds.values()), "reply_kinds": dict(kinds), "linked_replies": linked,
            "senders": senders, "latency": summary(latencies)}


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    at = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)  # noqa: E731
    return {"n": len(ordered), "p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 1)}


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """``mode`` ``fuzz``: the owners verify, then REST and socket.io fuzz at once; ``bruteforce``: the probe."""
    rec = Recorder(spec["known"], spec.get("victim"))
    connector = aiohttp.TCPConnector(limit=64)
    owners: list[str] = []
    brute: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.monotonic()
        if spec["mode"] == "fuzz":
            owners = [await verify_owner(http, spec["rasa_url"], "rest", spec["owners"][0], rec),
                      await verify_owner(http, spec["rasa_url"], "socketio", spec["owners"][1], rec)]
            await asyncio.gather(rest_fuzz(http, spec, rec, owners[1]), sio_fuzz(spec, rec, owners[0]))
        else:
            brute = await brute_force(http, spec, rec)
    return {"counts": dict(rec.counts), "failures": dict(rec.failures), "examples": rec.examples,
            "latency": {k: summary(v) for k, v in rec.latencies.items()},
            "seconds": round(time.monotonic() - started, 1), "owner_conversations": owners, "bruteforce": brute}


if __name__ == "__main__":
    spec_path, out_path = sys.argv[1:3]
    result = asyncio.run(main(json.loads(open(spec_path).read())))
    with open(out_path, "w") as fh:
        json.dump(result, fh)
