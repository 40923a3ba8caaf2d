"""Typed errors carrying what the server said.

Every error answer of Tollgate has one shape, ``{"error": {"code", "message", ...}}``;
each exception keeps the HTTP status, the code, the server's message and the whole
body, and the budget errors also expose their fields as attributes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from tollgate_client._parse import decimal_or_none, time_or_none


class TollgateError(Exception):
    """Base class: `status` and `code` are None when Tollgate gave no answer."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of the answer (empty when there was none)."""
        error = (self.body or {}).get("error")
        return error if isinstance(error, dict) else {}

    @property
    def field(self) -> str | None:
        """The request field the server named as at fault, if one."""
        field = self.error.get("field")
        return field if isinstance(field, str) else None


class InvalidRequest(TollgateError):
    """A 4xx other than a refusal: bad input, bad key, unknown reservation, ..."""


class Unavailable(TollgateError):
    """Tollgate did not answer in time, could not be reached, or answered 5xx
    (503 ``store_unavailable``: its database did not answer)."""


class BudgetExceeded(TollgateError):
    """402 ``budget_exceeded``: a hard budget cannot take the hold; nothing is held."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 402,
        code: str | None = "budget_exceeded",
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, body=body)
        error = self.error
        self.scope: str | None = error.get("scope")
        self.id: str | None = error.get("id")
        self.period: str | None = error.get("period")
        self.limit_usd: Decimal | None = decimal_or_none(error.get("limit_usd"))
        self.spent_usd: Decimal | None = decimal_or_none(error.get("spent_usd"))
        self.reserved_usd: Decimal | None = decimal_or_none(error.get("reserved_usd"))
        self.remaining_usd: Decimal | None = decimal_or_none(error.get("remaining_usd"))
        self.resets_at: datetime | None = time_or_none(error.get("resets_at"))


class RequestTooExpensive(TollgateError):
    """402 ``request_too_expensive``: the estimate is over a per-request cap."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 402,
        code: str | None = "request_too_expensive",
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, body=body)
        error = self.error
        self.scope: str | None = error.get("scope")
        self.id: str | None = error.get("id")
        self.max_request_usd: Decimal | None = decimal_or_none(error.get("max_request_usd"))
        self.amount_usd: Decimal | None = decimal_or_none(error.get("amount_usd"))


def error_from_response(status: int, body: Any, text: str) -> TollgateError:
    """The exception for a non-2xx answer."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), str) else None
        message = error.get("message") if isinstance(error.get("message"), str) else None
    else:
        code = message = None
    message = message or f"Tollgate answered {status}: {text[:200]!r}"
    json_body = body if isinstance(body, dict) else None
    if status >= 500:
        return Unavailable(message, status=status, code=code, body=json_body)
    if status == 402 and code == "request_too_expensive":
        return RequestTooExpensive(message, status=status, code=code, body=json_body)
    if status == 402:
        return BudgetExceeded(message, status=status, code=code, body=json_body)
    return InvalidRequest(message, status=status, code=code, body=json_body)
