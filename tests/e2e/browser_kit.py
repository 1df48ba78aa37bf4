"""Shared helpers of the browser tests: Debian's Chromium, console-error capture, axe-core, request logs."""

from __future__ import annotations

import pathlib
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.conftest import ARTIFACTS, ROOT

CHROMIUM = "/usr/bin/chromium"
AXE = "/static/vendor/axe.min.js"  # vendored axe-core, loaded from the product's own origin (CSP: script-src 'self')
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
DESKTOP = {"width": 1280, "height": 800}
WIDE = {"width": 1920, "height": 1080}
TABLET = {"width": 820, "height": 1180}
PHONE = {"width": 390, "height": 844}


def launch(pw: Any) -> Any:
    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is missing: `make test` installs it (scripts/setup.sh --browser)")
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)


@dataclass
class Watched:
    """A page with its console errors, uncaught exceptions and requests recorded."""

    page: Any
    errors: list[str] = field(default_factory=list)
    requests: list[tuple[float, str, str]] = field(default_factory=list)  # (monotonic time, method, url)
    frames: list[str] = field(default_factory=list)  # socket.io frames, sent (>) and received (<), shortened

    def wait_greeting(self, timeout_ms: int = 60_000) -> Any:
        """Waits for the chat page's first bot message; on a timeout the failure shows the socket.io frames,
        console errors and requests of the page, so a CI failure says where the greeting stopped."""
        first = self.page.locator("li.msg.bot").first
        try:
            first.wait_for(timeout=timeout_ms)
        except Exception as exc:
            trail = "\n".join(self.frames[-40:] + self.errors + [f"{m} {u}" for _t, m, u in self.requests[-20:]])
            raise AssertionError(f"no greeting within {timeout_ms} ms; the page's trail:\n{trail}") from exc
        return first

    def assert_clean(self, expected: tuple[str, ...] = ()) -> None:
        """No console error but the ``expected`` ones (e.g. the browser's log line of a refusal a test provoked)."""
        unexpected = [e for e in self.errors if not any(x in e for x in expected)]
        assert not unexpected, "console errors: " + "\n".join(unexpected)


def watch(page: Any) -> Watched:
    import time

    w = Watched(page)
    page.on("console", lambda m: w.errors.append(f"{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: w.errors.append(f"uncaught: {e}"))
    page.on("request", lambda r: w.requests.append((time.monotonic(), r.method, r.url)))
    page.on("websocket", lambda ws: _frames(w, ws))
    return w


def _frames(w: Watched, ws: Any) -> None:
    import time

    w.requests.append((time.monotonic(), "WS", ws.url))
    ws.on("framesent", lambda payload: w.frames.append(f"> {str(payload)[:160]}"))
    ws.on("framereceived", lambda payload: w.frames.append(f"< {str(payload)[:160]}"))
    ws.on("close", lambda _ws: w.frames.append("closed"))


def axe(page: Any, name: str) -> list[dict[str, Any]]:
    """Runs axe-core on the page; saves the report under test-artifacts; returns serious or critical violations."""
    import json

    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(url=AXE)
    result = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps(result["violations"], indent=1))
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def shot(page: Any, name: str) -> pathlib.Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def png(width: int = 4, height: int = 3) -> bytes:
    """A real PNG image (red pixels), written here so no binary fixture is needed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def vendored_ok() -> bool:
    return (ROOT / "web_service" / "static" / "vendor" / "axe.min.js").exists()
