"""Request rate limits of the web service (the ``limits`` library).

Counters live in Redis when ``REDIS_URL`` is set (with ``REDIS_PASSWORD``, under ``REDIS_KEY_PREFIX``), so
every web replica counts together; otherwise in the process. When Redis is unreachable the limit is not enforced for that request (logged and counted): sign-in
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
from redis.exceptions import RedisError

from web_service.settings import WebSettings

logger = logging.getLogger(__name__)

unenforced = 0  # hits admitted because Redis could not be reached (this process)


@lru_cache
def _limiter(redis_url: str, password: str, prefix: str) -> MovingWindowRateLimiter:
    if not redis_url:
        return MovingWindowRateLimiter(MemoryStorage())
    options = {"password": password} if password else {}
    return MovingWindowRateLimiter(storage_from_string(redis_url, key_prefix=f"{prefix}-web-ratelimit", **options))


def allow(rate: str, *keys: str, settings: WebSettings | None = None) -> bool:
    """Counts one hit of ``keys`` against ``rate`` (e.g. ``"20/minute"``); False when over the limit.

    ``settings``: the service's (``REDIS_URL``, ``REDIS_PASSWORD``, ``REDIS_KEY_PREFIX``); None, or no
    ``REDIS_URL``: this process's memory. Raises ``limits.errors.ConfigurationError``/``ValueError`` for a
    malformed URL or rate."""
    if settings is None:
        limiter = _limiter("", "", "")
    else:
        limiter = _limiter(settings.redis_url.get_secret_value(), settings.redis_password.get_secret_value(),
                           settings.redis_key_prefix)
    try:
        return limiter.hit(parse(rate), *keys)
    except (RedisError, OSError, StorageError) as exc:  # Redis away: admit, and say so
        global unenforced
        unenforced += 1
        logger.warning("rate limiter unavailable (%s); request admitted (%d so far)", type(exc).__name__, unenforced)
        return True
