"""What a customer types is bounded, rate-limited and never trusted as a classified intent.

Every input channel of ours (REST, socket.io, Messenger) passes each ``UserMessage`` through one
``InputGuard`` before Rasa sees it:

- **Text bound.** Control characters and bidirectional overrides are removed, whitespace runs collapse,
  and the text is cut to ``CHAT_MAX_CHARS`` (default 1,000) characters at a word boundary before language
  understanding. The cost of a turn grows with the square of its length (attention over every token);
  a 30 KB message once added ~2.9 GB to Rasa's memory. The first 1,000 characters hold the request.
- **No typed intents.** Rasa reads a text that starts with ``/`` as ``/intent{"entity": "value"}`` and skips
  language understanding. A customer may send such a payload only by pressing one of the buttons the bot
  offered since their last message (the exact payload), or the web chat's opening ``/greet``; anything else has
  its leading slashes removed and is understood as ordinary text. Internal intents (``/restart``, ``/session_start``, ``EXTERNAL_*``) are
  never offered as buttons, so they can't be reached.
- **Channel binding.** A conversation id belongs to the channel it started on: a REST message naming a
  web-chat session (or the reverse) is refused, so a session id seen elsewhere opens nothing.
- **Rate limits** (the ``limits`` library; Redis when ``REDIS_URL`` is set, so every Rasa replica counts
  together, else process memory): ``CHAT_RATE_PER_CONVERSATION`` (default ``20/minute``) per conversation
  and ``CHAT_RATE_PER_CLIENT`` (default ``60/minute``) per client address. A refused message gets a short
  reply and is not processed.

Refusals are counted (``InputGuard.counts``) and logged without the text or the conversation id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import re
import secrets
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from rasa.core.channels.channel import UserMessage
from rasa.shared.core.events import BotUttered, UserUttered

from crm_store.redis_auth import DEFAULT_KEY_PREFIX, key_prefix, verify_redis_password
from rasa_channels.channel_binding import NOT_SQL, latest_input_channel

logger = logging.getLogger(__name__)

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]

# A conversation's channel binding that could not be read (database away): admit, remember nothing.
UNKNOWN = object()

DEFAULT_MAX_CHARS = 1000
# Bidirectional embeddings/overrides/isolates: they reorder what agents read in the console.
_BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
# Joiners stay: emoji sequences and Persian/Arabic spelling need them.
_KEEP_FORMAT = {"\u200c", "\u200d"}
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
_NEWLINES = re.compile(r"\s*\n\s*")

# Payloads any client may send without the bot offering them first: the web chat's opening "/greet"
# (an intent that reads and changes nothing, and no entities).
OPEN_PAYLOADS = frozenset({"/greet"})

REPLY_RATE_LIMITED = "You're sending messages faster than I can read them. Please wait a moment and try again."
REPLY_OTHER_CHANNEL = "Please start a new conversation here: this one continues in the chat where it started."
REPLY_EMPTY = "I didn't catch any text. What can I help you with? For example: \"what devices do I have?\""


def clean_text(text: Any, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The customer's text as language understanding may see it.

    Non-strings become ``""``; control and bidi-override characters are dropped (newlines and tabs become
    spaces between lines), whitespace runs collapse, and the result is cut to at most ``max_chars``
    characters, at the last space when there is one in the final fifth.
    """
    if not isinstance(text, str):
        return ""
    kept = []
    for ch in text[: max_chars * 4]:  # never scan megabytes for a result of a thousand characters
        if ch == "\n":
            kept.append(ch)
        elif ch in _BIDI_CONTROLS:
            continue
        elif unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") or (
            unicodedata.category(ch) == "Cf" and ch not in _KEEP_FORMAT
        ):
            kept.append(" " if ch == "\t" or ch == "\r" else "")
        else:
            kept.append(ch)
    cleaned = _NEWLINES.sub("\n", _SPACES.sub(" ", "".join(kept))).strip()
    if len(cleaned) > max_chars:
        cut = cleaned[:max_chars]
        space = cut.rfind(" ")
        cleaned = (cut[:space] if space > max_chars * 0.8 else cut).rstrip()
    return cleaned


def offered_payloads(events: list[Any]) -> set[str]:
    """Payloads of the buttons the bot showed since the customer's last message."""
    payloads: set[str] = set()
    for event in reversed(events):
        if isinstance(event, UserUttered):
            break
        if isinstance(event, BotUttered):
            for button in (event.data or {}).get("buttons") or []:
                if isinstance(button, dict) and isinstance(button.get("payload"), str):
                    payloads.add(button["payload"].strip())
            for reply in (event.data or {}).get("quick_replies") or []:
                if isinstance(reply, dict) and isinstance(reply.get("payload"), str):
                    payloads.add(reply["payload"].strip())
    return payloads


