"""The current time, in the two forms Trailmap uses: aware UTC datetimes and epoch microseconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

__all__ = ["from_us", "now", "now_us", "to_us"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(moment: datetime) -> int:
    """Exact microseconds since the epoch (no float rounding) of an aware datetime."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)
