"""Device burst benchmark: 20 simultaneous device posts over HTTP with chat-side traffic, on the SQLite default.

``PYTHONPATH=. .venv-app/bin/python bench/bench_device_burst.py [--rounds 10]`` starts the processes of
``tests/device_burst.py`` (uvicorn web service, action server on the same SQLite file, a mosquitto of its own, a
Rasa that never answers) and runs ``--rounds`` bursts. Each burst is 20 device posts of
``POST /api/ingest/devices/<serial>/status``, 3 /health calls, 6 CRM reads and 4 action-server writes, all
released at once. Before each burst, the same-run baseline: 33 simultaneous GETs of the static chat page, which
need no database or broker and show what this host and client take for that many requests at once.
Target (issue 14): every device post answered 202 in under 1 s. Writes bench/results/device-burst.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
from collections import Counter

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import percentile
from crm_store.migrate import upgrade
from tests.device_burst import DEVICES, Result, burst, burst_stack, static_burst

TARGET_MS = 1000


def summary(results: list[Result]) -> dict[str, object]:
    """Latency percentiles in ms (bench_ingest's percentile) and the status codes seen, with their counts."""
    ms = [elapsed * 1000 for _, _, elapsed in results]
    statuses = Counter(str(status) for _, status, _ in results)
    return {"count": len(ms), **{f"p{q}_ms": round(percentile(ms, q / 100), 1) for q in (50, 95, 99)},
            "max_ms": round(max(ms), 1), "statuses": dict(statuses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "device-burst.json"))
    args = parser.parse_args()
    devices: list[Result] = []
    health: list[Result] = []
    chat_side: list[Result] = []
    baseline: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="device-burst-") as tmp:
        work = pathlib.Path(tmp)
        url = f"sqlite:///{work}/crm.db"
        upgrade(url)
        with burst_stack(url, work) as live:
            load = os.getloadavg()[0]
            for seq in range(1, args.rounds + 1):
                baseline += static_burst(live, DEVICES + 13)
                for result in burst(live, seq):
                    kind = result[0]
                    (devices if kind.startswith("device") else health if kind == "health" else chat_side).append(result)
                print(f"round {seq}: slowest device post so far {max(r[2] for r in devices) * 1000:.0f} ms", flush=True)
    device_summary = summary(devices)
    results = {
        "topology": "default (SQLite, one web service process)",
        "rounds": args.rounds, "devices_per_round": DEVICES,
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "load_average_at_start": round(load, 2),
        "device_posts": device_summary,
        "crm_reads_and_action_writes": summary(chat_side),
        "health_calls_waiting_on_a_hung_rasa_1s": summary(health),
        "baseline_static_page": summary(baseline),
        "target_ms": TARGET_MS,
        "target_met": device_summary["statuses"] == {"202": len(devices)} and device_summary["max_ms"] < TARGET_MS,
    }
    print(json.dumps(results, indent=1))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
