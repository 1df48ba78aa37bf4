"""The web chat's live side: its push stream (the agent joined or left, the agent is typing), its typing and
"sent" signals for the console, and customers' photos.

All public like the chat page; the chat's session id (known only to the customer's browser) is the key and
travels in the request body or a header, never in a URL. Signals always answer 204 and reveal nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import unquote
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from crm_store.db import session_scope
from crm_store.enums import HandoffStatus, TicketEventKind
from crm_store.repositories.console import add_attachment, add_signal, current_agent, latest_handoff_for
from crm_store.repositories.tickets import add_ticket_event
from web_service.deps import require_session_key
from web_service.live import CLOSE, get_hub, sse
from web_service.ratelimit import allow
from web_service.schemas import ChatSessionProof
from web_service.settings import WebSettings, get_settings

router = APIRouter(tags=["chat"])
MAX_PHOTO_BYTES = 5 * 1024 * 1024
SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{8,255}$")
TOO_LARGE = "That photo is larger than 5 MB. Please send a smaller one."
WRONG_TYPE = "Only JPEG, PNG or WebP photos can be sent."
NO_TICKET = "Photos can be sent once our team has your request (ask for a person or report a fault first)."
LIVE = (HandoffStatus.QUEUED, HandoffStatus.ASSIGNED, HandoffStatus.CALLBACK)
# Photos are up to 5 MB each and stored in the database: bounded per conversation and per client address.
PHOTO_RATE_PER_CHAT = "10/hour"
PHOTO_RATE_PER_CLIENT = "60/hour"
TOO_MANY = "You have sent many photos; please wait a while before sending more."
# A session key costs nothing (any socket.io session_request returns one), so what each call costs is bounded: a
# signal or presence report writes a row (and a signal reaches every console), a stream holds a connection through
# the load balancer and a hub subscription. The page sends a typing signal at most every 3 s and one per message,
# a presence report every 20 s and on connecting, and opens one stream per tab.
SIGNAL_RATE_PER_CHAT = "40/minute"
STREAMS_PER_CHAT = 4  # per web replica, open at once
TOO_MANY_SIGNALS = "Too many signals from this chat; please slow down."
TOO_MANY_STREAMS = "Too many open streams for this chat or address; close a tab or try again later."
_streams: Counter[tuple[str, str]] = Counter()  # ("chat", id) and ("client", address) → open streams here


class ChatSignal(ChatSessionProof):
    kind: Literal["typing", "sent"] = "typing"


class ChatStreamRequest(ChatSessionProof):
    pass


def sniff_image(data: bytes) -> str | None:
    """The image type by its first bytes (never the client's word): image/jpeg, image/png, image/webp or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@router.post("/chat/signal", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
             responses={429: {"description": TOO_MANY_SIGNALS}})
async def chat_signal(body: ChatSignal, settings: Annotated[WebSettings, Depends(get_settings)]) -> Response:
    """The customer is typing, or just sent a message (throttled by the page). Recorded only while the
    conversation is with the team (queued, assigned, callback); 204, 403 without the session's key, 429 over
    40 a minute per chat."""
    require_session_key(settings, body.session_id, body.session_key)
    if not await run_in_threadpool(allow, SIGNAL_RATE_PER_CHAT, "signal-chat", body.session_id,
                                   settings=settings):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, TOO_MANY_SIGNALS)

    def record() -> dict[str, Any] | None:
        with session_scope(settings.database_url, write=False) as session:
            handoff = latest_handoff_for(session, conversation_id=body.session_id)
            if handoff is None or handoff.status not in LIVE:
                return None
        with session_scope(settings.database_url) as session:
            signal_id = add_signal(session, conversation_id=body.session_id, party="customer", kind=body.kind)
        return {"type": "signal", "id": signal_id, "conversation_id": body.session_id, "party": "customer",
                "kind": body.kind, "author": None}

    event = await run_in_threadpool(record)
    if event is not None:
        get_hub().publish_local(event)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/chat/stream", responses={429: {"description": TOO_MANY_STREAMS}})
