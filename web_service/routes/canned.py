"""Canned responses: every agent reads them, supervisors manage them."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field

from crm_store.errors import ConflictError
from crm_store.repositories.console import delete_canned, list_canned, save_canned
from web_service.deps import SessionDep, StaffUser, SupervisorUser

router = APIRouter(prefix="/api/console/canned", tags=["console"])
NOT_FOUND = "Canned response not found"


class CannedIn(BaseModel):
    title: str = Field(min_length=1, max_length=80)
    body: str = Field(min_length=1, max_length=4000,
                      description="Placeholders: {customer_name}, {first_name}, {ticket}, {agent_name}")


class CannedPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    title: str
    body: str
    updated_by: str
    updated_at: dt.datetime


@router.get("", response_model=list[CannedPublic])
def read_canned(session: SessionDep, _user: StaffUser) -> list[CannedPublic]:
    return [CannedPublic.model_validate(c) for c in list_canned(session)]


@router.post("", response_model=CannedPublic, status_code=status.HTTP_201_CREATED, responses={409: {"description": "title taken"}})
def create_canned(body: CannedIn, session: SessionDep, user: SupervisorUser) -> CannedPublic:
    try:
        row = save_canned(session, title=body.title.strip(), body=body.body, author=user.username)
    except ConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.commit()
    return CannedPublic.model_validate(row)


@router.put("/{canned_id}", response_model=CannedPublic, responses={404: {"description": NOT_FOUND}, 409: {"description": "title taken"}})
def update_canned(canned_id: int, body: CannedIn, session: SessionDep, user: SupervisorUser) -> CannedPublic:
    try:
        row = save_canned(session, title=body.title.strip(), body=body.body, author=user.username, canned_id=canned_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND) from exc
    except ConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    session.commit()
    return CannedPublic.model_validate(row)


@router.delete("/{canned_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def remove_canned(canned_id: int, session: SessionDep, _user: SupervisorUser) -> Response:
    if not delete_canned(session, canned_id=canned_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
