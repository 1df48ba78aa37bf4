"""A web-chat customer over Rasa's real socket.io channel, driven line by line (run with the rasa env's Python).

Usage: sio_customer.py URL SESSION_ID SESSION_KEY [websocket|polling] ("-" for no id or key: a new visitor).
The session the server confirms (``{"session_id", "session_key"}``) is printed first; each bot_uttered event
is printed as one JSON line (and a lost connection as a ``disconnect`` line). Each stdin line is a message. The app
environment has no socket.io client, Rasa's environment has one. The polling transport keeps cookies, as a
browser does, so a load balancer's sticky cookie keeps it on one Rasa server.
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import socketio


async def main(url: str, session_id: str, session_key: str, transport: str = "websocket") -> None:
    # unsafe=True: keep cookies from an IP address (127.0.0.1), as browsers do.
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    sio = socketio.AsyncClient(reconnection=False, http_session=http)
    confirmed = asyncio.Event()

    @sio.on("session_confirm")
    async def on_confirm(data):  # type: ignore[no-untyped-def]
        print(json.dumps({"event": "session_confirm", **(data if isinstance(data, dict) else {"session_id": data})}),
              flush=True)
        confirmed.set()

    @sio.on("disconnect")
    async def on_disconnect():  # type: ignore[no-untyped-def]
        print(json.dumps({"event": "disconnect"}), flush=True)

    @sio.on("bot_uttered")
    async def on_bot(data):  # type: ignore[no-untyped-def]
        print(json.dumps({"event": "bot_uttered", **data}), flush=True)

    await sio.connect(url, transports=[transport], socketio_path="socket.io")
    await sio.emit("session_request", {"session_id": None if session_id == "-" else session_id,
                                       "session_key": None if session_key == "-" else session_key})
    await asyncio.wait_for(confirmed.wait(), 30)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        await sio.emit("user_uttered", {"message": line.rstrip("\n")})
    await sio.disconnect()
    await http.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
