"""nlu.kept_alive_endpoints: Rasa's endpoint requests (the action server calls) reuse kept-alive connections, and a
connection whose server went away is not reused. Real aiohttp servers on loopback; Rasa's own request code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

import nlu  # noqa: F401 - importing the package applies the Rasa runtime changes, as loading a model does
from nlu import kept_alive_endpoints
from scripts.topology import free_port


class ActionServerStandIn:
    """Answers POST /webhook with the events it was sent; records each request's connection (client port)."""

    def __init__(self) -> None:
        self.peers: list[int] = []
        self.authorizations: list[str | None] = []
        self.tokens: list[str | None] = []

    async def webhook(self, request: web.Request) -> web.Response:
        self.peers.append(request.transport.get_extra_info("peername")[1])
        self.authorizations.append(request.headers.get("Authorization"))
        self.tokens.append(request.query.get("token"))
        body = await request.json()
        if body.get("fail"):
            return web.json_response({"error": "refused"}, status=500)
        return web.json_response({"events": body.get("events", []), "responses": []})

    async def cookie(self, request: web.Request) -> web.Response:
        """Sets a cookie (as a load balancer's stickiness would) and reports the cookies it was sent."""
        self.peers.append(request.transport.get_extra_info("peername")[1])
        answer = web.json_response({"events": [], "cookie": request.headers.get("Cookie")})
        answer.set_cookie("sticky", "actions-1")
        return answer

    @asynccontextmanager
    async def serving(self, port: int) -> AsyncIterator[None]:
        app = web.Application()
        app.router.add_post("/cookie", self.cookie)
        app.router.add_post("/webhook", self.webhook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield
        finally:
            await runner.cleanup()  # closes its connections, as a dying server's kernel does
            await kept_alive_endpoints.close_kept_sessions()


def endpoint(port: int):
    from rasa.utils.endpoints import EndpointConfig

    return EndpointConfig(url=f"http://127.0.0.1:{port}/webhook", headers={"Authorization": "Bearer rasa-to-actions"},
                          token="t0k")


def test_the_rasa_process_uses_kept_alive_endpoint_sessions():
    from rasa.utils.endpoints import EndpointConfig

    assert EndpointConfig.session.__module__ == kept_alive_endpoints.__name__


def test_action_calls_share_one_connection_with_rasas_headers_and_token():
    server, port = ActionServerStandIn(), free_port()
    action_endpoint = endpoint(port)

    async def calls() -> list:
        async with server.serving(port):
            return [await action_endpoint.request(json={"events": [{"event": "slot", "n": i}]}, method="post")
                    for i in range(4)]

    answers = asyncio.run(calls())
    assert [a["events"][0]["n"] for a in answers] == [0, 1, 2, 3]  # Rasa's request returns the parsed JSON
    assert len(server.peers) == 4 and len(set(server.peers)) == 1, server.peers  # Rasa's own code: 4 connections
    assert set(server.authorizations) == {"Bearer rasa-to-actions"} and set(server.tokens) == {"t0k"}


def test_an_error_answer_raises_as_in_rasa_and_the_connection_stays_usable():
    from rasa.core.actions.action import ClientResponseError

    server, port = ActionServerStandIn(), free_port()
    action_endpoint = endpoint(port)

    async def calls() -> tuple:
        async with server.serving(port):
            with pytest.raises(ClientResponseError) as refused:
                await action_endpoint.request(json={"fail": True}, method="post")
            after = await action_endpoint.request(json={"events": []}, method="post")
            return refused.value, after

    refused, after = asyncio.run(calls())
    assert refused.status == 500 and b"refused" in refused.text
    assert after == {"events": [], "responses": []}


def test_a_server_that_went_away_and_came_back_is_reached_on_a_new_connection():
    server, port = ActionServerStandIn(), free_port()
    action_endpoint = endpoint(port)

    async def calls() -> list:
        answers = []
        async with server.serving(port):
            answers.append(await action_endpoint.request(json={"events": []}, method="post"))
        # The server is gone (its kept connection closed from its side); a request now fails as in Rasa.
        from aiohttp import ClientConnectionError

        with pytest.raises(ClientConnectionError):
            await action_endpoint.request(json={"events": []}, method="post")
        async with server.serving(port):  # restarted on the same port
            answers.append(await action_endpoint.request(json={"events": []}, method="post"))
        return answers

    assert len(asyncio.run(calls())) == 2
    assert len(server.peers) == 2 and server.peers[0] != server.peers[1]


def test_each_event_loop_gets_its_own_session():
    server, port = ActionServerStandIn(), free_port()
    action_endpoint = endpoint(port)

    async def call() -> dict:
        async with server.serving(port):
            return await action_endpoint.request(json={"events": []}, method="post")

    # A second loop (a test's asyncio.run; Rasa's server has one) must not reuse a session bound to the first.
    assert asyncio.run(call()) == asyncio.run(call()) == {"events": [], "responses": []}


def test_idle_connections_close_before_the_action_servers_keep_alive_ends():
    # The action server is rasa-sdk's Sanic: its default keep-alive is 5 s (HAProxy's, in production, 30 s). The
    # client closing first means a request never goes out on a connection the server is closing.
    from sanic.config import DEFAULT_CONFIG

    assert 0 < kept_alive_endpoints.KEEPALIVE_SECONDS < DEFAULT_CONFIG["KEEP_ALIVE_TIMEOUT"]


def test_an_idle_connection_is_closed_by_rasa_after_its_keepalive(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(kept_alive_endpoints, "KEEPALIVE_SECONDS", 0.2)
    server, port = ActionServerStandIn(), free_port()
    action_endpoint = endpoint(port)

    async def calls() -> None:
        async with server.serving(port):
            await action_endpoint.request(json={"events": []}, method="post")
            await action_endpoint.request(json={"events": []}, method="post")
            await asyncio.sleep(0.5)  # idle for longer than the keep-alive: the time passing is what is tested
            await action_endpoint.request(json={"events": []}, method="post")

    asyncio.run(calls())
    assert server.peers[0] == server.peers[1] != server.peers[2], server.peers


def test_no_cookie_rides_from_one_call_to_the_next():
    server, port = ActionServerStandIn(), free_port()
    from rasa.utils.endpoints import EndpointConfig

    action_endpoint = EndpointConfig(url=f"http://localhost:{port}/cookie")  # a host name: cookies would be kept

    async def calls() -> list:
        async with server.serving(port):
            return [await action_endpoint.request(json={}, method="post") for _ in range(2)]

    first, second = asyncio.run(calls())
    assert first["cookie"] is None and second["cookie"] is None
    assert len(set(server.peers)) == 1  # the same kept connection, and still no cookie


def test_the_kept_sessions_are_closed_when_the_rasa_server_stops():
    import types

    import rasa.core.run

    server, port = ActionServerStandIn(), free_port()
    action_endpoint = endpoint(port)

    async def call_then_stop() -> tuple:
        async with server.serving(port):
            await action_endpoint.request(json={"events": []}, method="post")
            kept = action_endpoint.__dict__["_kept_session"][1]
            open_before = not kept.closed
            # Rasa's after-stop listener, as its server calls it (no agent loaded here).
            await rasa.core.run.close_resources(types.SimpleNamespace(ctx=types.SimpleNamespace()), None)
            return open_before, kept.closed

    assert asyncio.run(call_then_stop()) == (True, True)
