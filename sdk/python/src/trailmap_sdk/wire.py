"""What the sync and async clients share: a batch split into requests the server takes, and
an answer read as a result, a refusal to raise, or a failure worth retrying."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from trailmap_sdk.errors import ApiError, EventRejected
from trailmap_sdk.results import SendResult
from trailmap_sdk.retry import is_retryable, retry_after_seconds

__all__ = ["MAX_BATCH", "Chunk", "Retry", "chunks", "endpoint", "headers", "read_answer"]

# The server's limits (docs/interfaces.md): 1,000 events a request, 8 MiB a body by default.
MAX_BATCH = 1000
MAX_REQUEST_BYTES = 4 * 1024 * 1024
USER_AGENT = "trailmap-sdk-python/0.1.0"


@dataclass(frozen=True, slots=True)
class Chunk:
    """One request's body: `count` events, the first of them `offset`-th of the batch."""

    offset: int
    count: int
    body: bytes
    single: bool = False


@dataclass(frozen=True, slots=True)
class Retry:
    """A failure worth retrying: what it was, and how long the server asked us to wait."""

    problem: str
    retry_after: float | None = None
    error: ApiError | None = None


def endpoint(url: str) -> str:
    return url.rstrip("/") + "/api/v1/events"


def headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def single(event: Mapping[str, Any]) -> Chunk:
    """One event sent alone, as an object: a refusal then names its own problem."""
    return Chunk(offset=0, count=1, body=_encode(event), single=True)


def chunks(
    events: list[dict[str, Any]],
    *,
    max_batch: int = MAX_BATCH,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> Iterator[Chunk]:
    """Arrays of at most `max_batch` events and about `max_bytes` (an event larger than that
    goes alone, for the server to refuse by name)."""
    start, size = 0, 2
    parts: list[bytes] = []
    for index, event in enumerate(events):
        encoded = _encode(event)
        if parts and (len(parts) >= max_batch or size + len(encoded) + 1 > max_bytes):
            yield Chunk(offset=start, count=len(parts), body=b"[" + b",".join(parts) + b"]")
            start, parts, size = index, [], 2
        parts.append(encoded)
        size += len(encoded) + 1
    if parts:
        yield Chunk(offset=start, count=len(parts), body=b"[" + b",".join(parts) + b"]")


def read_answer(response: httpx.Response, chunk: Chunk, attempts: int) -> SendResult | Retry:
    """The server's answer to `chunk`: a result, a `Retry`, or an `ApiError` raised."""
    body = _json(response)
    status = response.status_code
    if status < 300:
        data = body.get("data")
        return SendResult.from_data(
            data if isinstance(data, Mapping) else {}, offset=chunk.offset, attempts=attempts
        )
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    error = ApiError.from_body(status, body, response.reason_phrase, retry_after=retry_after)
    if is_retryable(status):
        return Retry(f"{status} {error.message}", retry_after, error)
    if status in (400, 413) and error.code in ("VALIDATION_ERROR", "PAYLOAD_TOO_LARGE"):
        indexed = [d for d in error.details if isinstance(d.get("index"), int)]
        if chunk.single:
            raise EventRejected(status, error.code, error.message, error.details)
        if indexed:
            # Nothing in this request was stored, and each item says why.
            return SendResult.all_rejected(indexed, offset=chunk.offset, attempts=attempts)
    raise error


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
