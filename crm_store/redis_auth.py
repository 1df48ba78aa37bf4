"""A Redis that refuses the product's password is a configuration error, not an outage.

Every rate limiter of the product (the web routes, Rasa's chat guard, the anonymous-escalation limits) admits a
call when Redis cannot be reached, so that an outage never stops customers. A refused password raises the same
kind of error (``redis.exceptions.AuthenticationError`` is a ``RedisError``), so without this check a wrong or
missing ``REDIS_PASSWORD`` switched every limit off with only a warning per call. Each process calls
:func:`verify_redis_password` as it starts and refuses to start on a refused password; an unreachable Redis
only logs (the process starts and its limits fail open until Redis is back, as during an outage).

Standard library and redis-py only: the Rasa environment (redis-py 4.6) uses it too.
"""

from __future__ import annotations

import logging

import redis
from redis.exceptions import AuthenticationError, ResponseError

logger = logging.getLogger(__name__)


DEFAULT_KEY_PREFIX = "appliancecare"


def key_prefix(value: str | None) -> str:
    """``REDIS_KEY_PREFIX`` as every process uses it: empty or unset gives :data:`DEFAULT_KEY_PREFIX`; anything but
    letters and digits raises ``ValueError`` (Rasa's ``RedisLockStore`` requires that, and the prefixes of the
    product's own keys must match it)."""
    value = (value or "").strip() or DEFAULT_KEY_PREFIX
    if not value.isalnum():
        raise ValueError("REDIS_KEY_PREFIX must be letters and digits only")
    return value


class RedisPasswordRefused(RuntimeError):
    """Redis refused ``REDIS_PASSWORD`` (wrong, missing, or given to a Redis that has none)."""


def password_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing the credentials (rather than being away)."""
    if isinstance(exc, AuthenticationError):
        return True
    text = str(exc)
    refusals = ("NOAUTH", "WRONGPASS", "without any password")
    return isinstance(exc, ResponseError) and any(code in text for code in refusals)


def verify_redis_password(url: str, password: str, *, timeout: float = 2.0) -> None:
    """PINGs ``url`` (no password in it) with ``password`` (empty: none).

    Raises :class:`RedisPasswordRefused` when Redis refuses the credentials; logs a warning and returns when
    Redis cannot be reached or ``url`` is empty. The message names the variable, never its value."""
    if not url:
        return
    client = redis.Redis.from_url(url, password=password or None, socket_timeout=timeout,
                                  socket_connect_timeout=timeout)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - sorted below: refused credentials raise, the rest is an outage
        if password_refused(exc):
            raise RedisPasswordRefused(
                "Redis refused the credentials: check REDIS_PASSWORD (set it to Redis's requirepass, or leave it "
                "empty for a Redis without one); the rate limits would otherwise be off") from None
        logger.warning("Redis not reachable at start-up (%s); rate limits admit every call until it is",
                       type(exc).__name__)
    finally:
        client.close()
