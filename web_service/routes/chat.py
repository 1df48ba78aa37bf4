"""The customer web chat page."""

from __future__ import annotations

import html
import logging
import pathlib
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import HTMLResponse

from crm_store.db import session_scope
from crm_store.enums import Channel
from crm_store.repositories.customers import is_linked
from crm_store.repositories.proactive import touch_presence
from web_service.deps import require_session_key
from web_service.privacy_jobs import tracker_for
from web_service.schemas import MissedMessages, MissedRequest, PresenceReport
from web_service.settings import WebSettings, get_settings

logger = logging.getLogger(__name__)
router = APIRouter(tags=["chat"])
MISSED_LIMIT = 50  # the latest bot messages one call returns at most
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


@router.post("/chat/missed", response_model=MissedMessages)
def missed_messages(request: MissedRequest, settings: Annotated[WebSettings, Depends(get_settings)]) -> MissedMessages:
    """The bot's messages in this chat later than ``after`` (at most the latest 50, oldest first), read from Rasa's
    tracker store, so the page can show what its socket missed (it was away, or Redis was restarting: a socket.io
    emit is at most once). The page sends it on reconnecting and every 20 s; it shows only the messages whose ``ts``
    it has not got. 403 without the session's key; an empty list when no tracker store is configured or it cannot
    be read (logged; the page asks again)."""
    require_session_key(settings, request.session_id, request.session_key)
    now = time.time()
    store = tracker_for(settings)
    if store is None:
        return MissedMessages(now=now, messages=[])
    try:
        events = store.bot_messages(request.session_id, after=request.after, limit=MISSED_LIMIT)
    except Exception as exc:  # noqa: BLE001 - the tracker store away: nothing now, the page asks again
        logger.warning("missed messages: tracker store unreadable (%s)", type(exc).__name__)
        return MissedMessages(now=now, messages=[])
    return MissedMessages(now=now, messages=[m for m in map(_as_sent, events) if m is not None])


def _as_sent(event: dict) -> dict | None:
    """A stored bot event as the page needs it; None for one with nothing the page shows (a custom payload only)."""
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    ts, text = event.get("timestamp"), event.get("text") or ""
    buttons = [{"title": str(b.get("title", "")), "payload": str(b.get("payload", ""))}
               for b in (data.get("buttons") or data.get("quick_replies") or []) if isinstance(b, dict)]
    image = data.get("image") if isinstance(data.get("image"), str) else None
    if not isinstance(ts, (int, float)) or not (text or buttons or image):
        return None
    return {"ts": ts, "text": text if isinstance(text, str) else str(text), "buttons": buttons, "image": image}
