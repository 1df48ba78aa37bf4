"""Chat benchmark: concurrent conversations through one Rasa server, against `rasa init`'s bot on the same Rasa.

    .venv-rasa/bin/python bench/bench_chat.py --model models/bot-<fp>.tar.gz [--levels 1,10,20,50]
        [--channels rest,socketio] [--duration 20] [--warmup 4] [--rounds 3]

Default topology: starts the whole stack with scripts/run_stack.py (as the end-to-end tests do: SQLite CRM and
tracker in a throw-away folder, free loopback ports), and `rasa init`'s bot (generated and trained into
bench/tmp/bare-rasa-<fingerprint>/ once, then reused) as a second Rasa server. For each number of concurrent
customers and each channel it loads the product, then the bare bot, so both see the same machine state.
`--topology production` starts make run-production's topology the same way instead (two Rasa servers behind
HAProxy, two action servers, two web replicas, two device workers; the CRM and Rasa's trackers in throw-away
PostgreSQL databases, dropped at the end; Rasa's lock store and socket.io rooms in Redis db 5 under a key prefix of
its own) and writes chat-production.json. With `--rasa-url URL --web-url URL` it loads a stack that is already
running instead (the admin password and, for production, REST_CHANNEL_TOKEN from the environment or --env-file).

Writes bench/results/chat.json: `turns_per_s` (REST, the product, the best level: one Rasa server saturated),
`p50_ms_at_20`/`p95_ms_at_20`/`p99_ms_at_20` (REST, 20 customers), the bare bot's `bare_rasa_*` figures and
`p95_ratio_to_bare_rasa_at_20`, per-level figures for both channels with the CPU used by each process, the
machine and the git commit. One 20 s window's p95 rests on its slowest ~20 turns and moved by 0.5 between runs minutes
apart here, so at 20 customers over REST the product and the bare bot are measured `--rounds` times (default 3) back
to back, the order alternating: the ratio is the median of the rounds' ratios (each in `p95_ratio_rounds_at_20`,
each round in `per_level`'s `rounds`), and the figures at 20 are medians over the rounds. Only 127.0.0.1 is
contacted; every level stops after warmup + duration seconds (and at most --max-turns turns).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import pathlib
import platform
import queue
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(1, str(pathlib.Path(__file__).resolve().parents[1]))
from chat_load import Step, run_level, summarise  # noqa: E402

from scripts.topology import free_port, throwaway_env  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
TMP = ROOT / "bench" / "tmp"
RESULTS = ROOT / "bench" / "results"
RASA = ROOT / ".venv-rasa" / "bin" / "rasa"
APP_PY = ROOT / ".venv-app" / "bin" / "python"

# The product's conversation: greeting, verification (list devices first asks for it), device list, a problem
# report that opens a ticket (or finds the one already open), its status, thanks. Seven turns.
PROBLEMS = {  # a warning-level, non-safety fault per appliance category (crm_store/demo_data.py FAULTS)
    "washing_machine": "my washing machine won't drain",
    "fridge": "my fridge is not cooling",
    "dishwasher": "my dishwasher is not cleaning, the filter is dirty",
    "boiler": "my boiler keeps losing pressure",
    "air_conditioner": "my air conditioner is blowing warm air",
}


def product_script(_ctx: dict[str, str]) -> list[Step]:
    return [
        Step("hello", r"service assistant|How can I help"),
        Step("what devices do I have?", r"e-mail address"),
        Step(lambda c: c["email"], r"order numbers"),
        Step(lambda c: c["order"], r"found your account.*registered with us"),
        Step(lambda c: c["problem"], r"(?:opened|already have) ticket (?P<ticket>T-\d{6})"),
        Step(lambda c: f"what's the status of ticket {c['ticket']}?", r"Ticket T-\d{6} \("),
        Step("thanks", r"You're welcome"),
    ]


def bare_script(_ctx: dict[str, str]) -> list[Step]:
    """`rasa init`'s bot: its stories and rules (greet, mood, bot challenge, goodbye). Six turns.

    Each turn is one its training data holds (a story's next step or a rule): a turn off its stories gets what
    TED happens to generalise to, which differs between trainings (unseeded), and the bot is trained here."""
    return [
        Step("hello", r"How are you"),
        Step("I am sad", r"Did that help you"),
        Step("yes", r"carry on"),
        Step("are you a bot?", r"I am a bot"),
        Step("am I talking to a human?", r"I am a bot"),
        Step("bye", r"Bye"),
    ]



def run(cmd: list[str], **kw: Any) -> str:
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, **kw).stdout.strip()


# --- processes -------------------------------------------------------------------------------------------------
# The chat guard's rate limits (20 messages a minute per conversation, 60 per client address) would refuse the
# benchmark's closed-loop customers, who all come from 127.0.0.1; the guard's other checks stay on.
NO_CHAT_RATE_LIMITS = {"CHAT_RATE_PER_CLIENT": "1000000/minute", "CHAT_RATE_PER_CONVERSATION": "1000000/minute"}
# The PostgreSQL server for a production stack started here, as bench_ingest.py names it (any database of it; the
# benchmark's own databases are created beside it). Trust authentication on loopback, as on this machine.
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


class Stack:
    """scripts/run_stack.py in a throw-away folder, stopped with SIGTERM (it stops its children in order)."""

    def __init__(self, model: str, work: pathlib.Path, customers: int, topology: str = "default") -> None:
        self.work, self.databases = work, []
        self.ports = {k: free_port() for k in ("rasa", "actions", "web", "mqtt", "mqtt-tls", "web-tls")}
        # Data of its own (production: throw-away PostgreSQL databases, a Redis key prefix), a REST channel token (the
        # benchmark's customers are the trusted back end the channel requires) and the team staffed around the
        # clock, so that no conversation is handed to a person whatever time the benchmark runs.
        env, self.databases = throwaway_env(os.environ, work, "embedded" if topology == "default" else topology,
                                            name="bench", postgres_url=PG_URL, redis_db=5)
        env.update(NO_CHAT_RATE_LIMITS)
        os.environ["REST_CHANNEL_TOKEN"] = env["REST_CHANNEL_TOKEN"]  # chat_load's REST transport sends it
        self.topology, self.proc = topology, None
        try:
            if self.databases:
                self._postgres("create_missing_databases", env["DATABASE_URL"])
            self._start(model, env, customers)
        except BaseException:
            try:
                self.stop()  # drops the throw-away databases too
            except (OSError, subprocess.CalledProcessError) as err:  # the start-up error is the one to report
                print(f"note: clean-up after a failed start failed too: {err}", file=sys.stderr, flush=True)
            raise

    def _start(self, model: str, env: dict[str, str], customers: int) -> None:
        work = self.work
        # More demo customers than run_stack.py loads (300), so that every conversation of a run can verify as
        # a customer no earlier conversation used: a customer asking about their ticket again and again is
        # handed to a person (escalation.yml, repeat_contact), which is not the turn being measured.
        for module, extra in (("crm_store.migrate", []), ("crm_store.demo_data", ["--customers", str(customers)])):
            subprocess.run([str(APP_PY), "-m", module, *extra], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.env_file = work / ".env"
        cmd = [str(APP_PY), str(ROOT / "scripts" / "run_stack.py"), "--model", model, "--env-file", str(self.env_file),
               "--log-dir", str(work / "log"), "--pki-dir", str(work / "pki")]
        cmd += [a for k, p in self.ports.items() for a in (f"--{k}-port", str(p))]
        if self.topology == "production":
            cmd += ["--topology", "production"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True).start()  # type: ignore[union-attr]
        # run_stack.py's own wait for readiness (STACK_START_SECONDS, 420 s by default), and a minute more.
        deadline, output = time.time() + float(os.environ.get("STACK_START_SECONDS") or 420) + 60, []
        while time.time() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            output.append(line)
            if line.strip() == "READY":
                break
        else:
            raise SystemExit("the stack did not start:\n" + "".join(output)[-3000:])
        if self.proc.poll() is not None:
            raise SystemExit("the stack exited during start-up:\n" + "".join(output)[-3000:])
        self.rasa_url = f"http://127.0.0.1:{self.ports['rasa']}"
        self.web_url = f"http://127.0.0.1:{self.ports['web']}"

    def admin_password(self) -> str:
        for line in self.env_file.read_text().splitlines():
            if line.startswith("ADMIN_PASSWORD="):
                return line.split("=", 1)[1].strip()
        raise SystemExit("no ADMIN_PASSWORD in the stack's .env")

    def pids(self) -> dict[str, list[int]]:
        return stack_processes(self.work / "children.json")

    def _postgres(self, function: str, url: str) -> None:
        # crm_store.db's helpers, in the app environment (SQLAlchemy 2 and psycopg 3 live there).
        code = f"import sys; from crm_store.db import {function}; {function}(sys.argv[1], sys.argv[2:])"
        subprocess.run([str(APP_PY), "-c", code, url, *self.databases], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})

    def stop(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
        finally:
            if self.databases:
                self._postgres("drop_databases", PG_URL)
                self.databases = []


def rasa_version() -> str:
    return run([str(ROOT / ".venv-rasa" / "bin" / "python"), "-c", "import rasa; print(rasa.__version__)"])


def bare_bot_model() -> pathlib.Path:
    """`rasa init`'s bot, generated and trained once per Rasa installation (fingerprint: version + pins)."""
    fp = hashlib.sha256((rasa_version() + (ROOT / "requirements" / "rasa.txt").read_text()).encode()).hexdigest()[:12]
    folder = TMP / f"bare-rasa-{fp}"
    models = sorted((folder / "models").glob("*.tar.gz")) if folder.exists() else []
    if models:
        return models[-1]
    print(f"==> generating and training rasa init's bot in {folder}", file=sys.stderr, flush=True)
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.mkdir(parents=True)
    env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([str(RASA), "init", "--no-prompt", "--init-dir", str(folder)], cwd=folder, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    models = sorted((folder / "models").glob("*.tar.gz"))
    if not models:
        raise SystemExit(f"rasa init trained no model in {folder}/models")
    return models[-1]


class BareRasa:
    """`rasa init`'s bot served by the same Rasa, with its own defaults (in-memory tracker, no action server)."""

    def __init__(self, model: pathlib.Path, work: pathlib.Path) -> None:
        self.port = free_port()
        credentials = work / "bare-credentials.yml"
        # REST and socket.io through the product's channel classes, as scripts/run_stack.py writes them for make run.
        credentials.write_text("".join((ROOT / "bot" / name).read_text() for name in ("credentials.yml", "credentials.rest.yml")))
        env = {**os.environ, "RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3", "REST_CHANNEL_TOKEN": "",
               "SOCKETIO_REDIS_URL": "", "SOCKETIO_REDIS_PASSWORD": "", "SOCKETIO_REDIS_CHANNEL": "rasa-socketio",
               "CHAT_SESSION_SECRET": secrets.token_hex(16), "PYTHONPATH": str(ROOT), **NO_CHAT_RATE_LIMITS}
        self.log = open(work / "bare-rasa.log", "ab")
        self.proc = subprocess.Popen(
            [str(RASA), "run", "--model", str(model), "--credentials", str(credentials), "--interface", "127.0.0.1",
             "--port", str(self.port)], cwd=model.parent.parent, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 300
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the bare Rasa bot exited during start-up; see {work}/bare-rasa.log")
            try:
                req = urllib.request.Request(f"{self.url}/webhooks/rest/webhook", headers={"Content-Type": "application/json"},
                                             data=json.dumps({"sender": "bench-probe", "message": "hello"}).encode())
                with urllib.request.urlopen(req, timeout=10) as resp:
                    if json.loads(resp.read()):
                        return
            except (OSError, ValueError):
                pass
            time.sleep(1)
        self.stop()
        raise SystemExit("the bare Rasa bot did not answer in 300 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# --- data and measurement ----------------------------------------------------------------------------------------

def api(url: str, token: str | None = None, body: Any = None) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def demo_customers(web_url: str, password: str, limit: int) -> list[dict[str, str]]:
    """Demo customers the script can verify: e-mail, one order number and a problem with an appliance of which
    they own exactly one (so the bot needs no "which one?" question) and no open ticket, read through the CRM API."""
    from concurrent.futures import ThreadPoolExecutor

    token = api(f"{web_url}/api/auth/token", body={"username": "admin", "password": password})["access_token"]
    listed: list[dict[str, Any]] = []
    while len(listed) < limit:
        page = api(f"{web_url}/api/customers?offset={len(listed)}&limit=200", token)
        if not page:
            break
        listed += page
    with ThreadPoolExecutor(4) as pool:
        details = list(pool.map(lambda c: api(f"{web_url}/api/customers/{c['id']}", token), listed[:limit]))
    out: list[dict[str, str]] = []
    for detail in details:
        categories = [d["model"]["category"] for d in detail["devices"]]
        single = [c for c in PROBLEMS if categories.count(c) == 1]
        # A customer with an open ticket may be handed to a person at the status question (escalation.yml):
        # then the bot rightly stays quiet, and the turn measured would be another one.
        open_tickets = [t for t in detail["tickets"] if t["status"] not in ("resolved", "closed")]
        if single and detail["purchases"] and not open_tickets:
            out.append({"email": detail["customer"]["email"], "order": detail["purchases"][0]["order_number"],
                        "problem": PROBLEMS[single[len(out) % len(single)]]})
    return out


def _children(parent: int) -> list[int]:
    found = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while /proc was read
    return found


# run_stack.py's process names (children.json: "rasa-1", "haproxy", ...) by the role the results report.
ROLES = {"rasa": "rasa", "actions": "actions", "web": "web", "worker": "worker", "broker": "broker", "haproxy": "balancer"}


def stack_processes(children: pathlib.Path) -> dict[str, list[int]]:
    """The processes of a `scripts/run_stack.py` stack by role (rasa, actions, web, worker, broker, balancer),
    from the supervisor's own record of its children (`children.json`, name -> current pid): one each on the
    default topology, two of most on the production one. Empty when the file is missing."""
    try:
        names = json.loads(children.read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, list[int]] = {}
    for name, pid in names.items():
        role = ROLES.get(name.split("-")[0])
        if role:
            # HAProxy's master (-W) forwards nothing itself: its worker, a grandchild, does the work.
            out.setdefault(role, []).extend([int(pid)] + (_children(int(pid)) if role == "balancer" else []))
    return out


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_facts() -> dict[str, Any]:
    cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    meminfo = pathlib.Path("/proc/meminfo").read_text().split()
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gb": round(int(meminfo[1]) / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version(), "rasa": rasa_version(),
            "loadavg_at_start": list(os.getloadavg())}


def git_commit() -> dict[str, Any]:
    commit = run(["git", "rev-parse", "HEAD"], cwd=ROOT)
    dirty = bool(run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT))
    return {"commit": commit, "dirty": dirty}


HEADLINE_USERS = 20


def paired_rounds(level: dict[str, Any]) -> dict[str, Any]:
    """The headline figures at 20 customers from one level's results: ``level`` is ``{"product": summary,
    "bare_rasa": summary, "rounds": [{"product": summary, "bare_rasa": summary}, ...]}`` (``rounds`` and
    ``bare_rasa`` optional; summaries as :func:`measure` returns, latencies in ms). Each round's p95 ratio is the
    product's p95 over the bare bot's measured beside it; the headline ratio is the median of the rounds' ratios,
    and each latency figure the median over the rounds (one round: its own figures). A round without the bare bot
    has no ratio."""
    rounds = level.get("rounds")
    if rounds is None:  # measured once: the level's own pair is its only round
        rounds = [{bot: level[bot] for bot in ("product", "bare_rasa") if bot in level}] if "product" in level else []

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 1) if values else None

    def figure(bot: str, name: str) -> float | None:
        return median([r[bot][name] for r in rounds if bot in r and r[bot].get(name) is not None])

    ratios = [round(r["product"]["p95_ms"] / r["bare_rasa"]["p95_ms"], 2) for r in rounds
              if "bare_rasa" in r and r["product"].get("p95_ms") and r["bare_rasa"].get("p95_ms")]
    ratio = statistics.median(ratios) if ratios else None
    return {
        "p50_ms_at_20": figure("product", "p50_ms"),
        "p95_ms_at_20": figure("product", "p95_ms"),
        "p99_ms_at_20": figure("product", "p99_ms"),
        "bare_rasa_p95_ms_at_20": figure("bare_rasa", "p95_ms"),
        "p95_ratio_to_bare_rasa_at_20": round(ratio, 2) if ratio is not None else None,
        "p95_ratio_rounds_at_20": ratios,
    }


def measure(args: argparse.Namespace, label: str, url: str, script: Any, customers: list[dict[str, str]],
            users: int, channel: str, pids: dict[str, list[int]]) -> dict[str, Any]:
    def used(role: str) -> float:  # a replica that died since the start counts nothing from then on
        total = 0.0
        for pid in pids[role]:
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total

    cpu0 = {k: used(k) for k in pids}
    wall0, load0 = time.monotonic(), os.getloadavg()[0]
    result, begin, end = asyncio.run(run_level(
        channel=channel, rasa_url=url, users=users, script=script, customers=customers, warmup=args.warmup,
        duration=args.duration, timeout=args.turn_timeout, max_turns=args.max_turns))
    wall = time.monotonic() - wall0
    summary = summarise(result, (begin, end))
    cpu = {k: used(k) - cpu0[k] for k in pids}
    summary["cores_used"] = {k: round(v / wall, 2) for k, v in cpu.items()}
    # CPU time of the Rasa process(es) per turn: unlike turns/s, it does not depend on how much of the shared
    # machine the process got, so it compares runs made while other work ran beside them.
    rasa_cpu = cpu.get("rasa", cpu.get("bare_rasa"))
    turns = summary["turns_ok_including_warmup"]
    summary["rasa_cpu_ms_per_turn"] = round(1000 * rasa_cpu / turns, 1) if rasa_cpu is not None and turns else None
    summary["loadavg_1m_before"] = round(load0, 2)
    print(f"{label:8s} {channel:8s} N={users:<3d} {summary['turns_per_s']:6.2f} turns/s  p50 {summary['p50_ms']} "
          f"p95 {summary['p95_ms']} p99 {summary['p99_ms']} ms  failed {summary['turns_failed']}  "
          f"Rasa CPU {summary['rasa_cpu_ms_per_turn']} ms/turn  "
          f"cores {summary['cores_used']}", flush=True)
    for failure in summary["failures"]:
        print(f"    failure: {failure}", flush=True)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="the product's model archive (for the stack the benchmark starts)")
    parser.add_argument("--topology", choices=("default", "production"), default="default")
    parser.add_argument("--rasa-url", help="a running stack's Rasa URL customers reach (e.g. the load balancer)")
    parser.add_argument("--web-url", help="a running stack's web service (reads demo customers)")
    parser.add_argument("--children-file", default=str(ROOT / "var" / "production" / "children.json"),
                        help="production topology: the supervisor's children.json, for CPU per process")
    parser.add_argument("--env-file", help="with --rasa-url: the stack's .env (ADMIN_PASSWORD, REST_CHANNEL_TOKEN)")
    parser.add_argument("--levels", default="1,10,20,50", help="concurrent customers, comma separated")
    parser.add_argument("--channels", default="rest,socketio")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per level and bot")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds run before measuring, per level and bot")
    parser.add_argument("--turn-timeout", type=float, default=60.0)
    parser.add_argument("--max-turns", type=int, default=5000, help="upper bound of turns per level and bot")
    parser.add_argument("--customers", type=int, default=3000, help="demo customers loaded into the CRM")
    parser.add_argument("--no-bare", action="store_true", help="leave out rasa init's bot")
    parser.add_argument("--rounds", type=int, default=3,
                        help="back-to-back product/bare pairs at 20 customers on the headline channel (median ratio)")
    parser.add_argument("--out", help="results file (default bench/results/chat[-production].json)")
    args = parser.parse_args()
    # A SIGTERM (a CI time-out, `kill`) or a closed terminal stops the benchmark as Ctrl-C does: through the
    # `finally` below, which stops the stack and drops its throw-away databases.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    levels = [int(x) for x in args.levels.split(",")]
    channels = args.channels.split(",")
    head = "rest" if "rest" in channels else channels[0]  # the channel of the headline figures
    for url in (args.rasa_url, args.web_url):
        if url and not url.startswith(("http://127.0.0.1", "http://localhost")):
            raise SystemExit("the benchmark only loads servers on this machine (127.0.0.1)")

    work = TMP / f"chat-run-{secrets.token_hex(4)}"
    work.mkdir(parents=True)
    facts, commit = machine_facts(), git_commit()
    stack = bare = None
    try:
        if not args.rasa_url:
            if not args.model:
                raise SystemExit("--model is required unless --rasa-url names a running stack")
            bare_model = None if args.no_bare else bare_bot_model()
            stack = Stack(args.model, work, args.customers, args.topology)
            rasa_url, web_url, password, pids = stack.rasa_url, stack.web_url, stack.admin_password(), stack.pids()
        else:
            if not args.web_url:
                raise SystemExit("--rasa-url needs --web-url")
            bare_model = None if args.no_bare else bare_bot_model()
            rasa_url, web_url = args.rasa_url.rstrip("/"), args.web_url.rstrip("/")
            pids = stack_processes(pathlib.Path(args.children_file))
            if not pids:
                print(f"note: no {args.children_file}; CPU per process is not reported", flush=True)
            # The admin password and (production) the REST channel token: the environment, else the stack's .env.
            from_file = dict(line.split("=", 1) for line in pathlib.Path(args.env_file).read_text().splitlines()
                             if "=" in line and not line.startswith("#")) if args.env_file else {}
            password = os.environ.get("ADMIN_PASSWORD") or from_file.get("ADMIN_PASSWORD", "").strip()
            if not os.environ.get("REST_CHANNEL_TOKEN") and from_file.get("REST_CHANNEL_TOKEN", "").strip():
                os.environ["REST_CHANNEL_TOKEN"] = from_file["REST_CHANNEL_TOKEN"].strip()
        customers = demo_customers(web_url, password, args.customers)
        bare_pids: dict[str, list[int]] = {}
        if bare_model is not None:
            bare = BareRasa(bare_model, work)
            bare_pids = {"bare_rasa": [bare.proc.pid]}
        print(f"product Rasa {rasa_url}, {len(customers)} demo customers; bare bot {bare.url if bare else 'skipped'}",
              flush=True)
        per_level: dict[str, dict[str, Any]] = {}
        used = 0  # customers already verified in this run: each level goes on with the next ones
        reused = False  # a customer's second conversation asks about their ticket again: handed to a person

        def product_at(users: int, channel: str) -> dict[str, Any]:
            nonlocal used, reused
            if used + users > len(customers):
                print("    note: every demo customer has had a conversation; starting again from the first (their "
                      "status turns may now be handed to a person: raise --customers)", flush=True)
                used, reused = 0, True
            summary = measure(args, "product", rasa_url, product_script, customers[used:] + customers[:used],
                              users, channel, pids)
            used += summary["conversations_started"]
            return summary

        def bare_at(users: int, channel: str) -> dict[str, Any]:
            fake = [{"n": str(i)} for i in range(users)]
            return measure(args, "bare", bare.url, bare_script, fake, users, channel, bare_pids)

        for users in levels:
            for channel in channels:
                key = f"{channel}_{users}"
                per_level[key] = {"product": product_at(users, channel)}
                if bare is None:
                    continue
                per_level[key]["bare_rasa"] = bare_at(users, channel)
                if users == HEADLINE_USERS and channel == head and args.rounds > 1:
                    # The headline ratio from several back-to-back pairs, the order alternating (bare first in
                    # even rounds) so that a machine speeding up or slowing down favours neither bot.
                    rounds = [{"product": per_level[key]["product"], "bare_rasa": per_level[key]["bare_rasa"]}]
                    for number in range(2, args.rounds + 1):
                        print(f"    round {number} of {args.rounds} at {users} customers over {channel}", flush=True)
                        if number % 2 == 0:
                            pair = {"bare_rasa": bare_at(users, channel)}
                            pair["product"] = product_at(users, channel)
                        else:
                            pair = {"product": product_at(users, channel)}
                            pair["bare_rasa"] = bare_at(users, channel)
                        rounds.append(pair)
                    per_level[key]["rounds"] = rounds
    finally:
        if bare is not None:
            bare.stop()
        if stack is not None:
            stack.stop()

    def fig(channel: str, users: int, bot: str, name: str) -> Any:
        return per_level.get(f"{channel}_{users}", {}).get(bot, {}).get(name)

    headline = paired_rounds(per_level.get(f"{head}_{HEADLINE_USERS}", {}))
    best = max((fig(head, n, "product", "turns_per_s") or 0 for n in levels), default=None)
    bare_best = max((fig(head, n, "bare_rasa", "turns_per_s") or 0 for n in levels), default=None) if bare_pids else None
    out = {
        "topology": args.topology,
        "channel_of_headline_figures": head,
        "turns_per_s": best,
        **headline,
        "bare_rasa_turns_per_s": bare_best,
        # The first round of the repeated level is the level's own product/bare pair: counted once.
        "turns_failed": sum(pair.get(b, {}).get("turns_failed", 0) for v in per_level.values()
                            for pair in [v, *v.get("rounds", [])[1:]] for b in ("product", "bare_rasa")),
        "per_level": per_level,
        "settings": {"levels": levels, "channels": channels, "duration_s": args.duration, "warmup_s": args.warmup,
                     "turn_timeout_s": args.turn_timeout, "rounds_at_20": args.rounds,
                     "model": pathlib.Path(args.model or "").name,
                     "rasa_url": args.rasa_url or ("run_stack.py --topology production" if args.topology == "production"
                                                   else "run_stack.py (default topology)"),
                     "customers_verifiable": len(customers), "customers_reused": reused,
                     "product_turns_per_conversation": len(product_script({})),
                     "bare_turns_per_conversation": len(bare_script({}))},
        "machine": {**facts, "loadavg_at_end": list(os.getloadavg())},
        "git": commit,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = pathlib.Path(args.out) if args.out else RESULTS / ("chat.json" if args.topology == "default" else "chat-production.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("per_level", "settings", "machine", "git")}, indent=2))
    print(f"wrote {path}")
    if out["turns_failed"]:
        print(f"{out['turns_failed']} turns failed; logs kept in {work}/")
        return 1
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
