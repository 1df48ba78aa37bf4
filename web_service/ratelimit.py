"""Request rate limits of the web service (the ``limits`` library).

Counters live in Redis when ``REDIS_URL`` is set, so every web replica counts together; otherwise in the
process. When Redis is unreachable the limit is not enforced for that request (logged and counted): sign-in
still has its lock-out in the database (crm_store.repositories.lockouts). Anything else (a malformed URL, a
wrong argument) raises: a limit that is silently off is a defect, not an outage.

:func:`allow` does blocking I/O with Redis: an ``async`` route calls it through the threadpool.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from limits import parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from pydantic import SecretStr
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

unenforced = 0  # hits admitted because Redis could not be reached (this process)


@lru_cache
def _limiter(redis_url: str) -> MovingWindowRateLimiter:
    storage = storage_from_string(redis_url, key_prefix="web-ratelimit") if redis_url else MemoryStorage()
    return MovingWindowRateLimiter(storage)


def allow(rate: str, *keys: str, redis_url: str | SecretStr = "") -> bool:
    """Counts one hit of ``keys`` against ``rate`` (e.g. ``"20/minute"``); False when over the limit.

    ``redis_url``: the settings' ``REDIS_URL`` as it is (a ``SecretStr``) or as text; empty: this process's memory.
    Raises ``limits.errors.ConfigurationError``/``ValueError`` for a malformed URL or rate."""
    url = redis_url.get_secret_value() if isinstance(redis_url, SecretStr) else redis_url
    limiter = _limiter(url)
    try:
        return limiter.hit(parse(rate), *keys)
    except (RedisError, OSError, StorageError) as exc:  # Redis away: admit, and say so
        global unenforced
        unenforced += 1
        logger.warning("rate limiter unavailable (%s); request admitted (%d so far)", type(exc).__name__, unenforced)
        return True
