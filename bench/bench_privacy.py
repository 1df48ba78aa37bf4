"""Privacy benchmark: export and erase of a customer with 10,000 telemetry messages, on SQLite and PostgreSQL.

``PYTHONPATH=. .venv-app/bin/python bench/bench_privacy.py [--messages 10000] [--backends sqlite,postgresql]``
builds a throw-away CRM database and Rasa tracker store per backend, one customer with data in every store
(tests/privacy/builder.py) among 5 other such customers (messages / 10 telemetry messages per device each),
then times the export
(JSON serialised) and the erasure, and scans for the customer's identifiers afterwards. Writes
bench/results/privacy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crm_store.db import get_engine, session_scope  # noqa: E402
from crm_store.migrate import upgrade  # noqa: E402
from crm_store.repositories.erasure import request_erasure, run_erasure  # noqa: E402
from crm_store.repositories.privacy import export_customer  # noqa: E402
from crm_store.tracker_store import TrackerStore  # noqa: E402
from tests.conftest import _create_pg_database, _drop_pg_database, postgres_available  # noqa: E402
from tests.privacy.builder import make_person, scan_crm, scan_tracker  # noqa: E402


def run_backend(url: str, tracker: TrackerStore, messages: int) -> dict[str, object]:
    upgrade(url)
    tracker.create_schema()
    with session_scope(url) as s:
        for _ in range(5):  # other customers: the erase must find its rows among theirs
            make_person(s, tracker, telemetry=messages // 10)
    with session_scope(url) as s:
        person = make_person(s, tracker, telemetry=messages // 2)  # two devices: `messages` in all
    t0 = time.perf_counter()
    with session_scope(url, write=False) as s:
        doc = export_customer(s, customer_id=person.customer_id, tracker=tracker)
    body = json.dumps(doc, default=str)
    export_s = time.perf_counter() - t0
    with session_scope(url) as s:
        rid = request_erasure(s, customer_id=person.customer_id, requested_by="bench", source="command")[0].id
    t0 = time.perf_counter()
    steps = run_erasure(url, rid, tracker=tracker, broker_revoke=lambda serials: "bench: no broker")
    erase_s = time.perf_counter() - t0
    assert steps is not None
    return {
        "telemetry_messages": sum(len(d["messages"]) for d in doc["telemetry"]),
        "export_seconds": round(export_s, 3), "export_bytes": len(body),
        "erase_seconds": round(erase_s, 3),
        "erase_rows": {k: v["rows"] for k, v in steps.items()},
        "scan_hits_after_erase": {"crm": sum(scan_crm(url, person.needles).values()),
                                  "tracker_store": scan_tracker(tracker, person.needles)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "privacy.json"))
    args = parser.parse_args()
    results: dict[str, object] = {"messages": args.messages, "python": platform.python_version(),
                                  "machine": platform.machine(), "cpus": os.cpu_count(),
                                  "load_average_at_start": os.getloadavg()[0], "backends": {}}
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                results["backends"][backend] = run_backend(  # type: ignore[index]
                    f"sqlite:///{tmp}/crm.db", TrackerStore(f"sqlite:///{tmp}/tracker.db"), args.messages)
                get_engine.cache_clear()
        elif postgres_available():
            crm_name, crm_url = _create_pg_database()
            tr_name, tr_url = _create_pg_database()
            try:
                tracker = TrackerStore(tr_url)
                results["backends"][backend] = run_backend(crm_url, tracker, args.messages)  # type: ignore[index]
                tracker.engine.dispose()
            finally:
                get_engine.cache_clear()
                _drop_pg_database(crm_name)
                _drop_pg_database(tr_name)
        print(backend, json.dumps(results["backends"].get(backend), indent=1), flush=True)  # type: ignore[union-attr]
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
