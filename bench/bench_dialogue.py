"""Conversation suite benchmark (issue 16): bench/dialogue_suite.yml through a real stack.

Starts the whole system with scripts/run_stack.py (Rasa with the given model, the action server, the web service,
a fresh SQLite CRM with the demo data, the team staffed around the clock), plays every conversation over Rasa's REST
channel as a customer would, checks each reply and the CRM afterwards (tickets, their device and text, handoffs),
and writes bench/results/dialogue.json: passed, total, pass_rate, per_category, held_out (the share never used to
adjust the dialogue rules) and trained_share, issue_cases (the issue's numbered cases), containment_rate (of the
conversations where no person was needed, the share that ended without one), escalated_when_needed, failures.

    .venv-app/bin/python bench/bench_dialogue.py --model models/bot-<fp>.tar.gz [--only ID ...]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.topology import free_port, throwaway_env  # noqa: E402

from bench.dialogue_suite import Customers, load_suite, run_conversation, summarise  # noqa: E402



def start_stack(work: pathlib.Path, model: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    ports = {"rasa": free_port(), "actions": free_port(), "web": free_port(), "mqtt": free_port(), "mqtt-tls": free_port()}
    # The project's escalation rules as shipped, with the team staffed around the clock whatever the hour.
    staffed = re.sub(r"(?m)^  always: false", "  always: true", (ROOT / "escalation.yml").read_text())
    env, _ = throwaway_env(os.environ, work, escalation=staffed)
    env.update(FACEBOOK_APP_SECRET="",
               # Every suite customer comes from 127.0.0.1: the per-address limit would count the whole suite.
               CHAT_RATE_PER_CLIENT="100000/minute", ANONYMOUS_ESCALATIONS_PER_CLIENT="100000/hour")
    cmd = [str(ROOT / ".venv-app/bin/python"), str(ROOT / "scripts/run_stack.py"), "--model", model,
           "--env-file", str(work / ".env"), "--log-dir", str(work / "log"),
           *[a for name, port in ports.items() for a in (f"--{name}-port", str(port))]]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    deadline = time.time() + 420
    while time.time() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                raise SystemExit("the stack did not start; see " + str(work / "log")) from None
            continue
        if line.strip() == "READY":
            return proc, {"rasa_url": f"http://127.0.0.1:{ports['rasa']}", "database_url": env["DATABASE_URL"],
                          "rest_token": env["REST_CHANNEL_TOKEN"]}
    proc.kill()
    raise SystemExit("timed out starting the stack")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("BOT_MODEL"))
    parser.add_argument("--only", nargs="*", help="conversation ids to run (default: all)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/dialogue.json"))
    args = parser.parse_args()
    if not args.model:
        raise SystemExit("--model (or BOT_MODEL) is required; make bench-dialogue trains one")
    suite = [c for c in load_suite() if not args.only or c["id"] in args.only]
    with tempfile.TemporaryDirectory(prefix="bench-dialogue-") as tmp:
        work = pathlib.Path(tmp)
        proc, stack = start_stack(work, args.model)
        try:
            customers = Customers(stack["database_url"])
            outcomes = []
            started = time.time()
            for conv in suite:
                outcome = run_conversation(conv, stack["rasa_url"], stack["database_url"], customers,
                                           rest_token=stack["rest_token"])
                outcomes.append(outcome)
                print(f"{'PASS' if outcome.passed else 'FAIL'} {conv['id']}" +
                      ("" if outcome.passed else f": {outcome.failures[0]}"), flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
    result = {"model": pathlib.Path(args.model).name, "seconds": round(time.time() - started, 1), **summarise(outcomes),
              "transcripts": {o.id: o.transcript for o in outcomes if not o.passed}}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: result[k] for k in ("passed", "total", "held_out", "containment_rate", "issue_cases")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
