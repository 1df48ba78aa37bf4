"""Dependency checks behind ``/health`` (liveness) and ``/health/ready`` (readiness).

Each check is blocking I/O with a short timeout; :func:`run_checks` runs them all at once on a small
thread pool of their own (not the request threadpool: a hung dependency polled every few seconds must
not take the threads that serve requests), so a dead dependency costs one timeout, never the event
loop. A check's result::

    {"status": "up" | "down" | "not_configured", "latency_ms": float, "detail": str}

(``detail`` only when down: the kind of failure, e.g. ``ConnectError``; never a host, URL or credential).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion
from crm_store.db import ping, session_scope
from device_hooks.broker import BRIDGE_USER
from web_service.settings import WebSettings

logger = logging.getLogger(__name__)
UP, DOWN, NOT_CONFIGURED = "up", "down", "not_configured"
# Without these the web service cannot answer anything but /health: readiness fails when one is down.
REQUIRED = ("database",)
# Five checks per probe; a second probe while one is stuck queues here and is answered "no answer".
_EXECUTOR = ThreadPoolExecutor(max_workers=10, thread_name_prefix="health-check")


class CheckFailed(Exception):
    """A dependency answered, but not as a healthy one does."""


def check_database(settings: WebSettings, timeout: float) -> dict[str, Any]:
    # A read-only unit of work: the check never queues on SQLite's write lock.
    with session_scope(settings.database_url, write=False) as session:
        return {"dialect": ping(session)}


def _get(url: str, timeout: float) -> None:
    resp = httpx.get(url, timeout=timeout)
    if resp.status_code != 200:
        raise CheckFailed(f"answered {resp.status_code}")


def check_rasa(settings: WebSettings, timeout: float) -> dict[str, Any]:
    _get(settings.rasa_url.rstrip("/") + "/version", timeout)  # public, cheap, no token
    return {}


def action_server_health_url(endpoint_url: str) -> str:
    """``http://host:5055/webhook`` → ``http://host:5055/health`` (rasa-sdk's own health route)."""
    parts = urlsplit(endpoint_url)
    return urlunsplit((parts.scheme, parts.netloc, "/health", "", ""))


def check_action_server(settings: WebSettings, timeout: float) -> dict[str, Any]:
    _get(action_server_health_url(settings.action_endpoint_url), timeout)
    return {}


def check_mqtt(settings: WebSettings, timeout: float) -> dict[str, Any]:
    """A full MQTT CONNECT as the http-bridge user: the broker must answer CONNACK "Success"."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
    password = settings.mqtt_bridge_password.get_secret_value()
    if password:
        client.username_pw_set(BRIDGE_USER, password)
    client.connect_timeout = timeout
    answer: list[Any] = []
    client.on_connect = lambda _c, _u, _f, reason_code, _p: answer.append(reason_code)
    try:
        client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=max(5, int(timeout) + 1))
        deadline = time.monotonic() + timeout
        while not answer and time.monotonic() < deadline:
            client.loop(timeout=0.05)
        if not answer:
            raise CheckFailed("no CONNACK in time")
        if answer[0].is_failure:
            raise CheckFailed(f"connection refused: {answer[0]}")
    finally:
        client.disconnect()  # a no-op when never connected
        client.loop(timeout=0.01)  # sends DISCONNECT and closes the socket
    return {}


def check_redis(settings: WebSettings, timeout: float) -> dict[str, Any] | None:
    url = settings.redis_url.get_secret_value()
    if not url:
        return None
    client = redis.Redis.from_url(url, password=settings.redis_password.get_secret_value() or None,
                                  socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        if not client.ping():
            raise CheckFailed("PING not answered")
    finally:
        client.close()
    return {}


CHECKS: dict[str, Callable[[WebSettings, float], dict[str, Any] | None]] = {
    "database": check_database,
    "rasa": check_rasa,
    "action_server": check_action_server,
    "mqtt": check_mqtt,
    "redis": check_redis,
}


def _failure(name: str, exc: BaseException) -> str:
    # /health is public: the body names only the kind of failure; the driver's message (host names,
    # ports) goes to the log for operators.
    logger.warning("health check %s failed: %s: %s", name, exc.__class__.__name__, exc)
    return str(exc) if isinstance(exc, CheckFailed) else exc.__class__.__name__


async def _run(name: str, check: Callable[[WebSettings, float], dict[str, Any] | None],
               settings: WebSettings) -> dict[str, Any]:
    timeout = settings.health_timeout_seconds
    started = time.perf_counter()
    try:
        # The thread may outlive the wait (a driver stuck in connect); the answer does not wait for it.
        work = asyncio.get_running_loop().run_in_executor(_EXECUTOR, check, settings, timeout)
        info = await asyncio.wait_for(work, timeout + 0.5)
    except asyncio.TimeoutError:
        return {"status": DOWN, "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                "detail": f"no answer within {timeout:g} s"}
    except Exception as exc:  # noqa: BLE001 - any failure of a dependency is reported, not raised
        return {"status": DOWN, "latency_ms": round((time.perf_counter() - started) * 1000, 1), "detail": _failure(name, exc)}
    if info is None:
        return {"status": NOT_CONFIGURED}
    return {"status": UP, "latency_ms": round((time.perf_counter() - started) * 1000, 1), **info}


async def run_checks(settings: WebSettings) -> dict[str, Any]:
    """Every dependency's result, checked concurrently; ``status`` is ``ok`` when all configured ones are up,
    else ``degraded``; ``ready`` is False when a required one (the database) is down."""
    results = await asyncio.gather(*(_run(name, check, settings) for name, check in CHECKS.items()))
    checks = dict(zip(CHECKS, results))
    degraded = any(c["status"] == DOWN for c in checks.values())
    return {
        "status": "degraded" if degraded else "ok",
        "ready": all(checks[name]["status"] == UP for name in REQUIRED),
        "checks": checks,
    }
