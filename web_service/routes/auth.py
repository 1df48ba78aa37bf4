"""Sign-in: exchange a username and password for a bearer token, throttled and locked out on failures."""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status

from crm_store.db import session_scope
from crm_store.models import utcnow
from crm_store.repositories.lockouts import (
    SIGN_IN,
    SIGN_IN_CLIENT,
    LockoutPolicy,
    clear_failures,
    release_attempt,
    reserve_attempts,
)
from crm_store.repositories.users import authenticate_user
from web_service import errors
from web_service.deps import ReadSessionDep, StaffUser
from web_service.ratelimit import allow
from web_service.schemas import LoginRequest, TokenPublic
from web_service.security import issue_token
from web_service.settings import WebSettings, get_settings

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/auth", tags=["auth"])
# A client address gets more failures than one user name (an office shares one address), not unlimited.
CLIENT_POLICY_FACTOR = 4


def _too_many(until: dt.datetime | None) -> HTTPException:
    retry = max(1, math.ceil((until - utcnow()).total_seconds())) if until else 60
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, errors.TOO_MANY_SIGN_INS, headers={"Retry-After": str(retry)})


@router.post("/token", response_model=TokenPublic, responses={401: {}, 429: {"description": "throttled or locked out"}})
def login(body: LoginRequest, request: Request, session: ReadSessionDep,
          settings: Annotated[WebSettings, Depends(get_settings)]) -> TokenPublic:
    """Throttled per client address (``SIGN_IN_RATE_PER_CLIENT``) before any password hashing; after
    ``SIGN_IN_MAX_FAILURES`` failures a user name (and, four times as many, a client address) is locked out,
    existing or not, with ``429`` and ``Retry-After`` until the lock ends or staff lift it."""
    client = request.client.host if request.client else "unknown"
    if not allow(settings.sign_in_rate_per_client, "sign-in", client, settings=settings):
        logger.warning("sign-in throttled for a client address")
        raise _too_many(None)
    user_policy = LockoutPolicy(max_failures=settings.sign_in_max_failures)
    client_policy = LockoutPolicy(max_failures=settings.sign_in_max_failures * CLIENT_POLICY_FACTOR)
    # The attempt is counted before the password hash is checked: simultaneous guesses (threads, replicas)
    # get at most SIGN_IN_MAX_FAILURES checks between them, then 429.
    with session_scope(settings.database_url) as writer:
        until = reserve_attempts(writer, [(SIGN_IN, body.username, user_policy), (SIGN_IN_CLIENT, client, client_policy)])
    if until is not None:
        raise _too_many(until)
    # The password hash is checked in a read-only transaction; the outcome is recorded in a short write.
    user = authenticate_user(session, username=body.username, password=body.password)
    if user is None:
        logger.info("failed sign-in for a user name of %d characters", len(body.username))
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, errors.BAD_CREDENTIALS)
    with session_scope(settings.database_url) as writer:
        clear_failures(writer, scope=SIGN_IN, key=body.username)
        release_attempt(writer, scope=SIGN_IN_CLIENT, key=client, policy=client_policy)
    token = issue_token(
        settings.secret_key.get_secret_value(), username=user.username, role=user.role.value,
        ttl_seconds=settings.token_ttl_seconds,
    )
    return TokenPublic(access_token=token, expires_in=settings.token_ttl_seconds, role=user.role)


@router.get("/me")
def me(user: StaffUser) -> dict[str, str]:
    return {"username": user.username, "full_name": user.full_name, "role": user.role.value}
