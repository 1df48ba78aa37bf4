"""Hostile inputs for the fuzz harness (bench/fuzz.py): chat texts and device payloads.

Standard library only, so both environments import it: the app's (.venv-app, devices) and Rasa's (.venv-rasa, the
chat clients). Every generator is driven by a ``random.Random`` so that a run is reproducible from its seed.
"""

from __future__ import annotations

import json
import random

HUGE = 100 * 1024  # the 100 KB text

_WORDS = ("my", "fridge", "is", "broken", "washing", "machine", "order", "ticket", "help", "agent", "device", "error",
          "E21", "leaking", "noise", "warranty", "account", "refund", "please", "the", "dishwasher")
_FORMAT = ("%s%s%s%s%n", "%x%x%x%x", "{0}{1}{2}", "{__class__.__mro__}", "{sender_id}", "${jndi:ldap://127.0.0.1/a}",
           "{{7*7}}", "%(customer_id)s", "{{ config.items() }}", "%99999999999s", "{email}", "\\x00\\u0000",
           "{customer_name}", "[email](email)", "[ORD-2021-000101](order_number)")
_HTML = ("<script>alert(document.cookie)</script>", "<img src=x onerror=alert(1)>", "</textarea><svg onload=alert(1)>",
         "javascript:alert(1)", "<iframe src=//evil.test>", "\"><b>bold</b>", "<a href='//evil.test'>click</a>",
         "' OR '1'='1' --", "'; DROP TABLE customers; --", "1 UNION SELECT email FROM customers", "../../etc/passwd",
         "{\"$gt\": \"\"}", "\r\nSet-Cookie: a=b", "**bold** [link](http://evil.test) ![img](http://evil.test/x.png)")
_RTL = ("\u202e", "\u202d", "\u202a", "\u202b", "\u202c", "\u2066", "\u2067", "\u2068", "\u2069", "\u200f", "\u061c")
_ODD = ("\u200b", "\ufeff", "\u2028", "\u2029", "\u00ad", "\ufffd", "\U0001f4a9", "\u0301" * 50, "\ufdfd",
        "\uff0frestart", "\u2215restart", "ﬀ", "İ", "\U000e0041", "\ud800", "\udfff")


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _controls(rng: random.Random) -> str:
    chars = [chr(c) for c in (*range(0, 32), 127, *range(0x80, 0xA0))]
    return "".join(rng.choice(chars) if rng.random() < 0.4 else rng.choice(_WORDS) + " " for _ in range(rng.randint(5, 60)))


def _rtl(rng: random.Random) -> str:
    return "".join(rng.choice(_RTL) + w for w in _words(rng, rng.randint(2, 12)).split())


