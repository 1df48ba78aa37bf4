"""Erase a customer from the command line: ``python -m crm_store.erase --customer ID [--requested-by NAME]``.

Creates (or finds) the customer's erasure request and runs it to the end, in every store: the CRM, Rasa's
tracker store (TRACKER_* variables, as bot/endpoints.yml) and the local broker's device accounts
(MQTT_PORT). Re-running finishes a request whose earlier run was killed. Prints the audit record as JSON.
``--pause-after STEP`` stops after that step is committed and waits to be killed (fault-injection tests).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading

from crm_store.db import DEFAULT_DATABASE_URL, session_scope
from crm_store.logscrub import install
from crm_store.repositories.erasure import ERASE_STEPS, erasure_public, get_erasure, request_erasure, run_erasure
from crm_store.retention import default_tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--customer", type=int, required=True)
    parser.add_argument("--requested-by", default="command")
    parser.add_argument("--pause-after", choices=ERASE_STEPS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install()
    from device_hooks.revocation import broker_revoker

    with session_scope(args.url) as session:
        req, _ = request_erasure(session, customer_id=args.customer, requested_by=args.requested_by, source="command")
        request_id = req.id

    def pause(step: str) -> None:
        if step == args.pause_after:
            print(f"PAUSED {step}", flush=True)
            threading.Event().wait()  # until killed

    steps = run_erasure(args.url, request_id, tracker=default_tracker(),
                        broker_revoke=broker_revoker(int(os.environ.get("MQTT_PORT", "1883"))), after_step=pause)
    with session_scope(args.url, write=False) as session:
        req = get_erasure(session, request_id=request_id)
        print(json.dumps(erasure_public(req), default=str, sort_keys=True))
    if steps is None and req.status != "done":
        print("another runner holds this request; it will finish it", file=sys.stderr)
        sys.exit(75)


if __name__ == "__main__":
    main()
