"""What goes wrong, typed: the server's one error shape
(`{"success": false, "error", "code", "details"}`), or no answer after every retry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ApiError", "EventRejected", "RetriesExhausted", "TrailmapError"]


class TrailmapError(Exception):
    """Every error the SDK raises."""


class ApiError(TrailmapError):
    """The server refused the request, in its one error shape: `status` (401, 403, 413, ...),
    `code` (`UNAUTHORIZED`, `VALIDATION_ERROR`, ...), `message` (what to do) and `details`
    (for events: each problem's `index`, `field`, `code` and `message`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Sequence[Mapping[str, Any]] = (),
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: tuple[Mapping[str, Any], ...] = tuple(details)
        self.retry_after = retry_after

    @classmethod
    def from_body(
        cls, status: int, body: Mapping[str, Any], reason: str, *, retry_after: float | None
    ) -> ApiError:
        details = body.get("details")
        return cls(
            status,
            str(body.get("code") or _code_for(status)),
            str(body.get("error") or reason or f"HTTP {status}"),
            [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else (),
            retry_after=retry_after,
        )


class EventRejected(ApiError):
    """`send(event)`: the one event was not stored; `details` say which field and why."""


class RetriesExhausted(TrailmapError):
    """Every attempt failed with something worth retrying (429, 5xx, no connection).

    `last_error` is the server's last answer when there was one; `__cause__` is the
    connection error when there was none.
    """

    def __init__(self, attempts: int, problem: str, last_error: ApiError | None) -> None:
        super().__init__(f"gave up after {attempts} attempts; last: {problem}")
        self.attempts = attempts
        self.last_error = last_error


_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    408: "REQUEST_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "QUOTA_EXCEEDED",
    503: "UNAVAILABLE",
}


def _code_for(status: int) -> str:
    """A proxy in front of the server may answer without Trailmap's shape."""
    return _CODES.get(status, f"HTTP_{status}")
