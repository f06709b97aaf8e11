"""A window of time a graph question asks about (`from`, `to`), read from the expressions the
timeline takes ("-1d", "yesterday", ISO 8601) and refused, naming the argument, when unreadable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from trailmap import clock
from trailmap.errors import ValidationFailed
from trailmap.timeline.times import TimeExpressionError, parse_time_expression, resolve_timezone

__all__ = ["Window", "window"]


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    now: bool  # whether the window ends now (the graph now, not one built as of `end`)

    @property
    def start_us(self) -> int:
        return clock.to_us(self.start)

    @property
    def end_us(self) -> int:
        return clock.to_us(self.end)


def window(from_: str, to: str, *, default_timezone: str) -> Window:
    now = clock.now()
    tz = resolve_timezone(None, default=default_timezone)
    bounds: list[datetime] = []
    for name, text in (("from", from_), ("to", to)):
        try:
            bounds.append(min(parse_time_expression(text or "now", now=now, tz=tz), now))
        except (TimeExpressionError, ValueError) as error:
            raise ValidationFailed.field(name, str(error)) from None
    start, end = bounds
    if start >= end:
        raise ValidationFailed.field("from", "must be before to")
    return Window(start, end, end == now)
