"""Reading request bodies within their limits of size (JSON here; OTLP bodies through
`read_body`) and of time (`BodyDeadline`, for every body any route reads)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import anyio
import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trailmap.errors import PayloadTooLarge, RequestTimeout, UnsupportedMediaType, ValidationFailed

__all__ = ["JSON_TYPES", "BodyDeadline", "media_type", "read_body", "read_json_body"]

JSON_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
)


class BodyDeadline:
    """ASGI middleware: a request's whole body must arrive within `seconds` of the app's
    first read of it, else reading it raises `RequestTimeout` (408, connection closed).

    It sits under every reader (`read_body`, `read_form`, the MCP and OAuth routes'
    own), so a body trickled in a byte at a time holds a worker for `seconds` at most,
    however steadily it trickles: a limit per chunk would not stop that.
    """

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        complete = False

        async def receive_in_time() -> Message:
            nonlocal deadline, complete
            if complete:
                # The body is in; what follows is the wait for a disconnect: no limit.
                return await receive()
            now = anyio.current_time()
            if deadline is None:
                deadline = now + self.seconds
            with anyio.move_on_after(deadline - now):
                message = await receive()
                complete = message["type"] != "http.request" or not message.get("more_body")
                return message
            raise RequestTimeout(
                f"The request body did not arrive within {self.seconds:g} s; send it whole, "
                "without pauses."
            )

        await self.app(scope, receive_in_time, send)


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
