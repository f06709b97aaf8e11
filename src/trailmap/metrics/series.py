"""Metric series and the one interface every source of points speaks: pushed, spans, prometheus
(docs/metrics.md, "Metric series" and "Three sources behind one interface")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "SOURCES",
    "STANDARD_METRICS",
    "UNITS",
    "MetricSource",
    "Series",
    "SeriesRequest",
]

STANDARD_METRICS: tuple[str, ...] = (
    "error_rate",
    "throughput",
    "p50_latency",
    "p95_latency",
    "p99_latency",
)

# The unit each standard metric is given in, whatever its source.
UNITS: dict[str, str] = {
    "error_rate": "ratio",
    "throughput": "requests/s",
    "p50_latency": "ms",
    "p95_latency": "ms",
    "p99_latency": "ms",
}

SOURCES: tuple[str, ...] = ("pushed", "spans", "prometheus")


@dataclass(frozen=True, slots=True)
class SeriesRequest:
    """The points of one metric of one service and environment in [start_us, end_us)."""

    name: str
    service: str
    environment: str
    start_us: int
    end_us: int
    step_seconds: int = 60


@dataclass(frozen=True, slots=True)
class Series:
    """Points in time order (microseconds since the epoch, UTC), and the source that gave
    them. ``error`` says why a source gave nothing (unreachable, bad query, not configured);
    it is reported in the answer, never raised."""

    name: str
    source: str
    times_us: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    error: str | None = None


class MetricSource(Protocol):
    """A source of points, bound to one organization."""

    name: str

    async def fetch(self, request: SeriesRequest) -> Series:
        """The request's points; a failure comes back as ``Series.error``, never raised,
        and within the source's bounded timeout."""
        ...
