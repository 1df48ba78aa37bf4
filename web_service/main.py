"""Application factory: ``uvicorn --factory web_service.main:create_app``."""

from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError

from crm_store.db import error_summary
from crm_store.logscrub import install as install_log_scrubbing
from crm_store.redis_auth import verify_redis_password
from web_service import errors, http_security
from web_service.health import run_checks
from web_service.live import get_hub, start_hub
from web_service.privacy_jobs import start_privacy_jobs
from web_service.relay import start_relay
from web_service.routes import (
    auth,
    canned,
    chat,
    chat_live,
    console,
    console_live,
    customers,
    devices,
    handoffs,
    ingest,
    lockouts,
    privacy,
    telemetry,
    tickets,
)
from web_service.settings import WebSettings, get_settings
from web_service.sweeper import start_sweeper
from web_service.transcript_watch import watch_transcripts

logger = logging.getLogger(__name__)
STATIC = pathlib.Path(__file__).resolve().parent / "static"


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    # A refused REDIS_PASSWORD would leave every rate limit off (they admit calls while Redis is away).
    verify_redis_password(settings.redis_url.get_secret_value(), settings.redis_password.get_secret_value())
    # Queued conversations nobody took become callbacks; agent replies Rasa missed are delivered later;
    # due erasures are finished and retention runs once across replicas.
    stops = [start_sweeper(settings), start_relay(settings), start_privacy_jobs(settings)]
    hub = start_hub(settings.database_url)  # push to consoles and chats (web_service.live)
    watch = asyncio.create_task(watch_transcripts(get_hub(), settings), name="transcript-watch")
    yield
    watch.cancel()
    hub.cancel()
    for stop in stops:
        if stop is not None:
            stop.set()


# Seconds a client should wait before it retries a request the database could not serve.
DATABASE_RETRY_AFTER_SECONDS = 5


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 with ``Retry-After`` for a request that failed because the database is unreachable, restarting,
    refusing connections, killed the session or timed a statement out (SQLAlchemy's OperationalError): a
    passing outage, not a fault of the request or the code, so the client and the load balancer may retry.
    Before this, the end-to-end outage test saw 500s during a database outage (issue 14)."""
    logger.warning("%s %s: database unavailable (%s)", request.method, request.url.path, error_summary(exc))
    return JSONResponse({"detail": errors.DATABASE_UNAVAILABLE}, status_code=503,
                        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


invalid_requests = 0  # requests refused with 422 (this process)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with FastAPI's ``{"detail": [{"type", "loc", "msg"}]}``, without the ``input`` FastAPI echoes: that could be
    a password or other personal data in the body, or NaN/Infinity (which Python's JSON reader accepts), which no
    JSON answer can carry (the 422 became a 500). Counted and logged by error type, never by value."""
    global invalid_requests
    invalid_requests += 1
    detail = [{"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
    logger.info("%s %s: 422 (%s; %d so far)", request.method, request.url.path,
                ", ".join(sorted({str(d["type"]) for d in detail})), invalid_requests)
    return JSONResponse({"detail": detail}, status_code=422)


def create_app() -> FastAPI:
    install_log_scrubbing()  # no e-mail, phone, order number or serial in any log line of this process
    app = FastAPI(
        lifespan=lifespan,
        title="Appliance care: CRM and support API",
        version="0.1.0",
        description="CRM REST API of the IoT-aware customer-service assistant. Every route but /health and /health/ready needs a bearer token.",
    )
    for router in (auth.router, customers.router, devices.router, telemetry.router, tickets.router, ingest.router,
                   chat.router, handoffs.router, console.router, lockouts.router, privacy.router,
                   console_live.router, chat_live.router, canned.router):
        app.include_router(router)
    http_security.install(app, get_settings())
    app.add_exception_handler(OperationalError, database_unavailable)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", tags=["health"])
    async def health(settings: Annotated[WebSettings, Depends(get_settings)]) -> dict[str, Any]:
        """Liveness: 200 whenever this process can answer, with each dependency's status in the body
        (``status``: ok, or degraded when one is down). A degraded dependency must not get the web service
        restarted, so this never fails because of one; see /health/ready."""
        return await run_checks(settings)

    @app.get("/health/ready", tags=["health"], responses={503: {"description": "the database is unreachable"}})
    async def ready(settings: Annotated[WebSettings, Depends(get_settings)]) -> JSONResponse:
        """Readiness: as /health, but 503 while a dependency the API cannot work without (the database) is down."""
        report = await run_checks(settings)
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    return app
