"""Reading a JSON request body within its limit, refusing an oversized one before it is read."""

from __future__ import annotations

import json
import math

import orjson
from starlette.requests import Request

from trailmap.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

__all__ = ["JSON_TYPES", "read_json_body"]

JSON_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_json_body(
    request: Request, *, max_bytes: int, accepted: tuple[str, ...] = JSON_TYPES
) -> object:
    kind = media_type(request)
    if kind not in accepted:
        raise UnsupportedMediaType(
            f"Send the body as {', '.join(accepted)}; got {kind or 'no Content-Type header'}."
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ValidationFailed.field("Content-Length", "must be a number of bytes") from None
        if size > max_bytes:
            raise PayloadTooLarge(_too_large(max_bytes, size))
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            # A chunked body without a length is cut off as soon as it passes the limit.
            raise PayloadTooLarge(_too_large(max_bytes, None))
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ValidationFailed.field("body", "the body is empty; send a JSON event or array")
    return parse_json(raw)


def parse_json(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        fast_error = error
    # What orjson refuses, the standard parser may still read exactly (integers too long for
    # a float, for one), so that one odd value costs only its own event, not the whole batch.
    # NaN, Infinity and numbers beyond a float's range are not JSON and stay refused.
    try:
        return json.loads(raw, parse_constant=_not_json, parse_float=_finite_float)
    except (ValueError, RecursionError):
        pass
    raise ValidationFailed.field(
        "body", f"the body is not valid JSON ({fast_error}); check quotes, commas and brackets"
    )


def _not_json(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def _too_large(limit: int, size: int | None) -> str:
    got = f" ({size} bytes)" if size is not None else ""
    return (
        f"The body is larger than {limit} bytes{got}; send fewer events per request "
        "(a batch holds at most 1,000)."
    )
