"""The console's push stream and live extras: agent typing, search over all conversations, customers'
photos, device fault titles and history.

The stream is ``GET /api/console/stream`` read with fetch() and the ``Authorization`` header (no token in a
URL): server-sent events of ids only (``web_service.live``), on which the page re-reads what it shows.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from anyio import from_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field

from crm_store.db import session_scope
from crm_store.enums import UserRole
from crm_store.models import utcnow
from crm_store.repositories.console import (
    add_signal,
    fault_history,
    fault_titles,
    get_attachment,
    list_attachments,
    search_handoffs,
)
from crm_store.repositories.handoffs import get_handoff
from crm_store.repositories.telemetry import METRICS
from crm_store.repositories.users import get_user_by_username
from web_service import errors
from web_service.handoff_access import Action, authorize, may_read
from web_service.deps import SessionDep, StaffUser, bearer
from web_service.live import get_hub, sse
from web_service.routes.handoffs import to_public
from web_service.schemas import HandoffPublic
from web_service.security import read_token
from web_service.settings import WebSettings, get_settings

router = APIRouter(tags=["console"])
STAFF_ROLES = (UserRole.AGENT, UserRole.SUPERVISOR, UserRole.ADMIN)


class SearchRequest(BaseModel):
    q: str = Field(max_length=200, description="a customer's name or e-mail, a ticket number or a conversation id")


class AttachmentPublic(BaseModel):
    id: int
    filename: str
    content_type: str
    size: int
    created_at: dt.datetime
    ticket_id: int | None


def stream_user(
    settings: Annotated[WebSettings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The staff user name of the bearer token, checked in a unit of work of its own: the request's session
    would stay open as long as the stream does."""
    claims = read_token(settings.secret_key.get_secret_value(), credentials.credentials,
                        previous=settings.previous_secret_keys) if credentials else None
    if claims is not None:
        with session_scope(settings.database_url, write=False) as session:
            user = get_user_by_username(session, username=claims.username)
            if user is not None and user.is_active and user.role in STAFF_ROLES:
                return user.username
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, errors.NOT_AUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})


stream_user.roles = frozenset(STAFF_ROLES)  # type: ignore[attr-defined]  # read by the route-security tests


@router.get("/api/console/stream", responses={401: {"description": errors.NOT_AUTHENTICATED}})
async def console_stream(_user: Annotated[str, Depends(stream_user)]) -> StreamingResponse:
    """Server-sent events for the console: ``handoff`` (new, status or assignee changed), ``message``,
    ``signal`` (customer typing or sent) and ``attachment``, ids only; a keep-alive comment every 15 s."""
    hub = get_hub()
    queue = hub.subscribe(lambda _event: True)
    return StreamingResponse(sse(queue.get, lambda: hub.unsubscribe(queue), {"type": "hello"}),
                             media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# Every route that acts on one conversation is under /api/handoffs/{handoff_id} and passes handoff_access.authorize
# (the route-security matrix covers each; a test fails for a route that takes a handoff or photo id elsewhere).
@router.post("/api/handoffs/{handoff_id}/typing", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
             responses={403: {}, 404: {}, 409: {"description": errors.NOT_YOUR_CONVERSATION}})
def agent_typing(handoff_id: int, session: SessionDep, user: StaffUser) -> Response:
    """The agent is typing a reply (throttled by the page): the customer's chat shows "<first name> is typing".
    Only the conversation's assignee, as for a reply (409 otherwise)."""
    handoff = get_handoff(session, handoff_id=handoff_id)
    if handoff is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.HANDOFF_NOT_FOUND)
    authorize(session, handoff, user, Action.REPLY)
    name = (user.full_name or user.username).split()[0]
    signal_id = add_signal(session, conversation_id=handoff.conversation_id, party="agent", kind="typing", author=name)
    session.commit()
    event = {"type": "signal", "id": signal_id, "conversation_id": handoff.conversation_id, "party": "agent",
             "kind": "typing", "author": name}
    from_thread.run_sync(get_hub().publish_local, event)  # this route runs in a worker thread; the hub on the loop
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/api/console/search", response_model=list[HandoffPublic])
def search(body: SearchRequest, session: SessionDep, user: StaffUser) -> list[HandoffPublic]:
    """Conversations in any status (closed ones too), newest first, by customer name or e-mail, ticket number
    or conversation id; at most 50, and only those the user may read (web_service.handoff_access). A POST: the
    query is personal data, and a URL's query string reaches access logs, proxies and browser history."""
    if len(body.q.strip()) < 2:
        return []
    return [to_public(h) for h in search_handoffs(session, query=body.q) if may_read(session, h, user)]


@router.get("/api/handoffs/{handoff_id}/attachments", response_model=list[AttachmentPublic])
def read_attachments(handoff_id: int, session: SessionDep, user: StaffUser) -> list[AttachmentPublic]:
    """Photos the customer sent in this conversation or for its ticket, oldest first."""
    handoff = get_handoff(session, handoff_id=handoff_id)
    if handoff is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.HANDOFF_NOT_FOUND)
    authorize(session, handoff, user, Action.READ)
    return [AttachmentPublic.model_validate(a, from_attributes=True) for a in list_attachments(session, handoff=handoff)]


@router.get("/api/handoffs/{handoff_id}/attachments/{attachment_id}", response_class=Response,
            responses={403: {}, 404: {}})
def read_attachment(handoff_id: int, attachment_id: int, session: SessionDep, user: StaffUser) -> Response:
    """The photo's bytes with its sniffed type; never rendered as anything but an image. As the list: for those
    who may read the conversation (403 otherwise); 404 for a photo that is not this conversation's."""
    handoff = get_handoff(session, handoff_id=handoff_id)
    if handoff is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.HANDOFF_NOT_FOUND)
    authorize(session, handoff, user, Action.READ)
    row = get_attachment(session, handoff=handoff, attachment_id=attachment_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Attachment not found")
    return Response(row.data, media_type=row.content_type,
                    headers={"Cache-Control": "private, max-age=3600", "Content-Disposition": "inline"})


class FaultInfo(BaseModel):
    titles: dict[str, str]
    metrics: dict[str, tuple[str, str]] = Field(description="metric -> (label, unit), for chart axes")
    history: list[dict[str, Any]] = Field(description="[{ts, code}] fault reports of the last `hours`")


@router.get("/api/console/devices/{serial}/faults", response_model=FaultInfo)
def read_faults(serial: str, session: SessionDep, _user: StaffUser,
                hours: Annotated[float, Query(ge=1, le=24 * 7, allow_inf_nan=False)] = 24) -> FaultInfo:
    """Titles of the device model's fault codes, the device's fault reports of the last ``hours`` (1–168; chart
    markers) and each metric's label and unit. 422 for hours out of range or not a number."""
    since = utcnow() - dt.timedelta(hours=hours)
    return FaultInfo(titles=fault_titles(session, serial=serial), metrics=dict(METRICS),
                     history=fault_history(session, serial=serial, since=since))
