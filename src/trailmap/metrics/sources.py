"""The two sources of points Trailmap holds itself: pushed points, and each service's per-minute
rate, errors and latency from ingested spans (graph/stats.py; docs/internals.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

from trailmap.graph.model import node_id
from trailmap.graph.stats import Stats
from trailmap.metrics.series import STANDARD_METRICS, Series, SeriesRequest
from trailmap.storage import Database
from trailmap.storage import metrics as store

__all__ = [
    "MIN_CALLS_PER_POINT",
    "PushedSource",
    "SpansSource",
    "counter_rates",
    "span_step_minutes",
]

# A rate from a handful of calls is mostly noise: span points are widened (1, 2, 5 ... 60
# minutes) until they hold this many calls on average, while each side keeps enough points.
MIN_CALLS_PER_POINT = 20
_STEPS_MINUTES = (1, 2, 5, 10, 15, 30, 60)
_MINUTE_US = 60_000_000
_QUANTILES = {"p50_latency": 0.50, "p95_latency": 0.95, "p99_latency": 0.99}


def counter_rates(
    times_us: Sequence[int], totals: Sequence[float]
) -> tuple[list[int], list[float]]:
    """Per-second rates between successive points of a running total. A total that went
    down was reset (a restarted process): its rate is the new total over the interval, as
    Prometheus' rate() reads it."""
    out_t: list[int] = []
    out_v: list[float] = []
    for i in range(1, len(times_us)):
        seconds = (times_us[i] - times_us[i - 1]) / 1e6
        if seconds <= 0:
            continue
        grown = totals[i] - totals[i - 1]
        out_t.append(times_us[i])
        out_v.append((grown if grown >= 0 else totals[i]) / seconds)
    return out_t, out_v


@dataclass(frozen=True, slots=True)
class PushedSource:
    """Points pushed to the API or by OTLP metrics, of one organization."""

    db: Database
    org_id: str
    name: str = "pushed"

    async def fetch(self, request: SeriesRequest) -> Series:
        found = await self.fetch_many(
            [request.name],
            service=request.service,
            environment=request.environment,
            start_us=request.start_us,
            end_us=request.end_us,
        )
        return found.get(request.name) or Series(name=request.name, source=self.name)

    async def fetch_many(
        self,
        names: Sequence[str],
        *,
        service: str,
        environment: str,
        start_us: int,
        end_us: int,
    ) -> dict[str, Series]:
        """The series of these names that have points in the window; the points of a
        name's several label sets come together, in time order."""
        rows = await self.db.read(
            store.points,
            self.org_id,
            service=service,
            environment=environment,
            names=list(names),
            from_us=start_us,
            to_us=end_us,
        )
        out: dict[str, Series] = {}
        for name, of_name in groupby(rows, key=itemgetter(0)):
            block = list(of_name)
            # Rows come by series: one series (the usual case) is one transposition.
            one = block[0][2] == block[-1][2]
            parts = [block] if one else [list(g) for _, g in groupby(block, key=itemgetter(2))]
            series: list[tuple[list[int], list[float]]] = []
            for points in parts:
                _, kinds, _, times, values = zip(*points, strict=True)
                if kinds[0] == "counter":
                    series.append(counter_rates(times, values))
                else:
                    series.append((list(times), list(map(float, values))))
            if len(series) == 1:
                times_us, values_f = series[0]
            else:  # several label sets: their points together, in time order
                merged = sorted(pair for t, v in series for pair in zip(t, v, strict=True))
                times_us, values_f = [t for t, _ in merged], [v for _, v in merged]
            if times_us:
                out[name] = Series(name, self.name, times_us, values_f)
        return out


def span_step_minutes(
    total_calls: int, before_minutes: int, after_minutes: int, min_points: int
) -> int:
    """The narrowest step whose points hold MIN_CALLS_PER_POINT calls on average, widened no
    further than leaves each side `min_points` points."""
    chosen = 1
    for step in _STEPS_MINUTES:
        if step > 1 and min(before_minutes, after_minutes) // step < min_points:
            break
        chosen = step
        if total_calls * step >= MIN_CALLS_PER_POINT * (before_minutes + after_minutes):
            break
    return chosen


@dataclass(frozen=True, slots=True)
class SpansSource:
    """The standard metrics of a service, from the SERVER and CONSUMER spans it reported."""

    db: Database
    org_id: str
    name: str = "spans"

    async def fetch(self, request: SeriesRequest) -> Series:
        rows = await self.minutes(
            service=request.service,
            environment=request.environment,
            start_us=request.start_us,
            end_us=request.end_us,
        )
        series = self.derive(
            rows,
            [request.name],
            origin_us=request.start_us,
            step_minutes=max(1, request.step_seconds // 60),
        )
        return series[request.name]

    async def minutes(
        self, *, service: str, environment: str, start_us: int, end_us: int
    ) -> list[Any]:
        """The service's per-minute rows in the window, for `derive`."""
        subject = node_id(self.org_id, "service", environment, service)
        return await self.db.read(
            store.span_minutes, self.org_id, subject, from_us=start_us, to_us=end_us
        )

    def derive(
        self,
        rows: Sequence[Any],
        names: Sequence[str],
        *,
        origin_us: int,
        step_minutes: int,
        end_us: int | None = None,
    ) -> dict[str, Series]:
        """Points of the standard metrics among `names`, one per step that had calls; steps
        are aligned on `origin_us` (the event), so that none straddles it.

        Throughput also counts the steps without a call after the first that had one, up to
        the last whole step before `end_us`: traffic that stopped is a change to report."""
        step_us = step_minutes * _MINUTE_US
        buckets: dict[int, Stats] = {}
        for row in rows:
            start = origin_us + ((row[0] - origin_us) // step_us) * step_us
            stats = buckets.get(start)
            if stats is None:
                stats = buckets[start] = Stats()
            stats.merge(
                Stats(calls=row[1], errors=row[2], duration_ms=row[3], buckets=list(row[4:]))
            )
        times = sorted(t for t, s in buckets.items() if s.calls)
        out: dict[str, Series] = {}
        for name in names:
            if name not in STANDARD_METRICS:
                out[name] = Series(
                    name=name,
                    source=self.name,
                    error=f"spans give only {', '.join(STANDARD_METRICS)}",
                )
                continue
            values: list[float] = []
            for t in times if name != "throughput" else ():
                stats = buckets[t]
                if name == "error_rate":
                    values.append(stats.errors / stats.calls)
                else:
                    values.append(stats.percentile_ms(_QUANTILES[name]) or 0.0)
            if name == "throughput":
                out[name] = self._throughput(buckets, times, step_us, end_us)
            else:
                out[name] = Series(name=name, source=self.name, times_us=list(times), values=values)
        return out

    def _throughput(
        self, buckets: dict[int, Stats], times: list[int], step_us: int, end_us: int | None
    ) -> Series:
        if not times:
            return Series(name="throughput", source=self.name)
        last = times[-1] if end_us is None else end_us - step_us
        starts = range(times[0], last + 1, step_us)
        seconds = step_us / 1e6
        return Series(
            name="throughput",
            source=self.name,
            times_us=list(starts),
            values=[(buckets[t].calls if t in buckets else 0) / seconds for t in starts],
        )
