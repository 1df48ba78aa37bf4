"""Fuzz and brute-force harness (issue 15, "Measured"): hostile inputs against a real embedded stack.

Starts the whole system with scripts/run_stack.py on loopback with the production defaults of every limit (chat
rate limits, verification and sign-in lock-outs, text bound: none of the tests' raised limits), then:

1. chat: hostile messages over Rasa's REST channel and socket.io (control characters, bidi overrides, 100 KB texts,
   format strings, HTML/script/SQL, typed intents with entities, other customers' details, malformed bodies and
   events, and the conversation ids of two customers who verified on the other channel) (bench/fuzz_chat.py);
2. at the same time: the brute-force probe (``--guesses`` verification guesses of a seeded victim's e-mail with
   guessed order and serial numbers, the right one among them, each from a fresh conversation and a client address
   of a pool, in ``X-Forwarded-For``: the stack trusts it from loopback), MQTT and HTTP device payloads with valid and
   invalid credentials (bench/fuzz_devices.py), and schemathesis over ``/openapi.json`` anonymously;
3. schemathesis again with a staff (admin) token, once the probe is over (an admin may lift lock-outs);
4. ``ps`` and every log file searched for the stack's secrets, device tokens, the staff token and every seeded
   customer's e-mail address and phone number (bench/fuzz_audit.py).

Writes bench/results/fuzz.json: ``inputs_total`` (not counting the guesses), ``inputs`` per source, one integer per
failure kind (``http_5xx``, ``crashes``, ``hangs_over_5s``, ``data_leaks``, ``secrets_in_logs``,
``customer_details_in_logs``, ``accounts_linked_by_bruteforce``, ``auth_bypass``, ``schema_violations``,
``transport_errors``; target 0 each), examples of each failure, the probe's reply kinds, command, date, duration
and machine.

    .venv-app/bin/python bench/fuzz.py --model models/bot-<fp>.tar.gz [--rest 2500 --sio 800 --mqtt 4000 ...]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import pathlib
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.fuzz_audit import FAILURE_KINDS, audit_logs, audit_processes, crashes, run_schemathesis  # noqa: E402
from bench.fuzz_devices import Tally, http_fuzz, mqtt_fuzz, still_ingests  # noqa: E402
from bench.fuzz_stack import Stack, start_stack, stop_stack  # noqa: E402


def seeded(database_url: str) -> dict[str, Any]:
    """Every seeded customer's identifiers (lower-case) and three customers with an order and a device: the brute
    force's victim and two owners who verify legitimately."""
    from sqlalchemy import select

    from crm_store.db import session_scope
    from crm_store.models import Customer, Device, Purchase

    known: set[str] = set()
    picks: list[dict[str, str]] = []
    personal: list[str] = []
    with session_scope(database_url, write=False) as session:
        for customer in session.scalars(select(Customer).order_by(Customer.id)):
            serials = list(session.scalars(select(Device.serial).where(Device.customer_id == customer.id)))
            orders = list(session.scalars(select(Purchase.order_number).where(Purchase.customer_id == customer.id)))
            known.update(x.lower() for x in [customer.email, customer.phone or "", *serials, *orders] if x)
            personal += [customer.email, *([customer.phone] if customer.phone else [])]
            if serials and orders and customer.phone and len(picks) < 3 and customer.id > 1:
                picks.append({"email": customer.email, "order": orders[0], "serial": serials[0], "phone": customer.phone,
                              "customer_id": str(customer.id)})
    return {"known": sorted(known), "victim": picks[0], "owners": picks[1:3], "personal": personal}


