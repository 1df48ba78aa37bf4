"""Device ingestion benchmark: ``make bench-ingest`` (writes bench/results/ingest.json).

Starts the whole system with scripts/run_stack.py (the project's Mosquitto, the real worker, Rasa, the
action server) on free ports with a fresh database, then in the same run:

1. baseline: a bare QoS 1 subscriber (no validation, no storage) receives a stream from the simulator;
2. the worker receives the same stream: validated, stored, rules evaluated, acknowledged after commit;
3. faults on distinct devices of customers whose web chat is open: time to the ticket and to the bot's
   proactive message (marked sent by the bot's action once produced for the socket.io channel).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import pathlib
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, func, select, text  # noqa: E402

from crm_store.db import session_scope  # noqa: E402
from crm_store.enums import ApplianceCategory, ProactiveStatus  # noqa: E402
from crm_store.models import (  # noqa: E402
    ChannelIdentity,
    Device,
    FaultDefinition,
    IngestCounter,
    ProactiveMessage,
    ProductModel,
    Ticket,
    TelemetryRule,
    utcnow,
)
from device_hooks import wire  # noqa: E402
from device_hooks.broker import WORKER_USER  # noqa: E402
from device_hooks.simulator import SimDevice, connect_all, payload  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_stack(work: pathlib.Path, model: str, database_url: str) -> tuple[subprocess.Popen[str], dict[str, str], dict[str, int]]:
    ports = {"rasa": free_port(), "actions": free_port(), "web": free_port(), "mqtt": free_port()}
    env = dict(os.environ, DATABASE_URL=database_url, TRACKER_DIALECT="sqlite",
               TRACKER_DB=str(work / "tracker.db"), FACEBOOK_APP_SECRET="")
    for key in ("MQTT_HOST", "MQTT_PORT", "SECRET_KEY", "RASA_TOKEN", "ACTION_SERVER_TOKEN", "ADMIN_PASSWORD",
                "MQTT_WORKER_PASSWORD", "MQTT_BRIDGE_PASSWORD"):
        env.pop(key, None)
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
        print("   stack:", line.rstrip(), flush=True)
        if line.strip() == "READY":
            secrets = dict(l.split("=", 1) for l in (work / ".env").read_text().splitlines() if "=" in l and not l.startswith("#"))
            env.update(secrets)
            return proc, env, ports
    proc.kill()
    raise SystemExit("timed out starting the stack")


def fleet(database_url: str, tokens: dict[str, str], n: int) -> list[SimDevice]:
    with session_scope(database_url) as session:
        rows = session.execute(select(Device.serial, ProductModel.category).join(ProductModel)
                               .where(ProductModel.category != ApplianceCategory.COLD_CHAIN_LOGGER).order_by(Device.id))
        return [SimDevice(serial, tokens[serial], category) for serial, category in rows][:n]


def accepted(database_url: str) -> int:
    with session_scope(database_url) as session:
        return int(session.scalar(select(func.coalesce(func.sum(IngestCounter.value), 0))
                                  .where(IngestCounter.name.in_(["accepted", "duplicate"]))) or 0)  # PG sums are Decimal


async def bare_subscriber(port: int, password: str, expected: int, out: dict[str, float]) -> None:
    """The ceiling: the same MQTT client code, acknowledging each read at once, doing nothing else.
    Runs in a process of its own, as the worker does (``--bare-subscriber``)."""
    reader, writer, decoder, _ = await wire.open_connection("127.0.0.1", port, client_id="bench-bare-subscriber",
                                                           username=WORKER_USER, password=password, clean_session=True)
    writer.write(wire.subscribe_packet(1, [("devices/+/telemetry", 1)]))
    await writer.drain()
    print("subscribed", flush=True)
    got, first = 0, 0.0
    while got < expected:
        data = await asyncio.wait_for(reader.read(1 << 18), 60)
        acks = []
        for ptype, flags, body in decoder.feed(data):
            if ptype == wire.PUBLISH:
                if not got:
                    first = time.perf_counter()
                got += 1
                acks.append(wire.parse_publish(flags, body).packet_id)
        if acks:
            writer.write(wire.puback_packets(acks))
    out.update(first=first, last=time.perf_counter(), received=got)
    writer.close()


def publish(port: int, devices: list[SimDevice], messages: int) -> dict[str, float]:
    """The simulator's publishing loop (the same code as ``simulator bench``), in this process."""
    from device_hooks.simulator import bench

    return asyncio.run(bench(devices, "127.0.0.1", port, messages))


