"""The current time, in the two forms Trailmap uses: aware UTC datetimes and epoch microseconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

__all__ = ["from_us", "now", "now_us", "to_us"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = timedelta(microseconds=1)


def now() -> datetime:
    return datetime.now(UTC)


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (integer timedelta arithmetic, no floats)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a naive datetime has no place on the timeline; give it a zone")
    return (moment - _EPOCH) // _ONE_MICROSECOND


def from_us(us: int) -> datetime:
    """The aware UTC datetime `us` microseconds after the Unix epoch."""
    try:
        return _EPOCH + timedelta(microseconds=us)
    except OverflowError as error:
        raise ValueError(f"{us} microseconds is outside the years 1 to 9999") from error
