""" "Last 2 hours in production" against its floors: the raw SQL and a /healthz round trip.

    .venv/bin/python benchmarks/query.py [--backend sqlite|postgres|both] [--events N]
                                         [--orgs K] [--requests R] [--quick]

Setup (not measured): N events (default 1,000,000) spread over K organizations (default 20)
and the last seven days are loaded straight through the driver (executemany on SQLite, COPY
on PostgreSQL), then a real `trailmap serve` process starts on that database. Measured, R
times each and interleaved, on one keep-alive connection, one request at a time:

- `GET /api/v1/events?from=-2h&subject=production`, rotating over the organizations' keys;
- the raw SQL the server issues for it (select_events: all columns, org, time range and
  subject, newest first, LIMIT 26), through the driver on a connection kept open;
- `GET /healthz`, the cost of an HTTP round trip to this server at all.

Target: p50(query) <= p50(healthz) + 2 x p50(raw SQL); exits 1 when it is missed. Also
printed: the server's resident memory (VmRSS, and its peak VmHWM) after the load and the
queries. `--quick` (100,000 events, 100 requests) is a sanity check that never fails on a
figure.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from _common import (
    COLUMNS,
    Backend,
    BenchDatabase,
    bench_database,
    create_org_with_key,
    percentile,
    raw_sqlite,
    row_params,
    rss_kib,
    run_backends,
    start_server,
)

WEEK_US = 7 * 86400 * 1_000_000
TWO_HOURS_US = 2 * 3600 * 1_000_000
PAGE = 25  # the API's default limit; the server asks the database for one more
_TYPES = ("deployment",) * 6 + ("config-change", "config-change", "feature-flag", "rollback")
_SUBJECTS = ("production",) * 4 + ("staging",) * 3 + ("development",) * 2 + (None,)
_SEVERITIES = (None,) * 6 + ("LOW", "MINOR", "MAJOR", "CRITICAL")

# The statement select_events builds for this query (storage/events.py), in each paramstyle.
_SELECT = (
    f"SELECT {', '.join(COLUMNS)} FROM events "
    "WHERE org_id = {p} AND time_us >= {p} AND time_us <= {p} AND subject = {p} "
    "ORDER BY time_us DESC, id DESC LIMIT {limit}"
)


def _uuid7(ms: int, rng: random.Random) -> str:
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
    value |= 0b10 << 62 | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def generate_rows(
    count: int, org_ids: list[str], now_us: int, seed: int = 11
) -> Iterator[dict[str, Any]]:
    """Stored rows as `validate_event` makes them, uniformly over the last seven days."""
    rng = random.Random(seed)
    for i in range(count):
        org_id = org_ids[i % len(org_ids)]
        time_us = now_us - 60_000_000 - rng.randrange(WEEK_US)
        service = f"svc-{rng.randrange(150):03d}"
        source = f"//github.com/acme/{service}"
        event_type = rng.choice(_TYPES)
        subject = rng.choice(_SUBJECTS)
        version = f"v{rng.randrange(1, 5)}.{rng.randrange(100)}.{rng.randrange(20)}"
        description = f"Deploy {service} build {rng.randrange(10**6)} to the cluster"
        yield {
            "org_id": org_id,
            "id": _uuid7(time_us // 1000, rng),
            "source": source,
            "event_id": f"ev-{i}",
            "type": event_type,
            "original_type": None,
            "subject": subject,
            "severity": rng.choice(_SEVERITIES),
            "version": version,
            "service": service,
            "time_us": time_us,
            "received_us": time_us + rng.randrange(5_000_000),
            "datacontenttype": None,
            "dataschema": None,
            "data": {
                "description": description,
                "commit": f"{rng.getrandbits(160):040x}",
                "author": f"dev{rng.randrange(50)}@acme.example",
            },
            "data_base64": None,
            "description": description,
            "extensions": None,
            "search_text": " ".join(
                v.lower() for v in (event_type, source, subject, service, version, description) if v
            ),
        }


# -- loading (setup) --------------------------------------------------------------------


def load_sqlite(db: BenchDatabase, rows: Iterator[dict[str, Any]]) -> None:
    names = ", ".join(COLUMNS)
    sql = f"INSERT INTO events ({names}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    conn = raw_sqlite(db.driver_url)
    # Setup only: a big page cache keeps index maintenance in memory while loading. The
    # server's own connections keep SQLite's default.
    conn.execute("PRAGMA cache_size=-262144")
    try:
        chunk: list[tuple[Any, ...]] = []
        for row in rows:
            chunk.append(row_params(row))
            if len(chunk) == 50_000:
                _sqlite_commit(conn, sql, chunk)
                chunk = []
        if chunk:
            _sqlite_commit(conn, sql, chunk)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _sqlite_commit(conn: sqlite3.Connection, sql: str, chunk: list[tuple[Any, ...]]) -> None:
    conn.execute("BEGIN")
    conn.executemany(sql, chunk)
    conn.execute("COMMIT")


def load_postgres(db: BenchDatabase, rows: Iterator[dict[str, Any]]) -> None:
    json_columns = {"data", "extensions"}
    with psycopg.connect(db.driver_url) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY events ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(
                    [
                        orjson.dumps(row[c]).decode() if c in json_columns else row.get(c)
                        for c in COLUMNS
                    ]
                )
        conn.commit()
        # A steady-state database has statistics; autovacuum would gather them soon anyway.
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE events")


# -- measuring --------------------------------------------------------------------------


@dataclass
class Figures:
    query_ms: list[float]
    raw_ms: list[float]
    health_ms: list[float]

    @staticmethod
    def p(values: list[float], q: float) -> float:
        return percentile(values, q)


def _raw_query(db: BenchDatabase) -> tuple[Callable[[str, int, int], int], Callable[[], None]]:
    """A function running the raw SQL on one open connection (rows fetched), and its closer."""
    if db.backend == "sqlite":
        conn = raw_sqlite(db.driver_url)
        sql = _SELECT.format(p="?", limit=PAGE + 1)

        def run_sqlite(org_id: str, from_us: int, to_us: int) -> int:
            return len(conn.execute(sql, (org_id, from_us, to_us, "production")).fetchall())

        return run_sqlite, conn.close
    pg = psycopg.connect(db.driver_url, autocommit=True)
    pg_sql = _SELECT.format(p="%s", limit=PAGE + 1)

    def run_postgres(org_id: str, from_us: int, to_us: int) -> int:
        return len(pg.execute(pg_sql, (org_id, from_us, to_us, "production")).fetchall())

    return run_postgres, pg.close


def measure(
    db: BenchDatabase, base_url: str, keys: list[tuple[str, str]], requests: int
) -> Figures:
    raw, close_raw = _raw_query(db)
    figures = Figures([], [], [])
    path = "/api/v1/events?from=-2h&subject=production"
    try:
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            headers = [{"authorization": f"Bearer {token}"} for _org, token in keys]
            for i in range(len(keys) * 3 + 30):  # warm: connections, caches, last-used marks
                client.get(path, headers=headers[i % len(keys)]).raise_for_status()
                client.get("/healthz").raise_for_status()
                now_us = time.time_ns() // 1000
                raw(keys[i % len(keys)][0], now_us - TWO_HOURS_US, now_us)
            for i in range(requests):
                org_id, _token = keys[i % len(keys)]
                started = time.perf_counter()
                response = client.get(path, headers=headers[i % len(keys)])
                figures.query_ms.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200 or not response.json()["data"]["events"]:
                    raise RuntimeError(
                        f"unexpected answer: {response.status_code} {response.text[:300]}"
                    )

                now_us = time.time_ns() // 1000
                started = time.perf_counter()
                found = raw(org_id, now_us - TWO_HOURS_US, now_us)
                figures.raw_ms.append((time.perf_counter() - started) * 1000)
                if not found:
                    raise RuntimeError("the raw query found nothing")

                started = time.perf_counter()
                client.get("/healthz").raise_for_status()
                figures.health_ms.append((time.perf_counter() - started) * 1000)
    finally:
        close_raw()
    return figures


def _matching(db: BenchDatabase, org_id: str) -> int:
    """How many events the query's range holds for one organization (for the report)."""
    now_us = time.time_ns() // 1000
    params = (org_id, now_us - TWO_HOURS_US, now_us, "production")
    sql = (
        "SELECT count(*) FROM events "
        "WHERE org_id = {p} AND time_us >= {p} AND time_us <= {p} AND subject = {p}"
    )
    if db.backend == "sqlite":
        conn = raw_sqlite(db.driver_url)
        try:
            return int(conn.execute(sql.format(p="?"), params).fetchone()[0])
        finally:
            conn.close()
    with psycopg.connect(db.driver_url) as pg:
        row = pg.execute(sql.format(p="%s"), params).fetchone()
        return int(row[0]) if row else 0


