"""get_metrics_around_event with 24-hour windows, against fetching the same points with raw
SQL: the floor no comparison can beat, since it must read every point.

    .venv/bin/python benchmarks/metrics.py [--backend sqlite|postgres|both] [--repeat R]
                                           [--quick]

Setup (not measured): a deployment event of checkout in production, and per-minute points
of the five standard metrics (error_rate, throughput, p50/p95/p99_latency) pushed for the
24 hours before it and the 24 hours after: 14,400 points, stored by `record_points` as
`POST /api/v1/metrics` stores them. Other services' points sit beside them, so the
statement has to pick.

Measured, after one untimed round, R times each and interleaved (alternating which goes
first), in this process:
- `get_metrics_around_event(event_id, window="24h")`, the domain function the REST endpoint
  and the MCP tool call: it reads the event, the organization's metric settings and the
  points, and summarizes, tests and judges each metric;
- the floor: the one SELECT of those points (series joined to points, by name and time),
  through the driver on a connection kept open, every row fetched.

Target: p50 within 2x of the floor's p50. `--quick` (1-hour windows) checks that it works.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from _common import (
    Backend,
    bench_database,
    create_org_with_key,
    percentile,
    raw_sqlite,
    run_backends,
)

from trailmap.accounts import Principal, authenticate
from trailmap.metrics.around import get_metrics_around_event
from trailmap.metrics.points import Point, record_points
from trailmap.metrics.series import STANDARD_METRICS
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Database
from trailmap.timeline.ingest import ingest_events

_OTHER_SERVICES = ("orders", "payments", "inventory")
OUTBOUND = OutboundPolicy.default()  # no Prometheus is configured: nothing is fetched
_TYPICAL = {
    "error_rate": (0.005, 0.002),
    "throughput": (40.0, 5.0),
    "p50_latency": (20.0, 3.0),
    "p95_latency": (80.0, 10.0),
    "p99_latency": (150.0, 20.0),
}
_FLOOR = (
    "SELECT s.name, s.kind, s.series_id, p.time_us, p.value FROM metric_series s "
    "JOIN metric_points p ON p.org_id = s.org_id AND p.series_id = s.series_id "
    "WHERE s.org_id = {p} AND s.service = {p} AND s.environment = {p} "
    "AND s.name IN ({names}) AND p.time_us >= {p} AND p.time_us < {p} "
    "ORDER BY s.name, s.series_id, p.time_us"
)


def _points(service: str, start: datetime, minutes: int, rng: random.Random) -> list[Point]:
    out: list[Point] = []
    for name, (mean, sd) in _TYPICAL.items():
        for i in range(minutes):
            moment = start + timedelta(minutes=i)
            out.append(
                Point(
                    name=name,
                    value=max(0.0, rng.gauss(mean, sd)),
                    time_us=int(moment.timestamp() * 1_000_000),
                    service=service,
                    environment="production",
                )
            )
    return out


async def _load(db: Database, principal: Principal, hours: int, now: datetime) -> str:
    event_time = now - timedelta(hours=hours + 1)
    result = await ingest_events(
        db,
        principal,
        [
            {
                "specversion": "1.0",
                "type": "deployment",
                "source": "//github.com/acme/checkout",
                "id": "bench-1",
                "time": event_time.isoformat(),
                "subject": "production",
                "service": "checkout",
                "version": "3.10.0",
            }
        ],
        max_event_bytes=10 * 1024,
        now=now,
    )
    event_id = str(result.accepted[0]["id"])
    rng = random.Random(5)
    start = event_time - timedelta(hours=hours)
    for service in ("checkout", *_OTHER_SERVICES):
        points = _points(service, start, 2 * hours * 60, rng)
        for i in range(0, len(points), 10_000):
            await record_points(db, principal, points[i : i + 10_000], now=now)
    return event_id


def _floor_statement(backend: Backend) -> str:
    mark = "?" if backend == "sqlite" else "%s"
    return _FLOOR.format(p=mark, names=", ".join([mark] * len(STANDARD_METRICS)))


def run_backend(backend: Backend, directory: Path, *, hours: int, repeat: int) -> bool:
    with bench_database(backend, "metrics", directory) as bench:
        org_id, token = create_org_with_key(bench.url, "bench")
        db = Database(bench.url)
        raw: sqlite3.Connection | psycopg.Connection[Any] = (
            raw_sqlite(bench.driver_url)
            if backend == "sqlite"
            else psycopg.connect(bench.driver_url)
        )
        try:
            return asyncio.run(_measure(backend, db, raw, token, hours, repeat, org_id))
        finally:
            raw.close()
            db.close()


async def _measure(
    backend: Backend,
    db: Database,
    raw: Any,
    token: str,
    hours: int,
    repeat: int,
    org_id: str,
) -> bool:
    principal = await authenticate(db, token)
    now = datetime.now(UTC)
    event_id = await _load(db, principal, hours, now)
    event_us = int((now - timedelta(hours=hours + 1)).timestamp() * 1_000_000)
    span_us = hours * 3_600_000_000
    params = (
        org_id,
        "checkout",
        "production",
        *STANDARD_METRICS,
        event_us - span_us,
        event_us + span_us,
    )
    statement = _floor_statement(backend)
    tool_s: list[float] = []
    floor_s: list[float] = []
    rows = 0
    answer: dict[str, Any] = {}
    # One untimed round warms both paths; then the two alternate which goes first, so that
    # neither always finds the pages the other has just read.
    answer = await get_metrics_around_event(
        db, principal, event_id, window=f"{hours}h", outbound=OUTBOUND
    )
    rows = len(raw.execute(statement, params).fetchall())
    for i in range(repeat):
        for step in ("tool", "floor") if i % 2 == 0 else ("floor", "tool"):
            started = time.perf_counter()
            if step == "tool":
                answer = await get_metrics_around_event(
                    db, principal, event_id, window=f"{hours}h", outbound=OUTBOUND
                )
                tool_s.append(time.perf_counter() - started)
            else:
                rows = len(raw.execute(statement, params).fetchall())
                floor_s.append(time.perf_counter() - started)
    tool, floor = percentile(tool_s, 0.5), percentile(floor_s, 0.5)
    verdicts = {m["name"]: m["verdict"] for m in answer["metrics"]}
    counted = sum(m["before"]["points"] + m["after"]["points"] for m in answer["metrics"])
    if counted != rows:
        print(f"{backend}: the answer counted {counted} points, the floor read {rows}")
        return False
    ratio = tool / floor
    met = ratio <= 2.0
    print(
        f"{backend}: get_metrics_around_event({hours}h, 5 metrics, {rows:,} points) "
        f"p50 {tool * 1000:.1f} ms, raw SQL floor p50 {floor * 1000:.1f} ms, "
        f"ratio {ratio:.2f} (target <= 2) {'met' if met else 'MISSED'}"
    )
    print(f"{backend}: verdicts {verdicts}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    hours = 1 if args.quick else 24
    repeat = 3 if args.quick else args.repeat
    return run_backends(
        "metrics",
        args.backend,
        lambda backend, directory: run_backend(backend, directory, hours=hours, repeat=repeat),
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
