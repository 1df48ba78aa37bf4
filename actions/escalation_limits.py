"""How many handoffs an anonymous chat may queue: per conversation and per client address.

An unverified chat costs an agent's time and nobody is accountable for it, so its escalations are
rate-limited with the ``limits`` library (moving window; Redis when ``REDIS_URL`` is set, so every action
server counts together, else process memory):

- ``ANONYMOUS_ESCALATIONS_PER_CONVERSATION`` (default ``2/hour``): one conversation's new handoffs;
- ``ANONYMOUS_ESCALATIONS_PER_CLIENT`` (default ``5/hour``): the handoffs of every anonymous conversation from
  one client address (the keyed hash the input guard puts in the message's metadata; a channel that knows no
  address counts per conversation only).

Only a request that would create a handoff is counted ("you're already waiting" is not). A verified
customer's escalation is never limited here. Refusals are counted in ``EscalationLimits.refused`` and logged
without the conversation id.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from actions.settings import get_settings
from crm_store.redis_auth import DEFAULT_KEY_PREFIX

logger = logging.getLogger(__name__)

REFUSED_TEXT = (
    "I've already passed several requests for a person from here on to our team, so I can't queue another one "
    "right now. If you're a customer, say \"link my account\" and I can bring in a person for your account, or "
    "contact our service team by phone or e-mail."
)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: str | None = None  # "conversation" or "client" when refused


class EscalationLimits:
    """The two limits over one ``limits`` storage. Thread-safe (actions run in worker threads)."""

    def __init__(self, per_conversation: str, per_client: str, redis_url: str = "", *, redis_password: str = "",
                 key_prefix: str = DEFAULT_KEY_PREFIX) -> None:
        self.per_conversation: RateLimitItem = parse(per_conversation)
        self.per_client: RateLimitItem = parse(per_client)
        options = {"password": redis_password} if redis_password else {}
        storage = (storage_from_string(redis_url, key_prefix=f"{key_prefix}-anonymous-escalations", **options)
                   if redis_url else MemoryStorage())
        self._limiter = MovingWindowRateLimiter(storage)
        self.refused: Counter[str] = Counter()

    def admit(self, *, conversation: str, client: str | None) -> Decision:
        """Counts one new anonymous handoff for the conversation and its client; refused past either limit.

        The client's limit is checked first without counting, so that a refused conversation does not use up
        its neighbours' share. Redis unreachable: admitted (fail open like the chat guard) and logged.
        """
        try:
            if client and not self._limiter.test(self.per_client, "client", client):
                return self._refuse("client")
            if not self._limiter.hit(self.per_conversation, "conversation", conversation):
                return self._refuse("conversation")
            if client and not self._limiter.hit(self.per_client, "client", client):
                return self._refuse("client")  # a racing request took the last place meanwhile
        except Exception as exc:  # the storage is away: serving customers comes first
            logger.warning("anonymous escalation limits unavailable (%s); escalation admitted", type(exc).__name__)
        return Decision(True)

    def _refuse(self, limit: str) -> Decision:
        self.refused[limit] += 1
        logger.warning("anonymous escalation refused: %s limit (%d refused so far)", limit, self.refused[limit])
        return Decision(False, limit)


@lru_cache
def get_escalation_limits() -> EscalationLimits:
    """The process's limits, from the action server's settings."""
    settings = get_settings()
    return EscalationLimits(settings.anonymous_escalations_per_conversation, settings.anonymous_escalations_per_client,
                            settings.redis_url.get_secret_value(),
                            redis_password=settings.redis_password.get_secret_value(),
                            key_prefix=settings.redis_key_prefix)