_CLIENT_SALT = (os.environ.get("SECRET_KEY") or secrets.token_hex(16)).encode()


def client_digest(address: str) -> str:
    """A keyed hash of a client address (16 hex characters): countable, not the address itself."""
    return hmac.new(_CLIENT_SALT, address.encode(), hashlib.sha256).hexdigest()[:16]


def client_address(peer: str | None, forwarded_for: str | None = None) -> str | None:
    """The customer's address: the connection's peer, or, when that peer is one of our own proxies
    (``CHAT_TRUSTED_PROXIES``, default the loopback HAProxy), the address that proxy appended last to
    ``X-Forwarded-For``. Anything a client put earlier in that header is ignored."""
    trusted = {p.strip() for p in (os.environ.get("CHAT_TRUSTED_PROXIES") or "127.0.0.1,::1").split(",") if p.strip()}
    if peer in trusted and forwarded_for:
        last = forwarded_for.split(",")[-1].strip()
        return last or peer
    return peer


@dataclass(frozen=True)
class GuardSettings:
    """Limits from the environment (documented in the README, Security)."""

    max_chars: int = DEFAULT_MAX_CHARS
    per_conversation: str = "20/minute"
    per_client: str = "60/minute"
    redis_url: str = ""
    redis_password: str = ""  # never in the URL, as for Rasa's lock store
    redis_key_prefix: str = DEFAULT_KEY_PREFIX  # this deployment's keys, if several share one Redis database

    @classmethod
    def from_env(cls) -> GuardSettings:
        return cls(
            max_chars=int(os.environ.get("CHAT_MAX_CHARS") or DEFAULT_MAX_CHARS),
            per_conversation=os.environ.get("CHAT_RATE_PER_CONVERSATION") or cls.per_conversation,
            per_client=os.environ.get("CHAT_RATE_PER_CLIENT") or cls.per_client,
            redis_url=os.environ.get("REDIS_URL", ""),
            redis_password=os.environ.get("REDIS_PASSWORD", ""),
            redis_key_prefix=key_prefix(os.environ.get("REDIS_KEY_PREFIX")),
        )


class _Limiter:
    """``limits`` rate limiting: process memory, or Redis shared by every Rasa replica."""

    def __init__(self, settings: GuardSettings) -> None:
        self._sync: FixedWindowRateLimiter | None = None
        self._async: MovingWindowRateLimiter | None = None
        if settings.redis_url:
            # A refused REDIS_PASSWORD would leave the chat limits off (an unreachable Redis admits every
            # message): the Rasa server refuses to start instead (crm_store.redis_auth).
            verify_redis_password(settings.redis_url, settings.redis_password)
            # redis-py 4.6 (pinned by Rasa) is too old for limits' asyncio Redis bridge: the synchronous
            # client runs in a worker thread so the event loop never waits on the network.
            options = {"password": settings.redis_password} if settings.redis_password else {}
            self._sync = FixedWindowRateLimiter(storage_from_string(
                settings.redis_url, key_prefix=f"{settings.redis_key_prefix}-chat-guard", **options))
        else:
            self._async = MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, item: RateLimitItem, *keys: str) -> bool:
        if self._async is not None:
            return await self._async.hit(item, *keys)
        assert self._sync is not None
        try:
            return await asyncio.to_thread(self._sync.hit, item, *keys)
        except Exception as exc:  # Redis away: fail open for customers, and say so
            logger.warning("chat rate limiter unavailable (%s); message admitted", type(exc).__name__)
            return True


