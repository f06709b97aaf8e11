"""When to try again and how long to wait: 429, 5xx and lost connections are retried with
exponential backoff and full jitter, at least as long as `Retry-After` asks (capped)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "is_retryable", "retry_after_seconds"]

# As `trailmap send`: a timeout the server reported, too early, too many requests, and the
# server's (or its proxy's) passing failures. Any other 4xx will fail the same way again.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUSES


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_retries` retries after the first attempt. The n-th wait is uniform in
    [0, min(max_delay, base_delay * 2**n)] ("full jitter", so clients refused together do not
    come back together), and never shorter than `Retry-After`, which is believed up to
    `max_retry_after` seconds."""

    max_retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if min(self.base_delay, self.max_delay, self.max_retry_after) < 0:
            raise ValueError("delays must not be negative")

    @property
    def attempts(self) -> int:
        return self.max_retries + 1

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(retry, 32))
        backoff = random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret
        if retry_after is None:
            return backoff
        return max(min(retry_after, self.max_retry_after), backoff)


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: a number of seconds or an HTTP date (RFC 9110, 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))
