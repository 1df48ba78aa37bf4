"""The customer web chat page."""

from __future__ import annotations

import html
import logging
import pathlib
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.responses import HTMLResponse

from crm_store.chat_pieces import web_chat_pieces
from crm_store.db import session_scope
from crm_store.enums import Channel
from crm_store.repositories.customers import is_linked
from crm_store.repositories.proactive import touch_presence
from web_service import errors
from web_service.deps import require_session_key
from web_service.privacy_jobs import tracker_for
from web_service.ratelimit import allow
from web_service.schemas import MissedMessages, MissedRequest, PresenceReport
from web_service.settings import WebSettings, get_settings

logger = logging.getLogger(__name__)
router = APIRouter(tags=["chat"])
MISSED_LIMIT = 50  # bot messages one call returns at most
MISSED_RATE_PER_CHAT = "30/minute"  # the page asks every 20 s, on reconnecting, and again while ``more``
PRESENCE_RATE_PER_CHAT = "12/minute"  # the page reports every 20 s and on reconnecting
PAGE = pathlib.Path(__file__).resolve().parent.parent / "static" / "chat.html"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
@router.get("/chat", response_class=HTMLResponse)
def chat_page(settings: Annotated[WebSettings, Depends(get_settings)]) -> HTMLResponse:
    """The chat widget page; it talks to Rasa's socket.io channel directly."""
    page = PAGE.read_text(encoding="utf-8").replace("{{SOCKET_URL}}", html.escape(settings.rasa_public_url, quote=True))
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


@router.post("/chat/presence", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
             responses={429: {"description": errors.TOO_MANY_CHECKS}})
def report_presence(report: PresenceReport, settings: Annotated[WebSettings, Depends(get_settings)]) -> Response:
    """The open web chat says it is still there (every 20 s), so the bot knows a push would reach it.

    Public like the chat page itself; it only refreshes a chat already linked to a customer and reveals
    nothing (always 204). Most open chats are anonymous: their reports only read, so they never queue on
    SQLite's write lock; only a linked chat's report opens a write unit of work. 403 without the session's key;
    429 over 12 a minute per chat.
    """
    require_session_key(settings, report.session_id, report.session_key)
    if not allow(PRESENCE_RATE_PER_CHAT, "presence-chat", report.session_id, settings=settings):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, errors.TOO_MANY_CHECKS)
    channel = Channel.SOCKETIO.value
    with session_scope(settings.database_url, write=False) as session:
        linked = is_linked(session, channel=channel, external_id=report.session_id,
                           verified_within=settings.verification_ttl)
    if linked:
        with session_scope(settings.database_url) as session:
            touch_presence(session, channel=channel, external_id=report.session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/chat/missed", response_model=MissedMessages,
             responses={429: {"description": errors.TOO_MANY_CHECKS}, 503: {"description": errors.TRACKER_UNREADABLE}})
def missed_messages(body: MissedRequest, settings: Annotated[WebSettings, Depends(get_settings)]) -> MissedMessages:
    """The pieces of the bot's messages in this chat later than ``after`` (Unix seconds), read from Rasa's tracker
    store, so the page can show what its socket missed (it was away, or Redis was restarting: a socket.io emit is at
    most once). At most 50 messages, oldest first; ``more`` says to ask again with ``next_after`` (the last of those
    messages' timestamp, whether or not it had a piece to show). The page asks on connecting and every 20 s and shows
    only the (``ts``, ``part``) it has not got. 403 without the session's key; 429 over 30 calls a minute per chat;
    503 while the tracker store cannot be read (the page keeps its ``after`` and asks again); no pieces when no
    tracker store is configured."""
    require_session_key(settings, body.session_id, body.session_key)
    # Per chat only: behind a load balancer every customer has its address, and a key is needed to be counted at all.
    if not allow(MISSED_RATE_PER_CHAT, "missed-chat", body.session_id, settings=settings):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, errors.TOO_MANY_CHECKS)
    now = time.time()
    store = tracker_for(settings)
    if store is None:
        return MissedMessages(now=now, pieces=[], more=False, next_after=body.after)
    try:
        events = store.bot_messages(body.session_id, after=body.after, limit=MISSED_LIMIT + 1)
    except Exception as exc:  # noqa: BLE001 - the tracker store away: say so, so the page does not move on
        logger.warning("missed messages: tracker store unreadable (%s)", type(exc).__name__)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, errors.TRACKER_UNREADABLE) from None
    page = events[:MISSED_LIMIT]
    last = page[-1].get("timestamp") if page else None
    return MissedMessages(now=now, pieces=[piece for event in page for piece in web_chat_pieces(event)],
                          more=len(events) > MISSED_LIMIT,
                          next_after=last if isinstance(last, (int, float)) and last > body.after else body.after)
