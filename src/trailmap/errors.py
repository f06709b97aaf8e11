"""The errors Trailmap's domain raises, each with the code and status of the one error shape;
faces render them, and nothing else decides which status a failure gets (docs/interfaces.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

__all__ = [
    "Conflict",
    "ErrorCode",
    "ErrorDetail",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RequestTimeout",
    "TrailmapError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
]

ErrorCode = Literal[
    "VALIDATION_ERROR",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "PAYLOAD_TOO_LARGE",
    "REQUEST_TIMEOUT",
    "UNSUPPORTED_MEDIA_TYPE",
    "QUOTA_EXCEEDED",
    "UNAVAILABLE",
    "INTERNAL_ERROR",
]


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One thing wrong with the input: which field, what to do, and in a batch which item."""

    field: str | None
    message: str
    index: int | None = None
    code: ErrorCode = "VALIDATION_ERROR"

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"field": self.field, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        if self.code != "VALIDATION_ERROR":
            out["code"] = self.code
        return out


class TrailmapError(Exception):
    """Base of every error the HTTP surface renders as `{"success": false, ...}`."""

    code: ClassVar[ErrorCode] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        details: Sequence[ErrorDetail] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = tuple(details)
        self.headers = dict(headers or {})


class ValidationFailed(TrailmapError):
    code = "VALIDATION_ERROR"
    status = 400

    @classmethod
    def field(cls, field: str, message: str) -> ValidationFailed:
        """The usual case: one field is wrong, and the message says how to fix it."""
        return cls(f"{field}: {message}", details=[ErrorDetail(field=field, message=message)])


class Unauthorized(TrailmapError):
    code = "UNAUTHORIZED"
    status = 401

    def __init__(self, message: str, *, error: str = "invalid_token") -> None:
        super().__init__(
            message,
            headers={"WWW-Authenticate": f'Bearer realm="trailmap", error="{error}"'},
        )
        self.error = error  # the RFC 6750 error code


class Forbidden(TrailmapError):
    code = "FORBIDDEN"
    status = 403


class NotFound(TrailmapError):
    code = "NOT_FOUND"
    status = 404


class Conflict(TrailmapError):
    code = "CONFLICT"
    status = 409


class PayloadTooLarge(TrailmapError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413


class RequestTimeout(TrailmapError):
    """The request's body did not arrive in time; the connection is closed after the answer
    (its unread rest cannot be told from the next request)."""

    code = "REQUEST_TIMEOUT"
    status = 408

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class UnsupportedMediaType(TrailmapError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415


class QuotaExceeded(TrailmapError):
    code = "QUOTA_EXCEEDED"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = max(1, retry_after)


class Unavailable(TrailmapError):
    code = "UNAVAILABLE"
    status = 503

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
