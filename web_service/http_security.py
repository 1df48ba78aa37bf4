"""Security headers on every response and the API's CORS allow-list.

Pages run only the product's own scripts and styles (``script-src 'self'``, no inline code); the chat page
may also connect to Rasa's socket.io address. The console can't be framed; the chat page can be framed only
by the origins in ``CHAT_FRAME_ANCESTORS`` (the maker's site embedding the widget). Cross-origin API calls
are refused unless their origin is in ``CORS_ALLOW_ORIGINS`` (empty by default: the console is same-origin).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from web_service.settings import WebSettings

COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


def _socket_origins(rasa_public_url: str) -> str:
    parts = urlsplit(rasa_public_url)
    if not parts.scheme or not parts.netloc:
        return ""
    ws = "wss" if parts.scheme == "https" else "ws"
    return f"{parts.scheme}://{parts.netloc} {ws}://{parts.netloc}"


def content_security_policy(*, connect: str = "", frame_ancestors: str = "'none'") -> str:
    return "; ".join([
        "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data: blob:",
        f"connect-src 'self' {connect}".strip(), "object-src 'none'", "base-uri 'none'", "form-action 'self'",
        f"frame-ancestors {frame_ancestors}",
    ])


def install(app: FastAPI, settings: WebSettings) -> None:
    """Adds the headers middleware (and CORS when origins are configured) to ``app``."""
    chat_csp = content_security_policy(connect=_socket_origins(settings.rasa_public_url),
                                       frame_ancestors=settings.chat_frame_ancestors or "'self'")
    default_csp = content_security_policy()

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in COMMON.items():
            response.headers.setdefault(name, value)
        is_chat = request.url.path in ("/", "/chat")
        response.headers.setdefault("Content-Security-Policy", chat_csp if is_chat else default_csp)
        if not is_chat:
            response.headers.setdefault("X-Frame-Options", "DENY")
        if request.url.scheme == "https":
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    origins = [o.strip() for o in settings.cors_allow_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], allow_credentials=False, max_age=600)
