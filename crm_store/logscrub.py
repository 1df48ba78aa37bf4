"""Keeps personal data out of every log line: e-mail addresses, phone numbers, order numbers and device
serials are replaced before any handler formats the record.

Installed as the logging *record factory* (``install()``), so it covers every logger and handler of the
process, including those configured later (``basicConfig``, uvicorn's, Rasa's). Logs are append-only
files the erasure cannot rewrite, so the policy is that they never hold such data in the first place;
names cannot be recognised by a pattern, so code never logs them (log ids instead). URLs carry them
percent-encoded (``anna%40example.com``) and their query strings carry whatever was searched for, so access
log lines lose their query string and text is matched decoded as well.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

PATTERNS = (
    # The local part as RFC 5322 allows it unquoted (but & / = ?, which join it to a URL's path and query), so
    # that no part of o'neil@… is left beside the mask.
    (re.compile(r"[A-Za-z0-9][A-Za-z0-9.!#$%'*+^_`{|}~-]*@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "<email>"),
    (re.compile(r"\bORD-\d{4}-\d{4,}\b", re.IGNORECASE), "<order>"),
    # Device serials: model code (letters and digits) - digits, e.g. WM80-23000102, CL01-000004.
    (re.compile(r"\b[A-Z]{2,4}\d{2}-\d{6,}\b", re.IGNORECASE), "<serial>"),
    # Phone numbers: a + or 0 lead and at least 7 more digits, spaces, dots, dashes or brackets between.
    (re.compile(r"(?<![\w.])(?:\+|00|0)\d[\d ().-]{6,}\d(?![\w.])"), "<phone>"),
)


def _replace(text: str) -> str:
    for pattern, placeholder in PATTERNS:
        text = pattern.sub(placeholder, text)
    return text


def scrub(text: str) -> str:
    """``text`` with e-mail addresses, order numbers, serials and phone numbers replaced by placeholders; text
    with percent-escapes (``%40``, ``%2B``) is matched decoded too, and then returned decoded and scrubbed."""
    clean = _replace(text)
    if "%" in clean:
        decoded = unquote(clean)
        scrubbed = _replace(decoded)
        if scrubbed != decoded:
            return scrubbed
    return clean


def without_query(path: str) -> str:
    """A request target without its query string (``/api/x?q=anna`` → ``/api/x?…``)."""
    base, mark, _ = path.partition("?")
    return base + ("?…" if mark else "")


_installed = False


def install() -> None:
    """Scrubs every record created in this process from now on (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):  # type: ignore[no-untyped-def]
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the handler's to report, as without us
            return record
        if isinstance(record.args, tuple) and record.name.startswith("uvicorn.access"):
            # (client, method, path with query, HTTP version, status); its formatter unpacks the arguments, so they
            # are cleaned in place. A query string may hold anything typed into a search box: dropped.
            record.args = tuple(scrub(without_query(a) if i == 2 else a) if isinstance(a, str) else a
                                for i, a in enumerate(record.args))
        else:
            clean = scrub(message)
            if clean != message:
                record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
