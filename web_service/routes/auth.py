"""Sign-in: exchange a username and password for a bearer token."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status

from crm_store.repositories.users import authenticate_user
from web_service import errors
from web_service.deps import ReadSessionDep, StaffUser
from web_service.schemas import LoginRequest, TokenPublic
from web_service.security import issue_token
from web_service.settings import WebSettings, get_settings

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/token", response_model=TokenPublic)
def login(body: LoginRequest, session: ReadSessionDep, settings: Annotated[WebSettings, Depends(get_settings)]) -> TokenPublic:
    user = authenticate_user(session, username=body.username, password=body.password)
    if user is None:
        logger.info("failed sign-in for a user name of %d characters", len(body.username))
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, errors.BAD_CREDENTIALS)
    token = issue_token(
        settings.secret_key.get_secret_value(), username=user.username, role=user.role.value,
        ttl_seconds=settings.token_ttl_seconds,
    )
    return TokenPublic(access_token=token, expires_in=settings.token_ttl_seconds, role=user.role)


@router.get("/me")
def me(user: StaffUser) -> dict[str, str]:
    return {"username": user.username, "full_name": user.full_name, "role": user.role.value}
