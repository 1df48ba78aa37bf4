"""The agent console: its page, the signed-in agent's skills, agents' skills and the supervisor's figures."""

from __future__ import annotations

import datetime as dt
import pathlib
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import HTMLResponse

from crm_store.enums import ApplianceCategory
from crm_store.models import User, utcnow
from crm_store.repositories.handoffs import get_skills, handoff_metrics, set_skills
from crm_store.repositories.users import get_user_by_username, list_active_users
from web_service import errors
from web_service.deps import SessionDep, StaffUser, SupervisorUser
from web_service.schemas import ConsoleUser, SkillsPublic, SkillsUpdate

router = APIRouter(tags=["console"])
PAGE = pathlib.Path(__file__).resolve().parent.parent / "static" / "console.html"


@router.get("/console", response_class=HTMLResponse, include_in_schema=False)
def console_page() -> HTMLResponse:
    """The console's page; it holds no data (everything comes from the authenticated API)."""
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})


def _console_user(session: SessionDep, user: User) -> ConsoleUser:
    skills = get_skills(session, user_id=user.id)
    return ConsoleUser(
        username=user.username, full_name=user.full_name, role=user.role,
        skills=SkillsPublic(categories=[ApplianceCategory(c) for c in sorted(skills.categories)],
                            languages=sorted(skills.languages)),
    )


@router.get("/api/console/me", response_model=ConsoleUser)
def read_me(session: SessionDep, user: StaffUser) -> ConsoleUser:
    return _console_user(session, user)


@router.get("/api/console/agents", response_model=list[ConsoleUser])
def read_agents(session: SessionDep, _user: SupervisorUser) -> list[ConsoleUser]:
    return [_console_user(session, u) for u in list_active_users(session)]


@router.put("/api/console/agents/{username}/skills", response_model=ConsoleUser)
def update_skills(username: str, body: SkillsUpdate, session: SessionDep, _user: SupervisorUser) -> ConsoleUser:
    """Routing skills: appliance categories and languages; none of a kind means "any"."""
    target = get_user_by_username(session, username=username)
    if target is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, errors.USER_NOT_FOUND)
    set_skills(session, user_id=target.id, categories=body.categories, languages=body.languages)
    session.commit()
    return _console_user(session, target)


@router.get("/api/console/metrics")
def read_metrics(
    session: SessionDep, _user: SupervisorUser, days: Annotated[int, Query(ge=1, le=365)] = 7
) -> dict[str, Any]:
    """Queue load, SLA breaches, CSAT, escalation and bot containment rates over the last ``days``."""
    return handoff_metrics(session, since=utcnow() - dt.timedelta(days=days))
