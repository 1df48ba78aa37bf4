"""Application factory: ``uvicorn --factory web_service.main:create_app``."""

from __future__ import annotations

import logging
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from web_service.deps import SessionDep
from web_service.routes import auth, chat, console, customers, devices, handoffs, ingest, telemetry, tickets
from web_service.settings import get_settings
from web_service.relay import start_relay
from web_service.sweeper import start_sweeper

logger = logging.getLogger(__name__)
STATIC = pathlib.Path(__file__).resolve().parent / "static"


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    # Queued conversations nobody took become callbacks; agent replies Rasa missed are delivered later.
    stops = [start_sweeper(settings), start_relay(settings)]
    yield
    for stop in stops:
        if stop is not None:
            stop.set()


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=lifespan,
        title="Appliance care: CRM and support API",
        version="0.1.0",
        description="CRM REST API of the IoT-aware customer-service assistant. Every route but /health needs a bearer token.",
    )
    for router in (auth.router, customers.router, devices.router, telemetry.router, tickets.router, ingest.router,
                   chat.router, handoffs.router, console.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", tags=["health"])
    def health(session: SessionDep) -> dict[str, str]:
        session.execute(text("SELECT 1"))
        return {"status": "ok", "database": session.bind.dialect.name if session.bind else "unknown"}

    return app
