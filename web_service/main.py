"""Application factory: ``uvicorn --factory web_service.main:create_app``."""

from __future__ import annotations

import logging
import pathlib
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from web_service.deps import SessionDep
from web_service.routes import auth, chat, console, customers, devices, handoffs, tickets

logger = logging.getLogger(__name__)
STATIC = pathlib.Path(__file__).resolve().parent / "static"


def create_app() -> FastAPI:
    app = FastAPI(
        title="Appliance care: CRM and support API",
        version="0.1.0",
        description="CRM REST API of the IoT-aware customer-service assistant. Every route but /health needs a bearer token.",
    )
    for router in (auth.router, customers.router, devices.router, tickets.router, chat.router, handoffs.router,
                   console.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health", tags=["health"])
    def health(session: SessionDep) -> dict[str, str]:
        session.execute(text("SELECT 1"))
        return {"status": "ok", "database": session.bind.dialect.name if session.bind else "unknown"}

    return app
