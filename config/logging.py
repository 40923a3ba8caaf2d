"""A request id on every log line.

The JSON API (budgets.api) and Django's views (RequestIdMiddleware) set the
id of the request being served in a context variable; RequestIdFilter puts it
on each log record, so the formatter prints `request_id=…` on every line
(`-` outside a request). The id is the caller's X-Request-Id when it is a
short ASCII value, else a new one, and is sent back in the response.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Callable

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
    """For Django's own pages (admin, dashboard, login)."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request):
        token = request_id.set(new_request_id(request.headers.get("X-Request-Id")))
        try:
            response = self.get_response(request)
            response["X-Request-Id"] = request_id.get()
            return response
        finally:
            request_id.reset(token)
