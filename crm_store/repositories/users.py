"""Console and API users with salted scrypt password hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_store.enums import UserRole
from crm_store.errors import ConflictError
from crm_store.models import User

# scrypt parameters (N=2^14, r=8, p=1): ~16 MiB and a few tens of ms per check.
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "scrypt${}${}${}${}${}".format(
        _N, _R, _P, base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    )


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt_b64), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def create_user(session: Session, *, username: str, password: str, role: UserRole, full_name: str = "") -> User:
    user = User(username=username, password_hash=hash_password(password), role=role, full_name=full_name or username)
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError as exc:
        raise ConflictError(f"user {username!r} exists") from exc
    return user


def get_user_by_username(session: Session, *, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def authenticate_user(session: Session, *, username: str, password: str) -> User | None:
    """The active user with these credentials, or None."""
    user = get_user_by_username(session, username=username)
    if user is None or not user.is_active:
        # Hash anyway so that a missing user takes as long as a wrong password.
        verify_password(password, "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        return None
    return user if verify_password(password, user.password_hash) else None


def list_active_users(session: Session) -> list[User]:
    """Every active console user (agents and supervisors), by user name."""
    return list(session.scalars(select(User).where(User.is_active.is_(True)).order_by(User.username)))
