"""The pieces Rasa 3.6's socket.io channel emits for one bot message, computed from the bot event as the tracker store
keeps it, so the web chat can show a piece its socket missed (``POST /chat/missed``) and match it, by (``ts``,
``part``), with the pieces the socket brought (``rasa_channels.socketio.StampedOutput`` numbers those).

Rasa's ``OutputChannel.send_response`` with ``SocketIOOutput``: the text cut at blank lines after ``str.strip()``
(one piece, maybe empty, when there are buttons but no text), ``quick_replies`` before ``buttons`` on the last text
piece; a custom payload (emitted on its own, not numbered: the page shows nothing for it); then the image, the
attachment (dropped when it is the image, as ``BotUttered.message()`` does) and one piece per element. Pure Python:
imported by the web service and, in the tests, next to Rasa's own channel to check that both cut alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def web_chat_pieces(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{"ts", "part", "text", "buttons", "image", "attachment", "agent_name"}, ...]`` for one stored bot event
    (``{"event": "bot", "timestamp", "text", "data", "metadata"}``): ``ts`` Unix seconds as stored, ``part`` 0, 1 ...
    in emit order, ``buttons`` ``[{"title", "payload"}]``, ``agent_name`` the relaying agent's name for an agent's
    line (``actions.agent_relay``), else None. [] for an event without a numeric timestamp or anything to show."""
    ts = event.get("timestamp")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return []
    data = event.get("data") if isinstance(event.get("data"), Mapping) else {}
    metadata = event.get("metadata") if isinstance(event.get("metadata"), Mapping) else {}
    agent_name = metadata.get("agent_name") if isinstance(metadata.get("agent_name"), str) else None
    text = event.get("text") if isinstance(event.get("text"), str) else ""
    choices = [{"title": str(b.get("title", "")), "payload": str(b.get("payload", ""))}
               for b in (data.get("quick_replies") or data.get("buttons") or []) if isinstance(b, Mapping)]
    pieces: list[dict[str, Any]] = []

    def add(text: str = "", buttons: list[dict[str, str]] | None = None, image: Any = None,
            attachment: Any = None) -> None:
        pieces.append({"ts": ts, "part": len(pieces), "text": text, "buttons": buttons or [],
                       "image": image if isinstance(image, str) else None, "attachment": attachment,
                       "agent_name": agent_name})

    if choices or text:
        parts = text.strip().split("\n\n")
        for i, part in enumerate(parts):
            add(part, choices if i == len(parts) - 1 else None)
    image, attachment = data.get("image"), data.get("attachment")
    if image:
        add(image=image)
    if attachment and attachment != image:
        add(attachment=attachment)
    for element in data.get("elements") or []:
        add(attachment={"type": "template", "payload": {"template_type": "generic", "elements": element}})
    return pieces
