"""Staff bearer tokens: JWTs (PyJWT, HS256) signed with the current key, verified with any key of the ring.

Key rotation: ``SECRET_KEY`` signs new tokens; ``SECRET_KEYS_PREVIOUS`` (comma-separated) lists keys that
still verify tokens issued before a rotation. Each token names its key in the ``kid`` header (a short hash
of the key, never the key), so verification needs no trial and error. Drop a previous key once every token
it signed has expired (``TOKEN_TTL_SECONDS``, 8 h by default).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ISSUER = "appliance-care"


@dataclass(frozen=True)
class TokenClaims:
    username: str
    role: str
    expires_at: int


def key_id(secret: str) -> str:
    """A public name for a signing key: 12 hex characters of its SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class KeyRing:
    """The signing key and the keys that still verify (current first)."""

    def __init__(self, current: str, previous: Iterable[str] = ()) -> None:
        self.current = current
        self._keys = {key_id(k): k for k in [current, *(p for p in previous if p)]}

    def issue(self, *, username: str, role: str, ttl_seconds: int, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        payload = {"sub": username, "role": role, "iat": issued, "exp": issued + ttl_seconds, "iss": ISSUER}
        return jwt.encode(payload, self.current, algorithm=ALGORITHM, headers={"kid": key_id(self.current)})

    def read(self, token: str, *, now: float | None = None) -> TokenClaims | None:
        """The token's claims, or None when it is malformed, forged, expired or signed by an unknown key."""
        try:
            key = self._keys.get(jwt.get_unverified_header(token).get("kid", ""))
            if key is None:
                return None
            payload = jwt.decode(token, key, algorithms=[ALGORITHM], issuer=ISSUER,
                                 options={"require": ["sub", "exp", "iat"], "verify_exp": now is None})
            claims = TokenClaims(username=str(payload["sub"]), role=str(payload["role"]), expires_at=int(payload["exp"]))
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            return None
        if now is not None and claims.expires_at <= now:
            return None
        return claims


def issue_token(secret: str, *, username: str, role: str, ttl_seconds: int, now: float | None = None) -> str:
    """A token signed with ``secret`` (see ``KeyRing.issue``)."""
    return KeyRing(secret).issue(username=username, role=role, ttl_seconds=ttl_seconds, now=now)


def read_token(secret: str, token: str, *, now: float | None = None, previous: Iterable[str] = ()) -> TokenClaims | None:
    """Claims of a token signed by ``secret`` or one of ``previous``; None otherwise (see ``KeyRing.read``)."""
    return KeyRing(secret, previous).read(token, now=now)
