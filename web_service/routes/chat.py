"""The customer web chat page."""

from __future__ import annotations

import html
import pathlib
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import HTMLResponse

from crm_store.db import session_scope
from crm_store.enums import Channel
from crm_store.repositories.customers import is_linked
from crm_store.repositories.proactive import touch_presence
from web_service.deps import require_session_key
from web_service.schemas import PresenceReport
from web_service.settings import WebSettings, get_settings

router = APIRouter(tags=["chat"])
PAGE = pathlib.Path(__file__).resolve().parent.parent / "static" / "chat.html"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
@router.get("/chat", response_class=HTMLResponse)
def chat_page(settings: Annotated[WebSettings, Depends(get_settings)]) -> HTMLResponse:
    """The chat widget page; it talks to Rasa's socket.io channel directly."""
    page = PAGE.read_text(encoding="utf-8").replace("{{SOCKET_URL}}", html.escape(settings.rasa_public_url, quote=True))
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


@router.post("/chat/presence", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def report_presence(report: PresenceReport, settings: Annotated[WebSettings, Depends(get_settings)]) -> Response:
    """The open web chat says it is still there (every 20 s), so the bot knows a push would reach it.

    Public like the chat page itself; it only refreshes a chat already linked to a customer and reveals
    nothing (always 204). Most open chats are anonymous: their reports only read, so they never queue on
    SQLite's write lock; only a linked chat's report opens a write unit of work. 403 without the session's key.
    """
    require_session_key(settings, report.session_id, report.session_key)
    channel = Channel.SOCKETIO.value
    with session_scope(settings.database_url, write=False) as session:
        linked = is_linked(session, channel=channel, external_id=report.session_id,
                           verified_within=settings.verification_ttl)
    if linked:
        with session_scope(settings.database_url) as session:
            touch_presence(session, channel=channel, external_id=report.session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
