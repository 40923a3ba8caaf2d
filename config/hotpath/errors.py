"""The one error shape of the API (API.md): {"error": {"code", "message", "field"?}}."""

from __future__ import annotations

from typing import Any

JsonBody = dict[str, Any]


class ApiError(Exception):
    """An error answer in the shape of API.md."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.extra = (
            status,
            code,
            message,
            field,
            extra,
        )

    def body(self) -> JsonBody:
        error: JsonBody = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        error.update(self.extra)
        return {"error": error}


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_field", message, field=field)