class InputGuard:
    """One per Rasa process; channels call ``admit`` for every message (see the module docstring)."""

    BINDINGS_CACHED = 50_000

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings.from_env()
        self.app: Any = None  # the Sanic app, for its agent's tracker store (set when the server starts)
        self.counts: Counter[str] = Counter()
        self._limiter = _Limiter(self.settings)
        self._per_conversation = parse(self.settings.per_conversation)
        self._per_client = parse(self.settings.per_client)
        # A conversation's channel never changes once known: remember it instead of reloading the tracker.
        self._bindings: OrderedDict[str, str] = OrderedDict()

    def _store(self) -> Any:
        agent = getattr(getattr(self.app, "ctx", None), "agent", None)
        return getattr(agent, "tracker_store", None)

    async def _tracker(self, sender_id: str) -> Any:
        store = self._store()
        return await store.retrieve(sender_id) if store is not None else None

    async def _bound_channel(self, sender_id: str) -> Any:
        """The conversation's channel (str), None when it has none yet, or ``UNKNOWN`` when the read failed."""
        if sender_id in self._bindings:
            return self._bindings[sender_id]
        store = self._store()
        if store is None:
            return None
        try:
            # A few rows where the store is SQL (both topologies), not the whole tracker for one field.
            channel = await latest_input_channel(store, sender_id)
        except Exception as exc:  # noqa: BLE001 - database away or a damaged row
            # Admitted, as after Rasa's fail-safe tracker store's failed read, but bound to nothing meanwhile:
            # remembering this message's channel would refuse the customer's own channel once the database is back.
            self.counts["binding_unavailable"] += 1
            logger.warning("chat channel binding unavailable (%s); message admitted", type(exc).__name__)
            return UNKNOWN
        if channel is NOT_SQL:  # every session, as latest_input_channel reads them
            tracker = await store.retrieve_full_tracker(sender_id)
            channel = tracker.get_latest_input_channel() if tracker is not None else None
        if channel:
            self._remember(sender_id, channel)
        return channel

    def _remember(self, sender_id: str, channel: str) -> None:
        self._bindings[sender_id] = channel
        self._bindings.move_to_end(sender_id)
        while len(self._bindings) > self.BINDINGS_CACHED:
            self._bindings.popitem(last=False)

    def refuse(self, kind: str, channel: str) -> str:
        """Counts and logs one refused input of ``kind`` (no content); returns ``kind``."""
        self.counts[kind] += 1
        logger.warning("chat input refused on %s: %s (total %d)", channel, kind, self.counts[kind])
        return kind

    async def admit(self, message: UserMessage, channel: str, client: str | None = None) -> str | None:
        """Cleans ``message.text`` in place; returns a reply for the customer when the message is refused.

        Refused (not processed): rate limit exceeded, conversation bound to another channel, nothing left
        after cleaning. A typed intent payload the bot did not offer is not refused: its leading slashes go
        and it is understood as text.
        """
        sender = str(message.sender_id or "")
        if client and not await self._limiter.hit(self._per_client, "client", client):
            self.refuse("rate_limited_client", channel)
            return REPLY_RATE_LIMITED
        if sender and not await self._limiter.hit(self._per_conversation, "conversation", channel, sender):
            self.refuse("rate_limited_conversation", channel)
            return REPLY_RATE_LIMITED
        bound = await self._bound_channel(sender) if sender else None
        if bound is not None and bound is not UNKNOWN and bound != channel:
            self.refuse("other_channel", channel)
            return REPLY_OTHER_CHANNEL
        raw = message.text if isinstance(message.text, str) else ""
        text = clean_text(raw, self.settings.max_chars)
        if len(raw) > self.settings.max_chars:
            self.counts["cut_to_max_chars"] += 1
            logger.info("chat message of %d characters cut to %d on %s", len(raw), len(text), channel)
        if text.startswith("/") and text not in OPEN_PAYLOADS:
            tracker = await self._tracker(sender) if sender else None
            if tracker is None or text not in offered_payloads(list(tracker.events)):
                self.counts["typed_intent_as_text"] += 1
                logger.info("typed intent payload on %s read as text", channel)
                text = text.lstrip("/").strip()
        if not text:
            self.refuse("empty", channel)
            return REPLY_EMPTY
        message.text = text
        if client:
            # Server-set, never client-claimed: the actions count verification failures per client with it.
            message.metadata = {**(message.metadata or {}), "client": client_digest(client)}
        if sender and bound is not UNKNOWN:
            self._remember(sender, channel)
        return None

    def wrap(self, on_new_message: OnNewMessage, channel: str,
             client_of: Callable[[UserMessage], str | None] | None = None) -> OnNewMessage:
        """``on_new_message`` behind the guard: refused messages get a reply and never reach Rasa."""

        async def guarded(message: UserMessage) -> Any:
            reply = await self.admit(message, channel, client_of(message) if client_of else None)
            if reply is None:
                return await on_new_message(message)
            await message.output_channel.send_text_message(message.sender_id, reply)
            return None

        return guarded

    def attach(self, blueprint: Any) -> None:
        """Keeps a reference to the server's app (for its tracker store) once it starts."""

        async def capture(app: Any, _loop: Any) -> None:
            self.app = app

        blueprint.listener("before_server_start")(capture)


_GUARD: InputGuard | None = None


def get_guard() -> InputGuard:
    """The process's guard (one per Rasa server, shared by its channels)."""
    global _GUARD
    if _GUARD is None:
        _GUARD = InputGuard()
    return _GUARD