def guesses(victim: dict[str, str], count: int, rng: random.Random) -> tuple[list[str], int]:
    """Order and serial numbers around the victim's (they are sequential), the right one at a random position in the
    second half (a probe without lock-outs would reach it); returns the list and that position."""
    prefix, number = victim["order"].rsplit("-", 1)
    sprefix, snumber = victim["serial"].rsplit("-", 1)
    out: list[str] = []
    offset = 1
    while len(out) < count - 1:
        for delta in (offset, -offset):
            if len(out) < count - 1 and int(number) + delta >= 0:
                out.append(f"{prefix}-{int(number) + delta:0{len(number)}d}")
            if offset % 4 == 0 and len(out) < count - 1 and int(snumber) + delta >= 0:
                out.append(f"{sprefix}-{int(snumber) + delta:0{len(snumber)}d}")
        offset += 1
    rng.shuffle(out)
    position = rng.randrange(count // 2, count) if count > 1 else 0
    out.insert(position, victim["order"])
    return out, position


def run_chat(stack: Stack, spec: dict[str, Any], work: pathlib.Path, name: str) -> dict[str, Any]:
    spec_path, out_path = work / f"{name}-spec.json", work / f"{name}-out.json"
    spec_path.write_text(json.dumps(spec))
    # The REST channel's token travels in the environment (never in the spec file or a command line).
    env = {**os.environ, "REST_CHANNEL_TOKEN": stack.rest_token}
    proc = subprocess.run([str(ROOT / ".venv-rasa/bin/python"), str(ROOT / "bench/fuzz_chat.py"), str(spec_path),
                           str(out_path)], cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not out_path.exists():
        # The run goes on (its other parts still count); the results say this part is missing.
        print(f"bench/fuzz_chat.py ({name}) failed:\n{proc.stderr[-3000:]}", file=sys.stderr, flush=True)
        return {"counts": {}, "failures": {"harness_errors": 1}, "examples": {"harness_errors": [proc.stderr[-1500:]]},
                "latency": {}, "bruteforce": {"guesses_sent": 0, "reply_kinds": {}, "linked_replies": [], "senders": [],
                                              "latency": {}}}
    return json.loads(out_path.read_text())


def linked_conversations(database_url: str, senders: list[str]) -> list[dict[str, Any]]:
    """Channel identities the probe's conversations got (authoritative: the CRM, not the replies)."""
    from sqlalchemy import select

    from crm_store.db import session_scope
    from crm_store.models import ChannelIdentity

    found: list[dict[str, Any]] = []
    with session_scope(database_url, write=False) as session:
        for start in range(0, len(senders), 500):
            rows = session.scalars(select(ChannelIdentity).where(ChannelIdentity.external_id.in_(senders[start:start + 500])))
            found += [{"sender": r.external_id, "customer_id": r.customer_id, "channel": r.channel} for r in rows]
    return found


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu": model, "loadavg_1m_at_start": os.getloadavg()[0],
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "platform": platform.platform()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("BOT_MODEL"))
    parser.add_argument("--rest", type=int, default=800, help="hostile chat messages over REST")
    parser.add_argument("--sio", type=int, default=150, help="hostile chat messages over socket.io")
    parser.add_argument("--mqtt", type=int, default=4000, help="MQTT payloads and connection attempts")
    parser.add_argument("--http-devices", type=int, default=3000, help="HTTP device payloads")
    parser.add_argument("--openapi-examples", type=int, default=20, help="schemathesis cases per operation and phase")
    parser.add_argument("--guesses", type=int, default=10_000, help="verification guesses of the brute-force probe")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent hostile REST conversations")
    parser.add_argument("--guess-concurrency", type=int, default=16)
    parser.add_argument("--xff-pool", type=int, default=1,
                        help="client addresses the probe rotates through (8 gets past the per-address rate limit, so "
                             "the lock-out is what stops it; Rasa then bounds it at ~5 guesses/s here)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--out", default=str(ROOT / "bench/results/fuzz.json"))
    parser.add_argument("--keep", help="copy the stack's logs and reports to this folder")
    args = parser.parse_args()
    if not args.model:
        raise SystemExit("--model (or BOT_MODEL) is required; make fuzz trains one")
    started, started_at = time.time(), dt.datetime.now(dt.timezone.utc)
    host = machine()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        work = pathlib.Path(tmp)
        stack = start_stack(work, args.model)
        print(f"stack ready after {time.time() - started:.0f} s", flush=True)
        try:
            result = exercise(stack, args, work, rng)
            result["processes"] = audit_processes(stack)
        finally:
            stop_stack(stack)
        result["logs"] = audit_logs(stack, result.pop("_secrets"), result.pop("_personal"))
        result["crashes_seen"] = crashes(stack)
        if args.keep:
            subprocess.run(["cp", "-r", str(work), args.keep], check=False)
    failures = result["failures"]
    failures["secrets_in_logs"] = len(result["logs"]["secrets"]) + len(result["processes"])
    failures["customer_details_in_logs"] = len(result["logs"]["personal"])
    failures["crashes"] = len(result["crashes_seen"])
    inputs = result["inputs"]
    out = {
        "command": "make fuzz" + (f' BENCH_ARGS="{shown}"' if (shown := " ".join(_options(sys.argv[1:]))) else ""),
        "date": started_at.isoformat(timespec="seconds"), "duration_s": round(time.time() - started, 1),
        "machine": host, "topology": "embedded", "limits": "production defaults (no CHAT_*/VERIFY_*/SIGN_IN_* overrides)",
        "inputs_total": sum(v for k, v in inputs.items() if k != "bruteforce_guesses"), "inputs": inputs,
        **{kind: int(failures.get(kind, 0)) for kind in FAILURE_KINDS},
        "failures_total": sum(int(failures.get(kind, 0)) for kind in FAILURE_KINDS),
        **{k: v for k, v in result.items() if k not in ("inputs", "failures")},
    }
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False, default=str) + "\n")
    print(json.dumps({k: out[k] for k in ("inputs_total", "inputs", "duration_s", *FAILURE_KINDS)}, indent=1))
    return 0