def fault_latency(env: dict[str, str], ports: dict[str, int], database_url: str, tokens: dict[str, str], faults: int,
                  rate: float) -> dict[str, float]:
    """Faults on distinct customer devices with an open web chat; times to ticket and to the bot's message."""
    with session_scope(database_url) as session:
        ruled = {(r.model_id, r.fault_code) for r in session.scalars(select(TelemetryRule))}
        open_keys = {(t.device_id, t.fault_code) for t in session.scalars(select(Ticket).where(Ticket.open_dedup_key.is_not(None)))}
        targets: list[tuple[SimDevice, str]] = []
        customers: set[int] = set()
        for device in session.scalars(select(Device).where(Device.customer_id.is_not(None)).order_by(Device.id)):
            code = next((f.code for f in session.scalars(select(FaultDefinition).where(FaultDefinition.model_id == device.model_id))
                         if (device.model_id, f.code) not in ruled and (device.id, f.code) not in open_keys), None)
            customer = device.owner
            if code is None or not customer.consent_proactive or customer.quiet_hours_start is not None:
                continue
            if customer.id in customers:
                continue  # one device per customer: each fault goes to its own conversation
            customers.add(customer.id)
            # The customer's web chat is open: linked to them and present (as the chat page reports).
            session.add(ChannelIdentity(channel="socketio", external_id=f"bench-chat-{device.id}", customer_id=customer.id,
                                        last_seen_at=utcnow()))
            targets.append((SimDevice(device.serial, tokens[device.serial], device.model.category), code))
            if len(targets) == faults:
                break

    async def run() -> dict[str, dt.datetime]:
        conns = await connect_all([d for d, _ in targets], "127.0.0.1", ports["mqtt"])
        sent: dict[str, dt.datetime] = {}
        for conn, (_device, code) in zip(conns, targets, strict=True):
            sent[conn.device.serial] = utcnow()
            await conn.publish("fault", payload(conn.device, sent[conn.device.serial], code=code, state="raised"))
            await conn.writer.drain()
            await asyncio.sleep(1 / rate)
        for conn in conns:
            await conn.settle()
            await conn.close()
        return sent

    published = asyncio.run(run())
    deadline = time.time() + 120
    to_ticket: list[float] = []
    to_message: list[float] = []
    while time.time() < deadline:
        with session_scope(database_url) as session:
            rows = session.execute(
                select(Device.serial, Ticket.created_at, ProactiveMessage.sent_at, ProactiveMessage.status)
                .join(Ticket, Ticket.device_id == Device.id)
                .outerjoin(ProactiveMessage, ProactiveMessage.ticket_id == Ticket.id)
                .where(Device.serial.in_(list(published)), Ticket.created_at >= min(published.values()))
            ).all()
        done = [r for r in rows if r.status is ProactiveStatus.SENT]
        if len(done) >= len(published):
            break
        time.sleep(0.5)
    for serial, created, sent_at, _status in rows:
        to_ticket.append((created - published[serial]).total_seconds() * 1000)
        if sent_at is not None:
            to_message.append((sent_at - published[serial]).total_seconds() * 1000)
    return {
        "faults": len(published), "tickets": len(to_ticket), "messages_sent": len(to_message),
        "fault_to_ticket_p50_ms": round(statistics.median(to_ticket), 1) if to_ticket else None,
        "fault_to_ticket_p99_ms": round(percentile(to_ticket, 0.99), 1) if to_ticket else None,
        "fault_to_customer_message_p50_ms": round(statistics.median(to_message), 1) if to_message else None,
        "fault_to_customer_message_p99_ms": round(percentile(to_message, 0.99), 1) if to_message else None,
    }


def child_pid(stack_pid: int, needle: str) -> int:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(stack_pid)], capture_output=True, text=True).stdout
    return next(int(line.split()[0]) for line in out.splitlines() if needle in line)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(database_url: str, target: int, timeout: float = 600) -> tuple[int, float]:
    """Polls the worker's committed count until ``target``; returns (count, perf_counter at that moment)."""
    deadline = time.time() + timeout
    while True:
        done = accepted(database_url)
        if done >= target or time.time() > deadline:
            return done, time.perf_counter()
        time.sleep(0.05)


