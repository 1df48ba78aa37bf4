"""The web service's privacy background job: due erasures finished, retention enforced.

Every ``PRIVACY_POLL_SECONDS`` each replica runs ``crm_store.retention.run_due``: erasure requests that are
due (or whose runner died) are taken over by lease, and the retention pass runs once per
``RETENTION_INTERVAL_MINUTES`` across all replicas (the job's lease row).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from crm_store.retention import run_due
from crm_store.tracker_store import TrackerStore, tracker_store_url
from device_hooks.revocation import broker_revoker
from web_service.settings import WebSettings

logger = logging.getLogger(__name__)


def tracker_for(settings: WebSettings) -> TrackerStore | None:
    """The Rasa tracker store this deployment uses, or None when none is configured."""
    url = tracker_store_url({
        "TRACKER_STORE_URL": settings.tracker_store_url.get_secret_value(), "TRACKER_DIALECT": settings.tracker_dialect,
        "TRACKER_HOST": settings.tracker_host, "TRACKER_DB": settings.tracker_db, "TRACKER_USER": settings.tracker_user,
        "TRACKER_PASSWORD": settings.tracker_password.get_secret_value(),
    })
    return TrackerStore(url) if url else None


def erasure_hooks(settings: WebSettings) -> dict[str, Any]:
    return {"tracker": tracker_for(settings), "broker_revoke": broker_revoker(settings.mqtt_port)}


def start_privacy_jobs(settings: WebSettings) -> threading.Event | None:
    if settings.privacy_poll_seconds <= 0:
        return None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(settings.privacy_poll_seconds):
            try:
                run_due(settings.database_url, **erasure_hooks(settings))
            except Exception:
                logger.exception("privacy job failed; retrying at the next interval")

    threading.Thread(target=loop, name="privacy-jobs", daemon=True).start()
    return stop
