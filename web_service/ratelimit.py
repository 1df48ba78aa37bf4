"""Request rate limits of the web service (the ``limits`` library).

Counters live in Redis when ``REDIS_URL`` is set, so every web replica counts together; otherwise in the
process. When Redis is unreachable the limit is not enforced for that request (logged): sign-in still has
its lock-out in the database (crm_store.repositories.lockouts).
"""

from __future__ import annotations

import logging
from functools import lru_cache

from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

logger = logging.getLogger(__name__)


@lru_cache
def _limiter(redis_url: str) -> MovingWindowRateLimiter:
    storage = storage_from_string(redis_url, key_prefix="web-ratelimit") if redis_url else MemoryStorage()
    return MovingWindowRateLimiter(storage)


def allow(rate: str, *keys: str, redis_url: str = "") -> bool:
    """Counts one hit of ``keys`` against ``rate`` (e.g. ``"20/minute"``); False when over the limit."""
    try:
        return _limiter(redis_url).hit(parse(rate), *keys)
    except Exception as exc:  # Redis away: admit, and say so
        logger.warning("rate limiter unavailable (%s); request admitted", type(exc).__name__)
        return True