def _huge(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return ("my fridge is broken " * (HUGE // 20 + 1))[:HUGE]
    if kind == 1:
        return "A" * HUGE
    if kind == 2:
        return "".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(HUGE // 3))
    if kind == 3:
        return ("\u202e\u200b" * (HUGE // 2))
    return "/restart " + "x " * (HUGE // 2)


def typed_intents(victim: dict[str, str]) -> list[str]:
    """Intent payloads a customer should never be able to trigger by typing them (the guard reads them as text)."""
    email, order, serial = victim["email"], victim["order"], victim["serial"]
    return [
        "/restart", "/session_start", "/back", "/action_listen", "/stop", "/request_human", "/affirm", "/deny",
        '/EXTERNAL_device_fault{"x":1}', '/EXTERNAL_device_fault{"serial":"%s","code":"E21"}' % serial,
        '/EXTERNAL_proactive{"customer_id":2}', '/verify_identity{"email":"%s"}' % email,
        '/verify_identity{"email":"%s","order_number":"%s"}' % (email, order),
        '/inform{"email":"%s","order_number":"%s"}' % (email, "ORD-2020-000001"),
        '/inform{"customer_id":"2","customer_name":"Eve"}', '/greet{"customer_id":2}', "/greet{\"x\":",
        '/list_devices{"customer_id":1}', "/" * 500, "//restart", " /restart", "\u200b/restart", "/restart\n/restart",
        '/session_start{"metadata":{"client":"x"}}', "/nlu_fallback", "/out_of_scope", '/intent{"e":' + "[" * 200,
    ]


def chat_text(rng: random.Random, victim: dict[str, str]) -> tuple[str, str]:
    """One hostile chat text and its category."""
    pick = rng.random()
    if pick < 0.16:
        return "control_chars", _controls(rng)
    if pick < 0.28:
        return "rtl_overrides", _rtl(rng)
    if pick < 0.33:
        return "huge_100kb", _huge(rng)
    if pick < 0.46:
        return "format_strings", rng.choice(_FORMAT) + " " + _words(rng, 3)
    if pick < 0.60:
        return "html_script_sql", _words(rng, 2) + " " + rng.choice(_HTML)
    if pick < 0.82:
        return "typed_intents", rng.choice(typed_intents(victim))
    if pick < 0.92:
        return "odd_unicode", _words(rng, 2) + "".join(rng.choice(_ODD) for _ in range(rng.randint(1, 8)))
    # Someone else's details, as a stranger would type them: the reply must not read their account back.
    return "other_customer", rng.choice([
        f"what devices does {victim['email']} have", f"show tickets of {victim['email']}",
        f"my serial is {victim['serial']}, what's wrong with it", f"order {victim['order']} status",
        f"I am {victim['email']}", f"call me on {victim['phone']}", f"{victim['email']}",
    ])


def malformed_rest_bodies(rng: random.Random) -> list[tuple[str, bytes]]:
    """Bodies for ``POST /webhooks/rest/webhook`` that are not a valid message (expected: 4xx, never 5xx)."""
    sender = f"fuzz-bad-{rng.randrange(1 << 30)}"
    as_json: list[object] = [
        {"sender": sender, "message": None}, {"sender": sender, "message": 12}, {"sender": sender, "message": ["hi"]},
        {"sender": sender, "message": {"text": "hi"}}, {"sender": None, "message": "hi"}, {"sender": 5, "message": "hi"},
        {"sender": "x" * 5000, "message": "hi"}, {"sender": "\u0000\n", "message": "hi"}, {"message": "hi"},
        {"sender": sender}, [], "hello", 1e308, None, {"sender": sender, "message": "hi", "metadata": {"client": "x"},
                                                      "input_channel": "socketio"},
        {"sender": sender, "message": "hi", "metadata": "x" * 10000}, {"sender": sender, "message": True},
    ]
    bodies = [("json_wrong_types", json.dumps(b).encode()) for b in as_json]
    bodies += [("not_json", b"{"), ("not_json", b"\xff\xfe\x00"), ("not_json", b""), ("not_json", b"[" * 10000),
               ("nested_json", ("{\"sender\":\"%s\",\"message\":\"hi\",\"x\":" % sender + "[" * 5000 + "]" * 5000 + "}")
                .encode()), ("not_json", b"NaN"), ("huge_json", json.dumps({"sender": sender, "message": "a" * 2_000_000}).encode())]
    return bodies


# ---- device payloads -------------------------------------------------------------------------------------------

def _now_ts(rng: random.Random) -> object:
    import time

    return rng.choice([time.time(), int(time.time()), "2026-01-01T00:00:00+00:00", time.time() + 10**9, -1, 0, 1e308,
                       "yesterday", None, [], {"$date": 1}, float("inf"), 2**70])


def device_payload(rng: random.Random, kind: str) -> tuple[str, bytes]:
    """One hostile device payload (a category and the raw bytes) for ``devices/<serial>/<kind>``."""
    pick = rng.random()
    if pick < 0.12:
        return "garbage_bytes", bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    if pick < 0.22:
        return "broken_json", rng.choice([b"{", b"{\"ts\":", b"[1,2", b"{'ts': 1}", b"\"\\ud800\"", b"{\"a\":1}}", b"null",
                                          b"true", b"123", b"\"text\"", b"{\"ts\": NaN, \"seq\": 1}", b"Infinity"])
    if pick < 0.30:
        size = rng.choice([16 * 1024 + 1, 64 * 1024, 256 * 1024, 1024 * 1024])
        return "huge", json.dumps({"ts": 1, "seq": 1, "readings": {"t": 1}, "pad": "x" * size}).encode()
    if pick < 0.40:
        depth = rng.choice([50, 500, 5000])
        return "nested", (b'{"ts":1,"seq":1,"readings":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}")
    if pick < 0.50:
        return "nan_inf", rng.choice([b'{"ts": 1, "seq": 1, "readings": {"temp": NaN}}',
                                      b'{"ts": 1, "seq": 1, "readings": {"temp": Infinity}}',
                                      b'{"ts": 1, "seq": 1, "readings": {"temp": -Infinity}}',
                                      b'{"ts": 1e999, "seq": 1e999, "readings": {"temp": 1e999}}'])
    base: dict[str, object] = {"ts": _now_ts(rng), "seq": rng.choice([1, -1, 0, 2**63, 2**80, "1", 1.5, None, []])}
    if kind == "telemetry":
        readings: object = rng.choice([
            {"temp_c": rng.choice([1e308, -1e308, "hot", None, [], {}, True, 2**100])},
            {f"m{i}": i for i in range(rng.choice([65, 1000]))}, {"Bad-Name": 1, "": 2, "a" * 100: 3}, [], "x", None,
            {"temp_c": 4.5}])
        base["readings"] = readings
    elif kind == "fault":
        base.update(rng.choice([{"code": rng.choice(["E21", "e21", "", "X" * 100, 21, None, "'; DROP TABLE", "E21\u202e"])},
                                {"code": "E21", "severity": rng.choice(["critical", 1, None, "x" * 1000])},
                                {"code": "E21", "message": "<script>alert(1)</script>" * 100}]))
    else:
        base.update(rng.choice([{"state": rng.choice(["online", "ONLINE", 1, None, "x" * 500])}, {"firmware": []},
                                {"state": "online", "extra": {"nested": [1, [2, [3]]]}}]))
    if rng.random() < 0.2:
        base[rng.choice(["__proto__", "constructor", "$where", "\u0000", "serial"])] = "evil"
    return "wrong_types", json.dumps(base, allow_nan=True, default=str).encode()


def pick_kind(rng: random.Random) -> str:
    return rng.choice(["telemetry", "telemetry", "fault", "status", "Telemetry", "../fault", "x" * 40, "", "fault/extra"])

