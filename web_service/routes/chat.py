"""The customer web chat page."""

from __future__ import annotations

import html
import pathlib
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse

from web_service.settings import WebSettings, get_settings

router = APIRouter(tags=["chat"])
PAGE = pathlib.Path(__file__).resolve().parent.parent / "static" / "chat.html"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
@router.get("/chat", response_class=HTMLResponse)
def chat_page(settings: Annotated[WebSettings, Depends(get_settings)]) -> HTMLResponse:
    """The chat widget page; it talks to Rasa's socket.io channel directly."""
    page = PAGE.read_text(encoding="utf-8").replace("{{SOCKET_URL}}", html.escape(settings.rasa_public_url, quote=True))
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})
