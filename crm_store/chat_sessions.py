"""Web-chat session keys: what proves that a browser owns a conversation id.

A web chat's session id is also its Rasa conversation id: agents see it in the console, it is in logs and
packets. It must not be enough to read or write the conversation. The socket.io channel therefore issues,
with each new session id, a key: HMAC-SHA256 of the id with ``CHAT_SESSION_SECRET`` (128 bits, 32 hex
characters). Only the customer's browser holds it; the socket.io channel (to resume a session) and the web
service's chat routes (presence, signals, the agent stream, photo uploads) require it. Standard library only:
both the Rasa environment and the web service's import it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_CHARS = 32  # hex characters of the key: 128 bits


def new_session_id() -> str:
    """A fresh, unguessable session id (32 hex characters)."""
    return secrets.token_hex(16)


def session_key(secret: str, session_id: str) -> str:
    """The key of ``session_id`` under ``secret`` (32 hex characters). Raises ValueError without a secret."""
    if not secret:
        raise ValueError("CHAT_SESSION_SECRET is not set")
    return hmac.new(secret.encode(), b"chat-session:" + session_id.encode(), hashlib.sha256).hexdigest()[:KEY_CHARS]


def owns(secret: str, session_id: object, key: object) -> bool:
    """Whether ``key`` is the key of ``session_id`` (constant-time; False for anything not a string, or without
    a secret)."""
    if not secret or not isinstance(session_id, str) or not isinstance(key, str) or len(key) != KEY_CHARS:
        return False
    return hmac.compare_digest(session_key(secret, session_id), key)
