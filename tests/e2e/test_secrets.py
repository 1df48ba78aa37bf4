"""No secret in a command line, a URL or a log; no customer's e-mail or phone number in a log.

Runs after the other end-to-end tests of the same stack (it sorts after them), so the logs hold what every
flow wrote: verification, tickets, device faults, handoffs, Messenger, erasure. Each secret of the stack's
.env is looked for in every process's command line and in every log file, and so are the demo customer's
e-mail address and phone number and a device's broker password.
"""

from __future__ import annotations

import json
import subprocess
import uuid

from tests.e2e.conftest import Stack

SECRETS = ("SECRET_KEY", "RASA_TOKEN", "ACTION_SERVER_TOKEN", "ADMIN_PASSWORD", "MQTT_WORKER_PASSWORD",
           "MQTT_BRIDGE_PASSWORD")
PERSONAL = ("anna.schmidt@example.com", "+49 30 1234567")


def _logs(stack: Stack) -> dict[str, str]:
    files = {str(p): p.read_text(errors="replace") for p in (stack.work / "log").glob("*.log")}
    files["supervisor output"] = "".join(stack.output or [])
    return files


def test_no_secret_or_customer_detail_in_any_log_or_process_list(stack: Stack):
    # One more verified chat, so that an e-mail address certainly went through every process just now.
    sender = f"e2e-{uuid.uuid4().hex[:8]}"
    stack.say(sender, "link my account")
    stack.say(sender, "anna.schmidt@example.com")
    stack.say(sender, "ORD-2021-000101")
    values = {name: stack.env[name] for name in SECRETS if stack.env.get(name)}
    assert len(values) == len(SECRETS), sorted(set(SECRETS) - set(values))
    tokens_file = next(stack.work.rglob("device_tokens.json"), None)
    if tokens_file is not None:
        serial, token = next(iter(json.loads(tokens_file.read_text()).items()))
        values[f"device token of {serial}"] = token

    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    logs = _logs(stack)
    assert len(logs) > 3 and sum(len(text) for text in logs.values()) > 10_000  # the logs were really read
    leaks = [(name, "process list") for name, value in values.items() if value in processes]
    leaks += [(name, where) for name, value in values.items() for where, text in logs.items() if value in text]
    leaks += [(detail, where) for detail in PERSONAL for where, text in logs.items() if detail in text]
    assert not leaks, leaks
    assert "token=" not in "".join(line for text in logs.values() for line in text.splitlines() if "/conversations/" in line)


def test_rasa_runs_without_its_secret_on_the_command_line(stack: Stack):
    rasa = [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
            .stdout.splitlines() if "rasa_server.py" in line]
    assert rasa, "Rasa is started through scripts/rasa_server.py"
    assert all("--auth-token" not in line and "--jwt-secret" not in line for line in rasa)
