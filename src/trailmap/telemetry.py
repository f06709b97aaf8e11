"""The server's own counters (what it ingested, which MCP tools were called), which domain
code adds to without knowing which app it runs in (docs/internals.md)."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from prometheus_client import CollectorRegistry, Counter, Histogram, Info

from trailmap import __version__

__all__ = [
    "ServerTelemetry",
    "count_events",
    "count_points",
    "count_spans",
]

# Seconds; from a cached point read to a large batch on a busy SQLite file.
_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerTelemetry:
    """One app's metrics, in its own registry; /metrics renders `registry`."""

    def __init__(self, *, database: str) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "trailmap_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "trailmap_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "trailmap_events_ingested",
            "Change events received, by outcome: accepted (stored now), duplicate, rejected.",
            ["outcome"],
            registry=self.registry,
        )
        self.spans = Counter(
            "trailmap_spans_ingested",
            "OTLP spans received, by outcome: accepted or rejected.",
            ["outcome"],
            registry=self.registry,
        )
        self.points = Counter(
            "trailmap_metric_points_ingested",
            "Metric points received (POST /api/v1/metrics and OTLP metrics), by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.mcp_tool_calls = Counter(
            "trailmap_mcp_tool_calls",
            "MCP tool calls, by tool and outcome (ok, or error when the tool reported one).",
            ["tool", "outcome"],
            registry=self.registry,
        )
        Info("trailmap_build", "The running Trailmap.", registry=self.registry).info(
            {
                "version": __version__,
                "python": platform.python_version(),
                "database": database,
            }
        )
        # Zero rather than absent before the first of each: rate() and alerts need the series.
        for outcome in ("accepted", "duplicate", "rejected"):
            self.events.labels(outcome)
        for counter in (self.spans, self.points):
            for outcome in ("accepted", "rejected"):
                counter.labels(outcome)

    @contextmanager
    def current(self) -> Iterator[None]:
        """Make this the telemetry that `count_*` add to, for the duration of a request."""
        token = _current.set(self)
        try:
            yield
        finally:
            _current.reset(token)


_current: ContextVar[ServerTelemetry | None] = ContextVar("trailmap_telemetry", default=None)


def count_events(*, accepted: int, duplicates: int, rejected: int) -> None:
    telemetry = _current.get()
    if telemetry is not None:
        for outcome, n in (
            ("accepted", accepted),
            ("duplicate", duplicates),
            ("rejected", rejected),
        ):
            if n:
                telemetry.events.labels(outcome).inc(n)


def count_spans(*, accepted: int, rejected: int) -> None:
    telemetry = _current.get()
    if telemetry is not None:
        _add(telemetry.spans, accepted, rejected)


def count_points(*, accepted: int, rejected: int) -> None:
    telemetry = _current.get()
    if telemetry is not None:
        _add(telemetry.points, accepted, rejected)


def _add(counter: Counter, accepted: int, rejected: int) -> None:
    if accepted:
        counter.labels("accepted").inc(accepted)
    if rejected:
        counter.labels("rejected").inc(rejected)
