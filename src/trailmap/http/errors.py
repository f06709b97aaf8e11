"""The one error shape of the HTTP surface, produced here and nowhere else:
`{"success": false, "error": "<what to do>", "code": "<CODE>", "details": [...]}`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from trailmap.errors import ErrorCode, ErrorDetail, TrailmapError
from trailmap.http.responses import JSONBody

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

# A face's own answer to a 404 (the console's HTML page for a browser), or None for JSON.
NotFoundPage = Callable[[Request], Response | None]

_STATUS_CODES: dict[int, ErrorCode] = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "VALIDATION_ERROR",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "QUOTA_EXCEEDED",
    503: "UNAVAILABLE",
}


def error_response(
    status: int,
    code: ErrorCode,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"success": False, "error": message, "code": code, "details": details or []}
    return JSONBody(body, status_code=status, headers=headers)


def render(error: TrailmapError) -> Response:
    return error_response(
        error.status,
        error.code,
        error.message,
        [d.as_json() for d in error.details],
        error.headers,
    )


def _field(loc: tuple[Any, ...]) -> str:
    # FastAPI reports ("query", "limit"); people know the parameter as "limit". Only the
    # leading location goes: a parameter may itself be called query (GET /graph/nodes).
    if loc and loc[0] in ("query", "path", "header", "body", "cookie"):
        loc = loc[1:]
    return ".".join(str(p) for p in loc) or "request"


async def _on_trailmap_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, TrailmapError)
    return render(error)


async def _on_request_validation(_request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    details = [
        ErrorDetail(field=_field(tuple(e.get("loc", ()))), message=str(e.get("msg", "invalid")))
        for e in error.errors()
    ]
    first = details[0] if details else ErrorDetail(field=None, message="invalid request")
    return error_response(
        400,
        "VALIDATION_ERROR",
        f"{first.field}: {first.message}",
        [d.as_json() for d in details],
    )


async def _on_http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        page_for: NotFoundPage | None = getattr(request.app.state, "not_found_page", None)
        page = page_for(request) if page_for is not None else None
        if page is not None:
            return page
    code = _STATUS_CODES.get(error.status_code, "VALIDATION_ERROR")
    if error.status_code == 404:
        message = f"Nothing at {request.url.path}; the API lives under /api/v1 (see /docs)."
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}."
    else:
        message = str(error.detail)
    return error_response(error.status_code, code, message, headers=dict(error.headers or {}))


async def _on_unexpected(request: Request, error: Exception) -> Response:
    # Logged with its trace for the operator; the client learns only that it was our fault.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(
        500, "INTERNAL_ERROR", "Trailmap failed to handle this request; the error was logged."
    )


def install_error_handlers(app: FastAPI, *, not_found_page: NotFoundPage | None = None) -> None:
    """`not_found_page` answers a 404 in its own way (a browser's HTML page) or returns None
    for the JSON shape."""
    app.state.not_found_page = not_found_page
    app.add_exception_handler(TrailmapError, _on_trailmap_error)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
