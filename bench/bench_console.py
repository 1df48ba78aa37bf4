"""Console latency benchmark: ``.venv-app/bin/python bench/bench_console.py`` (writes bench/results/console.json).

Starts the whole system with scripts/run_stack.py on free ports (or uses ``--web-url`` of a running one with
``ADMIN_PASSWORD`` set), opens the chat widget and the agent console in Debian's Chromium, escalates the chat
and has the agent claim it, then measures:

- agent → customer: from the agent's Send (the reply form submitted) to the reply on the customer's screen;
- customer → console: from the customer's Send to the message in the console's transcript;
  each p50/p95/max over ``--messages`` messages, one at a time, on an otherwise idle machine;
- idle console: requests per minute the console makes over ``--idle-seconds`` with nothing happening
  (the push connection itself is one long request opened before the window).
Times are taken with Date.now() in both pages (one machine, one clock), when a MutationObserver sees the text.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.topology import free_port, throwaway_env  # noqa: E402

from tests.e2e.browser_kit import launch  # noqa: E402

OBSERVE = """(args) => {
  const [selector, prefix] = args;
  window.seen = window.seen || {};
  const root = document.querySelector(selector);
  const scan = () => root.querySelectorAll('li').forEach((li) => {
    const m = li.textContent.match(new RegExp(prefix + ' (\\\\d+)'));
    if (m && !(m[1] in window.seen)) window.seen[m[1]] = Date.now();
  });
  new MutationObserver(scan).observe(root, { childList: true, subtree: true });
}"""



def start_stack(model: str, work: pathlib.Path) -> tuple[subprocess.Popen[str], str, dict[str, str]]:
    ports = {k: free_port() for k in ("rasa", "actions", "web", "mqtt")}
    env, _ = throwaway_env(os.environ, work)  # SQLite files in `work`, the team staffed around the clock
    env.update(CHAT_RATE_PER_CLIENT="100000/minute",
               # 50 messages from one customer within a minute: above the guard's 20/minute per conversation,
               # which would refuse them (a person typing never gets there)
               CHAT_RATE_PER_CONVERSATION="100000/minute",
               ANONYMOUS_ESCALATIONS_PER_CLIENT="100000/hour")  # every simulated customer is 127.0.0.1
    cmd = [str(ROOT / ".venv-app/bin/python"), str(ROOT / "scripts/run_stack.py"), "--model", model,
           "--rasa-port", str(ports["rasa"]), "--actions-port", str(ports["actions"]), "--web-port", str(ports["web"]),
           "--mqtt-port", str(ports["mqtt"]), "--mqtt-tls-port", str(free_port()), "--env-file", str(work / ".env"), "--log-dir", str(work / "log")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, ready = time.time() + 600, False
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.strip() == "READY":
            ready = True
            break
        if time.time() > deadline:
            break
    if not ready:  # the launcher gave up (its output ended) or took too long
        proc.kill()
        raise SystemExit(f"the stack did not start; its logs are in {work / 'log'}")
    secrets = dict(line.split("=", 1) for line in (work / ".env").read_text().splitlines() if "=" in line and not line.startswith("#"))
    return proc, f"http://127.0.0.1:{ports['web']}", secrets


def post(url: str, body: dict, token: str | None = None) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[max(0, int(round(0.95 * len(ordered))) - 1)], 1), "max_ms": round(ordered[-1], 1)}


def run(web: str, admin_password: str, env: dict[str, str], messages: int, idle_seconds: float) -> dict:
    from playwright.sync_api import sync_playwright

    subprocess.run([str(ROOT / ".venv-app/bin/python"), "-m", "web_service.manage", "ensure-user", "--username", "bench-agent",
                    "--role", "agent", "--full-name", "Bench Agent", "--password-env", "PW"],
                   cwd=ROOT, env=dict(env, PW="bench-agent-password"), check=True, capture_output=True)
    with sync_playwright() as pw:
        browser = launch(pw)
        customer = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
        agent = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        customer.goto(f"{web}/chat")
        customer.locator("li.msg.bot").first.wait_for(timeout=60_000)
        customer.fill("#input", "I want to talk to a person")
        customer.press("#input", "Enter")
        customer.locator("li.msg.bot", has_text="bringing in a person").wait_for(timeout=60_000)
        session_id = json.loads(customer.evaluate("localStorage.getItem('appliance-care-chat')"))["sessionId"]

        agent.goto(f"{web}/console")
        agent.fill("#username", "bench-agent")
        agent.fill("#password", "bench-agent-password")
        agent.click("#login-form button[type=submit]")
        agent.locator("#live", has_text="live").wait_for(timeout=30_000)
        agent.locator(f'#queue tr[data-conversation="{session_id}"]').click()
        agent.locator("#claim:not([disabled])").click()
        agent.locator("#reply:not([disabled])").wait_for(timeout=30_000)
        customer.locator("li.msg.system", has_text="joined").wait_for(timeout=30_000)

        customer.evaluate(OBSERVE, ["#messages", "bench-a2c"])
        agent.evaluate(OBSERVE, ["#transcript", "bench-c2a"])
        a2c, c2a = [], []
        for i in range(messages):
            sent = agent.evaluate("""(text) => { document.getElementById('reply').value = text;
                const t = Date.now(); document.getElementById('reply-form').requestSubmit(); return t; }""", f"bench-a2c {i}")
            customer.wait_for_function(f"() => window.seen && '{i}' in window.seen", timeout=30_000)
            a2c.append(customer.evaluate(f"window.seen['{i}']") - sent)
        for i in range(messages):
            sent = customer.evaluate("""(text) => { document.getElementById('input').value = text;
                const t = Date.now(); document.getElementById('composer').requestSubmit(); return t; }""", f"bench-c2a {i}")
            agent.wait_for_function(f"() => window.seen && '{i}' in window.seen", timeout=30_000)
            c2a.append(agent.evaluate(f"window.seen['{i}']") - sent)

        # The idle window opens once the console has been quiet for 2 s (the last reads done).
        last_request = [time.monotonic()]
        agent.on("request", lambda _r: last_request.__setitem__(0, time.monotonic()))
        deadline = time.monotonic() + 60
        while time.monotonic() - last_request[0] < 2 and time.monotonic() < deadline:
            agent.wait_for_timeout(200)
        requests: list[str] = []
        agent.on("request", lambda r: requests.append(r.url))
        agent.wait_for_timeout(idle_seconds * 1000)  # the idle window being measured
        browser.close()
    return {"agent_to_customer": summary(a2c), "customer_to_console": summary(c2a),
            "idle_console": {"seconds": idle_seconds, "requests": len(requests),
                             "requests_per_minute": round(len(requests) * 60 / idle_seconds, 2), "urls": requests[:20]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--model", default=os.environ.get("BOT_MODEL"))
    parser.add_argument("--web-url", default=None, help="a running stack (ADMIN_PASSWORD and its env in the environment)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/console.json"))
    args = parser.parse_args()
    proc = None
    if args.web_url:
        web, env = args.web_url, dict(os.environ)
    else:
        if not args.model:
            raise SystemExit("--model (or BOT_MODEL) is needed to start the stack")
        work = pathlib.Path(tempfile.mkdtemp(prefix="bench-console-"))
        proc, web, secrets = start_stack(args.model, work)
        env = dict(os.environ, DATABASE_URL=f"sqlite:///{work}/crm.db", **secrets)
    try:
        result = run(web, env.get("ADMIN_PASSWORD", ""), env, args.messages, args.idle_seconds)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    result.update({"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_1m": os.getloadavg()[0]},
                   "target_p95_ms": 300, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("agent_to_customer", "customer_to_console")}, indent=1))
    print("idle console requests per minute:", result["idle_console"]["requests_per_minute"])


if __name__ == "__main__":
    main()
