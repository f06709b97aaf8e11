"""Reading request bodies within their limits (JSON here; OTLP bodies through `read_body`)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import orjson
from starlette.requests import Request

from trailmap.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

__all__ = ["JSON_TYPES", "media_type", "read_body", "read_json_body"]

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
    raw = await read_body(request, max_bytes=max_bytes, too_large=_too_large)
    if not raw.strip():
        raise ValidationFailed.field("body", "the body is empty; send a JSON event or array")
    return parse_json(raw)


async def read_body(
    request: Request, *, max_bytes: int, too_large: Callable[[int, int | None], str]
) -> bytes:
    """The body as sent, refused by its Content-Length or as soon as the stream passes
    `max_bytes` (a chunked body without a length included), so an oversized request costs
    no more than the limit. `too_large(limit, declared size or None)` words the refusal."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ValidationFailed.field("Content-Length", "must be a number of bytes") from None
        if size > max_bytes:
            raise PayloadTooLarge(too_large(max_bytes, size))
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise PayloadTooLarge(too_large(max_bytes, None))
        chunks.append(chunk)
    return b"".join(chunks)


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
