"""`trailmap send`: one event to a Trailmap server, retried until it is stored or refused
(docs/internals.md)."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

__all__ = ["RetryPolicy", "SendFailed", "SendResult", "build_event", "send_event"]

_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


class SendFailed(Exception):
    """The event was not stored; the message says why and what to do. `status` is the
    refusing answer's HTTP status (None when the server was never heard)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class SendResult:
    status: int
    body: dict[str, Any]
    attempts: int


def build_event(
    *,
    type_: str,
    source: str,
    subject: str | None = None,
    version: str | None = None,
    severity: str | None = None,
    description: str | None = None,
    data: Any = None,
    time_: str | None = None,
    service: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "type": type_,
        "source": source,
        # Stamped now, not "NOW": a retry minutes later must keep the time of the change.
        "time": time_
        or datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    optional = {"subject": subject, "version": version, "severity": severity, "service": service}
    event.update({name: value for name, value in optional.items() if value is not None})
    if description is not None:
        data = dict(data) if isinstance(data, dict) else ({} if data is None else {"value": data})
        data["description"] = description
    if data is not None:
        event["data"] = data
    return event


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def _delay(policy: RetryPolicy, attempt: int, retry_after: float | None) -> float:
    backoff = random.uniform(0, min(policy.max_delay, policy.base_delay * 2**attempt))  # noqa: S311 - jitter, not a secret
    if retry_after is not None:
        return min(max(retry_after, backoff), max(policy.max_delay, retry_after))
    return backoff


def send_event(
    url: str,
    api_key: str,
    event: dict[str, Any] | list[dict[str, Any]],
    *,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, str, float], None] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> SendResult:
    policy = policy or RetryPolicy()
    endpoint = url.rstrip("/") + "/api/v1/events"
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    last_problem = "no attempt was made"
    with httpx.Client(timeout=policy.timeout, transport=transport) as client:
        for attempt in range(policy.attempts):
            retry_after: float | None = None
            try:
                response = client.post(endpoint, json=event, headers=headers)
            except httpx.HTTPError as error:
                last_problem = f"could not reach {endpoint}: {error.__class__.__name__}: {error}"
            else:
                body = _json(response)
                if response.status_code < 400:
                    return SendResult(response.status_code, body, attempt + 1)
                message = str(body.get("error") or response.reason_phrase)
                if response.status_code not in _RETRYABLE:
                    raise SendFailed(
                        f"{response.status_code} {body.get('code', '')}: {message}".strip(),
                        response.status_code,
                    )
                last_problem = f"{response.status_code} {message}"
                retry_after = retry_after_seconds(response.headers.get("retry-after"))
            if attempt + 1 < policy.attempts:
                wait = _delay(policy, attempt, retry_after)
                if on_retry is not None:
                    on_retry(attempt + 1, last_problem, wait)
                sleep(wait)
    raise SendFailed(f"gave up after {policy.attempts} attempts; last: {last_problem}")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
