"""Kept-alive connections from a Rasa server to its endpoints (the action server, above all).

Why: Rasa 3.6's ``EndpointConfig.request`` opens a new aiohttp ``ClientSession``, and so a new TCP connection, for
every request, and closes it afterwards. A product turn calls the action server once or twice. Under chat load
Rasa's event loop is busy, and each step of a request (connecting, then the response) waits for the loop's next
round behind the other conversations' work. Timed inside the Rasa server at 20 concurrent customers
(bench/bench_chat.py, 2026-12-01), an action server call took 136 ms at the median, against 3-26 ms inside the action
server. Over one connection kept open per endpoint, the connect step is gone: 70 ms.

What changes: ``EndpointConfig.session()`` hands out one session per endpoint configuration and event loop, with
its connection pool kept, instead of a new one; ``request`` is Rasa's own and uses it as before, so the headers,
token, timeout (``DEFAULT_REQUEST_TIMEOUT``, whole request) and error handling are Rasa's. Requests are not retried.
No cookie is kept between requests (as with a session per request), so nothing of one conversation's call rides
along with another's, and no load-balancer cookie pins every call to one action server.

Idle connections are closed by the client after ``KEEPALIVE_SECONDS``, far inside the action server's keep-alive
(``actions.__main__.KEEP_ALIVE_SECONDS``, 60 s) and HAProxy's (``timeout http-request``, 30 s, in the production
topology), so a request does not go out on a connection the server is closing even when Rasa's loop is seconds
late. A connection whose server died (kill -9, a restart) is closed by the kernel and dropped from the pool; the
next request opens a new one. An endpoint with a ``cafile`` gets a new TLS context per request from Rasa, and
aiohttp pools connections per context, so such an endpoint gains nothing (none is configured here).

The kept sessions are closed when the Rasa server stops (``rasa.core.run.close_resources``, Rasa's after-stop
listener), provided this module was applied before Rasa registered it: ``scripts/rasa_server.py`` imports ``nlu``
first for that reason.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

KEEPALIVE_SECONDS = 2.0
_kept: list[tuple[asyncio.AbstractEventLoop, Any]] = []  # (its loop, aiohttp.ClientSession), closed at the stop


class _Borrowed:
    """``async with endpoint.session() as session`` without closing the kept session at the end."""

    def __init__(self, session: Any) -> None:
        self._session = session

    async def __aenter__(self) -> Any:
        return self._session

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None


async def close_kept_sessions() -> int:
    """Closes the kept sessions made on the running event loop; returns how many it closed."""
    loop = asyncio.get_running_loop()
    mine = [session for kept_loop, session in _kept if kept_loop is loop and not session.closed]
    for session in mine:
        await session.close()
    _kept[:] = [(kept_loop, session) for kept_loop, session in _kept if not session.closed]
    return len(mine)


def apply() -> None:
    """Makes ``EndpointConfig.session()`` hand out the endpoint's kept session for the running event loop, and
    Rasa's after-stop listener close the kept sessions."""
    import aiohttp
    import rasa.core.run
    from rasa.utils.endpoints import DEFAULT_REQUEST_TIMEOUT, EndpointConfig

    def session(self: EndpointConfig) -> _Borrowed:
        loop = asyncio.get_running_loop()
        kept_loop, kept = self.__dict__.get("_kept_session", (None, None))
        # A session belongs to the loop it was made on (a test's asyncio.run makes a new loop each time).
        if kept is None or kept.closed or kept_loop is not loop:
            auth = aiohttp.BasicAuth(self.basic_auth["username"], self.basic_auth["password"]) if self.basic_auth else None
            kept = aiohttp.ClientSession(
                headers=self.headers, auth=auth, timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT),
                cookie_jar=aiohttp.DummyCookieJar(),
                # limit=0: as many connections at once as Rasa opened before (one per request in flight).
                connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_SECONDS, limit=0))
            self.__dict__["_kept_session"] = (loop, kept)
            _kept.append((loop, kept))
        return _Borrowed(kept)

    rasa_close_resources = rasa.core.run.close_resources

    async def close_resources(app: Any, loop: Any) -> None:
        try:
            await rasa_close_resources(app, loop)
        finally:
            await close_kept_sessions()

    EndpointConfig.session = session  # type: ignore[method-assign]
    rasa.core.run.close_resources = close_resources
