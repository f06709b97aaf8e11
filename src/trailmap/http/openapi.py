"""The one error shape as OpenAPI documents it: the model, and each status's usual meaning."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel

__all__ = ["ErrorBody", "ErrorDetailOut", "error_responses"]


class ErrorDetailOut(BaseModel):
    field: str | None
    message: str
    index: int | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    success: Literal[False]
    error: str
    code: str
    details: list[ErrorDetailOut]


_MEANINGS: Mapping[int, str] = {
    400: "Invalid input: each problem is listed in details, with its field",
    401: "Missing, malformed, revoked or expired API key",
    403: "The key's scope does not allow this",
    404: "Not found in this organization",
    409: "Conflicts with what is stored (the message says what)",
    413: "The body is over the size limit",
    415: "Not a content type this endpoint reads",
    429: "Over the plan's quota; retry after Retry-After seconds",
    503: "The database is not answering; retry after Retry-After seconds",
}


def error_responses(
    *statuses: int, saying: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each in the one error shape; `saying`
    words a status for this endpoint instead of its usual meaning."""
    words = {**_MEANINGS, **(saying or {})}
    return {status: {"model": ErrorBody, "description": words[status]} for status in statuses}
