"""The JSON endpoints that stay Django views (GET /v1/usage, which streams
CSV from a sync query) answer like the router's: same error shape, same
statuses for a bad key, a wrong method or an unreachable database."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.views.decorators.csrf import csrf_exempt

from config.hotpath.errors import ApiError, invalid

logger = logging.getLogger(__name__)


class ApiRequest(HttpRequest):
    api_key: Any  # what the authenticator returned


def _error(exc: ApiError) -> JsonResponse:
    response = JsonResponse(exc.body(), status=exc.status)
    response["Cache-Control"] = "no-store"
    return response


def django_api_view(
    *, authenticate: Callable[[str | None], Any], methods: tuple[str, ...] = ("GET",)
) -> Callable[[Callable[[ApiRequest], HttpResponse]], Callable[[HttpRequest], HttpResponse]]:
    """A decorator for the JSON endpoints that stay Django views: `methods`
    only (GET by default), with an API key (Authorization: Bearer) that `authenticate` turns into
    `request.api_key`, errors in the API's one shape, as the router answers.

    No CSRF check: the API authenticates by key, never by the session cookie."""

    def decorator(
        view: Callable[[ApiRequest], HttpResponse],
    ) -> Callable[[HttpRequest], HttpResponse]:
        return _api_view(view, authenticate, methods)

    return decorator


def _api_view(
    view: Callable[[ApiRequest], HttpResponse],
    authenticate: Callable[[str | None], Any],
    methods: tuple[str, ...],
) -> Callable[[HttpRequest], HttpResponse]:
    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, **params: str) -> HttpResponse:
        try:
            if request.method not in methods:
                raise ApiError(405, "method_not_allowed", "Method not allowed.")
            request.api_key = authenticate(request.headers.get("Authorization"))  # type: ignore[attr-defined]
            return view(request, **params)  # type: ignore[arg-type, call-arg]
        except ApiError as exc:
            return _error(exc)
        except TooManyFieldsSent:
            return _error(
                ApiError(
                    400,
                    "malformed_query",
                    f"The query string has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} "
                    "parameters.",
                )
            )
        except OperationalError:
            logger.exception("%s: database error", request.path)
            return _error(
                ApiError(503, "store_unavailable", "The database did not answer; try again.")
            )

    return wrapper


# A '+' of an offset that was not URL-encoded arrives as a space.
_UNENCODED_PLUS = re.compile(r" (\d\d(:?\d\d)?)$")


def moment_param(params: QueryDict, name: str) -> datetime | None:
    """A query parameter holding an ISO-8601 date-time (UTC when it has no
    offset), or None when absent; 422 naming it when it is not one."""
    value = params.get(name, "").strip()
    if not value:
        return None
    if "T" in value:
        value = _UNENCODED_PLUS.sub(r"+\1", value)
    message = f"'{name}' must be an ISO-8601 date-time, e.g. 2026-11-22T10:00:00Z."
    if not value.isprintable():
        raise invalid(name, message)  # Python 3.11's fromisoformat stops at a NUL
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise invalid(name, message) from None