async def chat_stream(body: ChatStreamRequest, request: Request,
                      settings: Annotated[WebSettings, Depends(get_settings)]) -> StreamingResponse:
    """Server-sent events for one chat: ``{"type": "agent", "name": "Lena" | null}`` when an agent joins or
    leaves (first event: who is there now), ``{"type": "typing", "name": "Lena"}`` while the agent types.
    Only agents' first names reach the page; the stream ends when the page goes. 403 without the session's key;
    429 while this replica holds 4 streams of the chat or ``CHAT_STREAMS_PER_CLIENT`` of the client address."""
    require_session_key(settings, body.session_id, body.session_key)
    conversation = body.session_id
    # The address uvicorn resolved (X-Forwarded-For from the loopback load balancer only: FORWARDED_ALLOW_IPS).
    holders = (("chat", conversation), ("client", request.client.host if request.client else "unknown"))
    if (_streams[holders[0]] >= STREAMS_PER_CHAT or _streams[holders[1]] >= settings.chat_streams_per_client):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, TOO_MANY_STREAMS)
    _streams.update(holders)  # counted before the first await: no other request runs in between
    hub = get_hub()

    def agent_now() -> str | None:
        with session_scope(settings.database_url, write=False) as session:
            return current_agent(session, conversation_id=conversation)

    def accept(event: dict[str, Any]) -> bool:
        return event.get("conversation_id") == conversation and event["type"] in ("handoff", "signal")

    queue = hub.subscribe(accept)

    def close() -> None:
        hub.unsubscribe(queue)
        _streams.subtract(holders)
        for holder in holders:
            if _streams[holder] <= 0:
                del _streams[holder]

    try:
        first = {"type": "agent", "name": await run_in_threadpool(agent_now)}
    except BaseException:
        close()
        raise

    async def next_event() -> dict[str, Any]:
        while True:
            event = await queue.get()
            if event is CLOSE:
                return event
            if event["type"] == "handoff":
                return {"type": "agent", "name": event["agent_name"] if event["status"] == "assigned" else None}
            if event["type"] == "signal" and event["party"] == "agent" and event["kind"] == "typing":
                return {"type": "typing", "name": event.get("author")}

    return StreamingResponse(sse(next_event, close, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.post("/chat/uploads", status_code=status.HTTP_201_CREATED,
             responses={413: {"description": TOO_LARGE}, 415: {"description": WRONG_TYPE}, 409: {"description": NO_TICKET},
                        429: {"description": TOO_MANY}})
async def upload_photo(request: Request, settings: Annotated[WebSettings, Depends(get_settings)]) -> dict[str, Any]:
    """A photo for the conversation's ticket: raw body (JPEG, PNG or WebP by content, at most 5 MB), the chat's
    session id in ``X-Chat-Session``, its key in ``X-Chat-Key`` and the file's name in ``X-Filename``. Returns
    ``{"id", "ticket"}``; 403 without the session's key."""
    session_id = request.headers.get("x-chat-session", "")
    if not SESSION_RE.match(session_id):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Missing chat session")
    require_session_key(settings, session_id, request.headers.get("x-chat-key", ""))
    client = request.client.host if request.client else "unknown"
    # Redis I/O off the event loop.
    if not (await run_in_threadpool(allow, PHOTO_RATE_PER_CHAT, "photo-chat", session_id, settings=settings)
            and await run_in_threadpool(allow, PHOTO_RATE_PER_CLIENT, "photo-client", client, settings=settings)):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, TOO_MANY)
    declared = int(request.headers.get("content-length") or 0)
    if declared > MAX_PHOTO_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, TOO_LARGE)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_PHOTO_BYTES:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, TOO_LARGE)
        chunks.append(chunk)
    data = b"".join(chunks)
    kind = sniff_image(data)
    if kind is None:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, WRONG_TYPE)
    filename = re.sub(r"[^\w.\- ]", "_", unquote(request.headers.get("x-filename", "photo")))[:200] or "photo"

    def store() -> dict[str, Any] | None:
        with session_scope(settings.database_url) as session:
            handoff = latest_handoff_for(session, conversation_id=session_id)
            if handoff is None or handoff.ticket is None:
                return None
            row = add_attachment(session, conversation_id=session_id, handoff=handoff, ticket=handoff.ticket,
                                 filename=filename, content_type=kind, data=data)
            add_ticket_event(session, ticket=handoff.ticket, kind=TicketEventKind.CUSTOMER_CONTACT, author="customer",
                             body=f"Photo from the chat: {filename} ({len(data) // 1024} KB)",
                             data={"attachment_id": row.id})
            session.flush()
            return {"id": row.id, "ticket": handoff.ticket.number, "handoff_id": handoff.id}

    stored = await run_in_threadpool(store)
    if stored is None:
        raise HTTPException(status.HTTP_409_CONFLICT, NO_TICKET)
    return {"id": stored["id"], "ticket": stored["ticket"]}

