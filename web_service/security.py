"""Signed, expiring bearer tokens (HMAC-SHA256 over a small JSON payload)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenClaims:
    username: str
    role: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(secret: str, *, username: str, role: str, ttl_seconds: int, now: float | None = None) -> str:
    payload = {"sub": username, "role": role, "exp": int((now or time.time()) + ttl_seconds)}
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    sig = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}"


def read_token(secret: str, token: str, *, now: float | None = None) -> TokenClaims | None:
    """The token's claims, or None when it is malformed, forged or expired."""
    try:
        body, sig = token.split(".")
        expected = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(sig, expected):
            return None
        payload = json.loads(_unb64(body))
        claims = TokenClaims(username=str(payload["sub"]), role=str(payload["role"]), expires_at=int(payload["exp"]))
    except (ValueError, KeyError, TypeError):
        return None
    return claims if claims.expires_at > (now or time.time()) else None