def duplicate_tickets(database_url: str) -> int:
    """Open device tickets beyond one per (device, problem): must be 0."""
    with session_scope(database_url) as session:
        counts = session.execute(select(func.count(Ticket.id)).where(Ticket.open_dedup_key.is_not(None))
                                 .group_by(Ticket.device_id, Ticket.open_dedup_key)).scalars().all()
    return sum(c - 1 for c in counts if c > 1)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--bare-subscriber":
        out: dict[str, float] = {}
        asyncio.run(bare_subscriber(int(sys.argv[2]), os.environ["MQTT_WORKER_PASSWORD"], int(sys.argv[3]), out))
        print(json.dumps(out), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=20, help="device connections publishing the stream")
    parser.add_argument("--faults", type=int, default=50)
    parser.add_argument("--fault-rate", type=float, default=5.0, help="faults per second")
    parser.add_argument("--model", default=os.environ.get("BOT_MODEL"))
    parser.add_argument("--postgres", action="store_true",
                        help="a fresh PostgreSQL database (BENCH_POSTGRES_URL, default the local server) instead of SQLite")
    parser.add_argument("--out", default=None, help="default bench/results/ingest.json (ingest-postgresql.json with --postgres)")
    args = parser.parse_args()
    if not args.model:
        raise SystemExit("--model (or BOT_MODEL) is required; make bench-ingest trains one")
    work = ROOT / "bench" / "tmp" / "ingest"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print("== starting the stack (broker, worker, Rasa, actions, web) with a fresh database", flush=True)
    pg_admin = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    pg_name = f"bench_ingest_{os.getpid()}"
    if args.postgres:
        with create_engine(pg_admin, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{pg_name}"'))
        database = pg_admin.rsplit("/", 1)[0] + f"/{pg_name}"
    else:
        database = f"sqlite:///{work}/crm.db"
    out = pathlib.Path(args.out or ROOT / "bench/results" / ("ingest-postgresql.json" if args.postgres else "ingest.json"))
    proc, env, ports = start_stack(work, args.model, database)
    database_url = env["DATABASE_URL"]
    try:
        tokens = json.loads((work / "device_tokens.json").read_text())
        devices = fleet(database_url, tokens, args.devices)

        print(f"== baseline: bare QoS 1 subscriber, {args.messages} messages (the worker paused)", flush=True)
        # The worker is paused so that the baseline has the CPU to itself; its persistent session keeps
        # the stream queued at the broker, which then measures how fast it catches up.
        worker = child_pid(proc.pid, "device_hooks.worker")
        broker = child_pid(proc.pid, "mosquitto")
        os.kill(worker, signal.SIGSTOP)
        sub = subprocess.Popen([sys.executable, __file__, "--bare-subscriber", str(ports["mqtt"]), str(args.messages)],
                               env=env, stdout=subprocess.PIPE, text=True)
        assert sub.stdout is not None and sub.stdout.readline().strip() == "subscribed"
        publish(ports["mqtt"], devices, args.messages)
        bare = json.loads(sub.stdout.readline())
        sub.wait(60)
        baseline = bare["received"] / (bare["last"] - bare["first"])
        print(f"   {baseline:,.0f} msgs/s", flush=True)
        print("== worker catching up on the queued stream", flush=True)
        os.kill(worker, signal.SIGCONT)
        resumed = time.perf_counter()
        drained, drained_at = wait_for(database_url, args.messages)
        catch_up = drained / (drained_at - resumed)
        print(f"   {catch_up:,.0f} msgs/s", flush=True)

        print(f"== worker: {args.messages} messages validated, stored and acknowledged after commit", flush=True)
        before = drained
        cpu_before = {"worker": cpu_seconds(worker), "broker": cpu_seconds(broker),
                      "publisher": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}
        result: dict[str, float] = {}
        pub = threading.Thread(target=lambda: result.update(publish(ports["mqtt"], devices, args.messages)))
        start = time.perf_counter()
        pub.start()
        first_seen = None
        deadline = time.time() + 600
        done = before
        while time.time() < deadline:
            done = accepted(database_url)
            if first_seen is None and done > before:
                first_seen = time.perf_counter()
            if done - before >= args.messages:
                break
            time.sleep(0.05)
        finish = time.perf_counter()
        pub.join(60)
        processed = done - before
        rate = processed / (finish - start)
        # Where the two cores went during the stream: what limits the figure.
        cpu = {"worker": cpu_seconds(worker) - cpu_before["worker"], "broker": cpu_seconds(broker) - cpu_before["broker"],
               "publisher": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu_before["publisher"]}
        cpu_share = {name: round(value / (finish - start), 2) for name, value in cpu.items()}
        print(f"   cores used: {cpu_share}", flush=True)
        print(f"   {rate:,.0f} msgs/s ({processed} processed of {args.messages})", flush=True)

        print(f"== {args.faults} faults at {args.fault_rate}/s: fault -> ticket -> bot message", flush=True)
        latency = fault_latency(env, ports, database_url, tokens, args.faults, args.fault_rate)
        print("  ", latency, flush=True)
        figures = {
            "msgs_per_s": round(rate),
            "baseline_msgs_per_s": round(baseline),
            "catch_up_msgs_per_s": round(catch_up),
            "messages": args.messages,
            "lost": args.messages - processed,
            "duplicate_tickets": duplicate_tickets(database_url),
            **latency,
            "publisher_msgs_per_s": round(result.get("publish_msgs_per_s", 0)),
            "cores_used_during_stream": cpu_share,
            "database": "postgresql" if args.postgres else "sqlite",
            "device_connections": len(devices),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "measured_at": utcnow().isoformat(timespec="seconds"),
            "peak_rss_mb_bench_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
        if args.postgres:  # FORCE: this process's own pooled connections are still open
            with create_engine(pg_admin, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