def _options(argv: list[str]) -> list[str]:
    """The command-line options that change what a run does (not where its model, output and copies are)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--model", "--out", "--keep"):
            skip = True
        elif not arg.startswith(("--model=", "--out=", "--keep=")):
            out.append(arg)
    return out


def exercise(stack: Stack, args: argparse.Namespace, work: pathlib.Path, rng: random.Random) -> dict[str, Any]:
    people = seeded(stack.database_url)
    victim = people["victim"]
    token = stack.staff_token()
    tokens = json.loads(stack.tokens_file.read_text())
    base = {"rasa_url": stack.rasa_url, "seed": args.seed, "victim": victim, "owners": people["owners"],
            "known": people["known"], "concurrency": args.concurrency, "guess_concurrency": args.guess_concurrency,
            "xff_pool": args.xff_pool}
    timings: dict[str, float] = {}

    t0 = time.time()
    chat = run_chat(stack, {**base, "mode": "fuzz", "rest_messages": args.rest, "sio_messages": args.sio}, work, "chat")
    timings["chat_s"] = round(time.time() - t0, 1)
    print(f"chat fuzz: {chat['counts'].get('rest', 0)} REST and {chat['counts'].get('socketio', 0)} socket.io messages in "
          f"{timings['chat_s']} s; failures {chat['failures']}", flush=True)

    guess_list, position = guesses(victim, args.guesses, rng)
    tally = Tally()
    reports = work / "schemathesis"
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        probe = pool.submit(run_chat, stack, {**base, "mode": "bruteforce", "guesses": guess_list}, work, "bruteforce")
        mqtt = pool.submit(mqtt_fuzz, "127.0.0.1", stack.mqtt_port, tokens, args.mqtt, args.seed, tally)
        http = pool.submit(http_fuzz, stack.web_url, tokens, args.http_devices, args.seed, tally)
        anonymous = pool.submit(run_schemathesis, stack.web_url, None, args.openapi_examples, reports / "anonymous")
        for future in (mqtt, http):
            future.result()
        timings["devices_s"] = round(time.time() - t0, 1)
        anonymous_result = anonymous.result()
        probe_result = probe.result()
        brute = probe_result["bruteforce"]
    timings["bruteforce_s"] = round(time.time() - t0, 1)
    print(f"brute force: {brute['reply_kinds']} in {timings['bruteforce_s']} s; devices in {timings['devices_s']} s",
          flush=True)
    ingest_after = still_ingests("127.0.0.1", stack.mqtt_port, tokens, stack.database_url)
    if ingest_after is None:
        tally.fail("hangs_over_5s", {"source": "mqtt", "what": "a valid message after the fuzz was never stored"})
    db_links = linked_conversations(stack.database_url, brute.pop("senders"))
    t0 = time.time()
    staff_result = run_schemathesis(stack.web_url, token, args.openapi_examples, reports / "staff")
    timings["openapi_staff_s"] = round(time.time() - t0, 1)

    failures: dict[str, int] = {}
    examples: dict[str, list[Any]] = {}
    for part in (chat, probe_result, {"failures": tally.failures, "examples": tally.examples}):
        for kind, n in part["failures"].items():
            failures[kind] = failures.get(kind, 0) + n
            examples.setdefault(kind, []).extend(part["examples"].get(kind, [])[:8])
    for name, part in (("anonymous", anonymous_result), ("staff", staff_result)):
        failures["http_5xx"] = failures.get("http_5xx", 0) + part["http_5xx"]
        failures["hangs_over_5s"] = failures.get("hangs_over_5s", 0) + part["over_5s"]
        failures["schema_violations"] = failures.get("schema_violations", 0) + part["schema_violations"]
        examples.setdefault("openapi", []).extend({"run": name, **e} for e in part["examples"][:10])
    linked = {c["sender"] for c in db_links} | {c["sender"] for c in brute["linked_replies"]}
    failures["accounts_linked_by_bruteforce"] = len(linked)
    counts = chat["counts"]
    return {
        "inputs": {"chat_rest": counts.get("rest", 0), "chat_socketio": counts.get("socketio", 0),
                   "openapi_anonymous": anonymous_result["cases"], "openapi_staff": staff_result["cases"],
                   "mqtt_payloads": tally.counts["mqtt"],
                   "mqtt_connections_bad_credentials": tally.counts["mqtt_connections"] - sum(
                       v for k, v in tally.counts.items() if k.startswith("mqtt_connect:valid")),
                   "http_device_payloads": tally.counts["http_device"], "bruteforce_guesses": brute["guesses_sent"]},
        "failures": failures, "examples": examples, "timings": timings,
        "bruteforce": {**brute, "victim_customer_id": int(victim["customer_id"]), "right_guess_position": position,
                       "linked_in_crm": db_links},
        "chat": {"latency": chat["latency"], "by_category": {k: v for k, v in counts.items() if ":" in k},
                 "setup_failures": chat["examples"].get("setup", [])},
        "devices": {"counts": dict(tally.counts), "valid_message_stored_after_s": ingest_after},
        "openapi": {"anonymous": {k: v for k, v in anonymous_result.items() if k != "examples"},
                    "staff": {k: v for k, v in staff_result.items() if k != "examples"}},
        "_secrets": {**stack.secrets(), "staff token": token, **{f"device token {s}": t for s, t in tokens.items()}},
        "_personal": people["personal"],
    }


if __name__ == "__main__":
    threading.excepthook = lambda a: print(f"thread failed: {a.exc_value!r}", file=sys.stderr)
    sys.exit(main())
