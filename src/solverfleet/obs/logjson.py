"""One JSON object per log line: ``ts``, ``level``, ``logger``, ``msg``, ``request_id``, extras.

The request id lives in a context variable, set per request by ``obs.web`` (threads and
greenlets each have their own context), so any log call made while serving a request carries
it without passing it around. Import-light on purpose: gunicorn's master loads this through
the logging config before the agent's worker patches with gevent.

Secrets are kept out by construction (nothing logs a key, a token or a query string); the
scrubber below is a second line of defence for a message that quotes a header or a URL.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "solverfleet_request_id", default=None
)
# What we accept from a client's X-Request-Id: bounded, and safe in a header or a log line.
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}").fullmatch


def new_request_id() -> str:
    return os.urandom(16).hex()


def accept_request_id(header: str | None) -> str:
    """The caller's request id when it is well-formed, else a fresh one."""
    if header and _VALID_ID(header):
        return header
    return new_request_id()


def current_request_id() -> str | None:
    return REQUEST_ID.get()


_SCRUB = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;]+"), r"\1 [redacted]"),
    (
        re.compile(r"(?i)\b(key|api_key|apikey|token|secret|password|passwd)=[^&\s\"',;]+"),
        r"\1=[redacted]",
    ),
    (re.compile(r"(?i)(://[^/:@\s]+):[^@/\s]+@"), r"\1:[redacted]@"),  # user:password@host
)


def scrub(text: str) -> str:
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": scrub(record.getMessage()),
        }
        request_id = record.__dict__.get("request_id") or REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in line and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exc"] = scrub(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, default=str, separators=(",", ":"))
