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

Idle connections are closed by the client after ``KEEPALIVE_SECONDS``, before any server on the path closes them
(the action server's Sanic after 5 s, HAProxy's ``timeout http-request`` of 30 s in the production topology), so a
request is never sent on a connection the server is closing. A connection whose server died (kill -9, a restart) is
closed by the kernel and dropped from the pool; the next request opens a new one.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

KEEPALIVE_SECONDS = 2.0


class _Borrowed:
    """``async with endpoint.session() as session`` without closing the kept session at the end."""

    def __init__(self, session: Any) -> None:
        self._session = session

    async def __aenter__(self) -> Any:
        return self._session

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None


def apply() -> None:
    """Makes ``EndpointConfig.session()`` hand out the endpoint's kept session for the running event loop."""
    import aiohttp
    from rasa.utils.endpoints import DEFAULT_REQUEST_TIMEOUT, EndpointConfig

    def session(self: EndpointConfig) -> _Borrowed:
        loop = asyncio.get_running_loop()
        kept_loop, kept = self.__dict__.get("_kept_session", (None, None))
        # A session belongs to the loop it was made on (a test's asyncio.run makes a new loop each time).
        if kept is None or kept.closed or kept_loop is not loop:
            auth = aiohttp.BasicAuth(self.basic_auth["username"], self.basic_auth["password"]) if self.basic_auth else None
            kept = aiohttp.ClientSession(
                headers=self.headers, auth=auth, timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT),
                # limit=0: as many connections at once as Rasa opened before (one per request in flight).
                connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_SECONDS, limit=0))
            self.__dict__["_kept_session"] = (loop, kept)
        return _Borrowed(kept)

    EndpointConfig.session = session  # type: ignore[method-assign]
