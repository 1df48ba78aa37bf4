"""FastAPI dependencies: the request's database session and the authenticated user."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from crm_store.chat_sessions import owns
from crm_store.db import session_factory
from crm_store.enums import UserRole
from crm_store.models import User
from crm_store.repositories.users import get_user_by_username
from web_service import errors
from web_service.security import read_token
from web_service.settings import WebSettings, get_settings

logger = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False)


# Safe methods do not write: their session is read-only and never takes SQLite's write lock.
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _session(url: str, *, write: bool) -> Iterator[Session]:
    session = session_factory(url, write=write)()
    try:
        yield session
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


def get_session(request: Request, settings: Annotated[WebSettings, Depends(get_settings)]) -> Iterator[Session]:
    """One session per request; the route commits its unit of work.

    Read-only for GET/HEAD/OPTIONS (a write there fails loudly), a write session for other methods.
    FastAPI runs this sync dependency, and every sync route using it, in its worker threadpool.
    """
    yield from _session(settings.database_url, write=request.method not in READ_ONLY_METHODS)


def get_read_session(settings: Annotated[WebSettings, Depends(get_settings)]) -> Iterator[Session]:
    """A read-only session for a POST that only reads (sign-in), so it does not queue on the write lock."""
    yield from _session(settings.database_url, write=False)


SessionDep = Annotated[Session, Depends(get_session)]
ReadSessionDep = Annotated[Session, Depends(get_read_session)]


def get_current_user(
    session: SessionDep,
    settings: Annotated[WebSettings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, errors.NOT_AUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
    claims = read_token(settings.secret_key.get_secret_value(), credentials.credentials,
                        previous=settings.previous_secret_keys)
    user = get_user_by_username(session, username=claims.username) if claims else None
    if user is None or not user.is_active:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, errors.INVALID_TOKEN, headers={"WWW-Authenticate": "Bearer"})
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_roles(*roles: UserRole) -> Callable[[User], User]:
    """A dependency that admits only users with one of ``roles``."""

    def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, errors.FORBIDDEN)
        return user

    check.roles = frozenset(roles)  # type: ignore[attr-defined]  # read by the route-security tests
    return check


STAFF = (UserRole.AGENT, UserRole.SUPERVISOR, UserRole.ADMIN)
StaffUser = Annotated[User, Depends(require_roles(*STAFF))]
SupervisorUser = Annotated[User, Depends(require_roles(UserRole.SUPERVISOR, UserRole.ADMIN))]


def require_session_key(settings: WebSettings, session_id: str, key: str) -> None:
    """403 unless ``key`` is the web-chat session's key (crm_store.chat_sessions): the session id alone, which
    agents see and logs may hold, opens nothing. Also 403 while CHAT_SESSION_SECRET is unset."""
    if not owns(settings.chat_session_secret.get_secret_value(), session_id, key):
        logger.info("chat route refused: no valid session key")
        raise HTTPException(status.HTTP_403_FORBIDDEN, errors.NOT_YOUR_CHAT)
