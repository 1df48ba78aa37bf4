"""A web-chat customer over Rasa's real socket.io channel, driven line by line (run with the rasa env's Python).

Usage: sio_customer.py URL SESSION_ID. Each stdin line is a message to send; each bot_uttered event is
printed as one JSON line. The app environment has no socket.io client, Rasa's environment has one.
"""

from __future__ import annotations

import asyncio
import json
import sys

import socketio


async def main(url: str, session_id: str) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    confirmed = asyncio.Event()

    @sio.on("session_confirm")
    async def on_confirm(data):  # type: ignore[no-untyped-def]
        print(json.dumps({"event": "session_confirm", "session_id": data}), flush=True)
        confirmed.set()

    @sio.on("bot_uttered")
    async def on_bot(data):  # type: ignore[no-untyped-def]
        print(json.dumps({"event": "bot_uttered", **data}), flush=True)

    await sio.connect(url, transports=["websocket"], socketio_path="socket.io")
    await sio.emit("session_request", {"session_id": session_id})
    await asyncio.wait_for(confirmed.wait(), 30)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        await sio.emit("user_uttered", {"message": line.rstrip("\n"), "session_id": session_id})
    await sio.disconnect()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