def run_backend(backend: Backend, count: int, orgs: int, requests: int, directory: Path) -> bool:
    with bench_database(backend, "query", directory) as db:
        keys = [create_org_with_key(db.url, f"org-{n:02d}") for n in range(orgs)]
        started = time.perf_counter()
        rows = generate_rows(count, [org_id for org_id, _ in keys], time.time_ns() // 1000)
        (load_sqlite if backend == "sqlite" else load_postgres)(db, rows)
        load_s = time.perf_counter() - started
        in_range = _matching(db, keys[0][0])
        with start_server(db.url, directory) as server:
            figures = measure(db, server.base_url, keys, requests)
            memory = rss_kib(server.pid)

    p = Figures.p
    q50, q99 = p(figures.query_ms, 50), p(figures.query_ms, 99)
    r50, r99 = p(figures.raw_ms, 50), p(figures.raw_ms, 99)
    h50, h99 = p(figures.health_ms, 50), p(figures.health_ms, 99)
    budget = h50 + 2 * r50
    met = q50 <= budget
    driver = "sqlite3" if backend == "sqlite" else "psycopg"
    print(
        f"{backend:<8} {count:,} events over {orgs} orgs (loaded in {load_s:.0f} s; "
        f"{in_range} of one org's events match the query); {requests} requests each",
        flush=True,
    )
    for label, p50, p99 in (
        ("GET /api/v1/events?from=-2h&subject=production", q50, q99),
        (f"raw SQL ({driver}, the same SELECT, LIMIT 26)", r50, r99),
        ("GET /healthz", h50, h99),
    ):
        print(f"{'':<8} {label:<48} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms")
    print(
        f"{'':<8} target p50(query) <= p50(healthz) + 2 x p50(raw) = {budget:.2f} ms: "
        f"{q50:.2f} ms, {q50 / budget:.2f} of the budget  {'OK' if met else 'MISSED'}"
    )
    print(
        f"{'':<8} server RSS after the load and the queries: {memory['VmRSS'] / 1024:.0f} MiB "
        f"(peak {memory['VmHWM'] / 1024:.0f} MiB)",
        flush=True,
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--events", type=int, default=1_000_000, help="default 1,000,000")
    parser.add_argument("--orgs", type=int, default=20, help="organizations (default 20)")
    parser.add_argument("--requests", type=int, default=300, help="of each kind (default 300)")
    parser.add_argument("--quick", action="store_true", help="a fast sanity run (100,000 events)")
    args = parser.parse_args(argv)
    count = 100_000 if args.quick else args.events
    requests = 100 if args.quick else args.requests
    # A small database is not the one the targets are about (SQLite's floor, for one, is far
    # faster while everything fits in its page cache).
    return run_backends(
        "query",
        args.backend,
        lambda backend, tmp: run_backend(backend, count, args.orgs, requests, tmp),
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
