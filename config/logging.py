"""A request id on every log line, and the two line formats (LOG_FORMAT).

The JSON API (config/hotpath/router.py) and Django's views (RequestIdMiddleware) set the
id of the request being served in a context variable; RequestIdFilter puts it
on each log record, so every line carries it (`request_id=…` in text, `-`
outside a request; a `request_id` field in JSON, absent outside a request).
The id is the caller's X-Request-Id when it is a short ASCII value, else a
new one, and is sent back in the response.
"""

from __future__ import annotations

import contextvars
import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def new_request_id(given: bytes | str | None) -> str:
    if isinstance(given, bytes):
        given = given.decode("latin-1")
    # Printable ASCII only: it is echoed in a response header and in logs.
    if given and len(given) <= 64 and given.isascii() and given.isprintable():
        return given
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class RequestIdMiddleware:
    """For Django's own pages (admin, dashboard, login). Under ASGI the id is
    already set (the router sets it before handing the request to Django, so
    that Django's own log line about a 4xx/5xx answer, written after the
    middleware returned, has it too); it is made here otherwise."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request):
        current = request_id.get()
        token = request_id.set(
            current if current != "-" else new_request_id(request.headers.get("X-Request-Id"))
        )
        try:
            response = self.get_response(request)
            response["X-Request-Id"] = request_id.get()
            return response
        finally:
            request_id.reset(token)


# Attributes every LogRecord has: anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
    "color_message",  # uvicorn's coloured duplicate of the message
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message,
    request_id (inside a request), the record's `extra` fields, and the
    traceback as `exception` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            line["request_id"] = request_id
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra may be any object (Django passes the request).
        return json.dumps(line, default=str)
