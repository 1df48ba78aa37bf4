"""One authorisation rule for every handoff route: the user's role, their skills and the assignment decide.

| action | supervisor, admin | agent |
|---|---|---|
| ``read`` (detail with contact details, transcript, photos and their bytes) and ``note`` | any conversation | their own (assigned to them now or before), or an unassigned one (queued, callback) their skills cover: else ``403`` |
| ``claim`` | any | one their skills cover: else ``403``; taken by someone else: ``409`` |
| ``reply`` (and "typing") | only as the assignee: else ``409`` | the same |
| ``close`` (resolve, hand back) | any open conversation or callback | their own: else ``409``; a callback their skills cover: else ``403`` |

``ROUTES`` maps every handoff route to its action; the route-security test fails for a route missing here.
"""

from __future__ import annotations

from enum import Enum

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from crm_store.enums import HandoffStatus, UserRole
from crm_store.models import Handoff, User
from crm_store.repositories.handoffs import get_skills
from web_service import errors

SUPERVISING = (UserRole.SUPERVISOR, UserRole.ADMIN)
UNASSIGNED = (HandoffStatus.QUEUED, HandoffStatus.CALLBACK)


class Action(str, Enum):
    READ = "read"
    NOTE = "note"
    CLAIM = "claim"
    REPLY = "reply"
    CLOSE = "close"


# (method, path) of every route that acts on one handoff → the action it needs.
ROUTES: dict[tuple[str, str], Action] = {
    ("get", "/api/handoffs/{handoff_id}"): Action.READ,
    ("get", "/api/handoffs/{handoff_id}/attachments"): Action.READ,
    ("get", "/api/handoffs/{handoff_id}/attachments/{attachment_id}"): Action.READ,
    ("post", "/api/handoffs/{handoff_id}/typing"): Action.REPLY,
    ("post", "/api/handoffs/{handoff_id}/notes"): Action.NOTE,
    ("post", "/api/handoffs/{handoff_id}/claim"): Action.CLAIM,
    ("post", "/api/handoffs/{handoff_id}/messages"): Action.REPLY,
    ("post", "/api/handoffs/{handoff_id}/resolve"): Action.CLOSE,
    ("post", "/api/handoffs/{handoff_id}/handback"): Action.CLOSE,
}


def _in_skills(session: Session, handoff: Handoff, user: User) -> bool:
    return get_skills(session, user_id=user.id).accepts(handoff)


def may_read(session: Session, handoff: Handoff, user: User) -> bool:
    """Whether ``user`` may see this conversation (detail, transcript, contact details, photos)."""
    if user.role in SUPERVISING or handoff.assigned_user_id == user.id:
        return True
    return handoff.status in UNASSIGNED and _in_skills(session, handoff, user)


def authorize(session: Session, handoff: Handoff, user: User, action: Action) -> None:
    """Raises ``HTTPException`` (403 or 409, see the module table) unless ``user`` may do ``action``."""
    supervising = user.role in SUPERVISING
    mine = handoff.assigned_user_id == user.id
    if action in (Action.READ, Action.NOTE):
        if not may_read(session, handoff, user):
            raise HTTPException(status.HTTP_403_FORBIDDEN, errors.NOT_YOUR_CONVERSATION_TO_SEE)
    elif action is Action.CLAIM:
        if not supervising and not _in_skills(session, handoff, user):
            raise HTTPException(status.HTTP_403_FORBIDDEN, errors.OUTSIDE_SKILLS)
    elif action is Action.REPLY:
        if not (mine and handoff.status is HandoffStatus.ASSIGNED):
            raise HTTPException(status.HTTP_409_CONFLICT, errors.NOT_YOUR_CONVERSATION)
    elif action is Action.CLOSE:
        if supervising:
            return
        if handoff.status is HandoffStatus.CALLBACK:
            if not _in_skills(session, handoff, user):
                raise HTTPException(status.HTTP_403_FORBIDDEN, errors.OUTSIDE_SKILLS)
        elif not (mine and handoff.status is HandoffStatus.ASSIGNED):
            raise HTTPException(status.HTTP_409_CONFLICT, errors.NOT_YOUR_CONVERSATION)
