"""DORA's four key metrics of one organization over a year of 100,000 deployments, against
raw SQL aggregating the same figures in the same run.

    .venv/bin/python benchmarks/dora.py [--backend sqlite|postgres|both] [--repeat R]
                                        [--quick]

Setup (not measured): 20 services deploying to production for 360 days, 100,000
deployments in all (3% failed), each shipping the pull request merged since its service's
previous deployment (a `change-merged` event with its commit sha, named by the deployment),
rollbacks after 2% of them, 300 incidents with their resolutions and 500 regressed verdicts:
about 202,000 events, stored by `ingest_events` as `POST /api/v1/events` stores them.

Measured, after one untimed round, R times each and interleaved (alternating which goes
first), in this process:
- `get_dora_metrics(from="-360d")`, the domain function REST, MCP and the console call: it
  reads the deployments, rollbacks, incidents and merges of the range and computes the four
  figures, their levels, the weeks and the evidence;
- the floor: raw SQL over a connection kept open, computing the same figures in the
  database: the successful deployments by week; the failed ones (failed, regressed, or
  followed within a day and before the next deployment by a rollback or an incident); each
  merge's lead time (to the first successful deployment of its service after it) and each
  incident's time to its resolution, their medians taken in Python.

Both must agree on every figure. Target: p50 within 2x of the floor's p50. `--quick`
(1,000 deployments) checks that it works.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
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

from trailmap import clock
from trailmap.accounts import Principal, authenticate
from trailmap.storage import Database
from trailmap.timeline.dora import get_dora_metrics
from trailmap.timeline.ingest import ingest_events

_SERVICES = 20
_DAYS = 360
_DAY_US = 86_400_000_000


def _history(deployments: int, now: datetime) -> tuple[list[object], list[str]]:
    """The events, and the producer ids of the deployments to mark regressed."""
    rng = random.Random(11)
    start = now - timedelta(days=_DAYS) + timedelta(hours=1)
    span_s = (_DAYS - 1) * 86_400
    events: list[object] = []
    regressed: list[str] = []
    per_service = deployments // _SERVICES
    for s in range(_SERVICES):
        service = f"svc-{s:02d}"
        source = f"//github.com/acme/{service}"
        times = sorted(rng.sample(range(600, span_s), per_service))
        previous = 0
        for n, second in enumerate(times):
            sha = f"{rng.getrandbits(160):040x}"
            merged = rng.randint(previous + 1, second - 1) if second - previous > 2 else second
            failed = rng.random() < 0.03
            at = start + timedelta(seconds=second)
            events.append(
                {
                    "specversion": "1.0",
                    "id": f"m-{s}-{n}",
                    "type": "change-merged",
                    "source": source,
                    "service": service,
                    "time": (start + timedelta(seconds=merged)).isoformat(),
                    "version": sha[:7],
                    "data": {"sha": sha},
                }
            )
            events.append(
                {
                    "specversion": "1.0",
                    "id": f"d-{s}-{n}",
                    "type": "deployment",
                    "source": source,
                    "service": service,
                    "subject": "production",
                    "time": at.isoformat(),
                    "version": sha[:7],
                    "data": {"sha": sha, "status": "failed" if failed else "succeeded"},
                }
            )
            nxt = times[n + 1] if n + 1 < len(times) else span_s
            if rng.random() < 0.02 and nxt - second > 4:
                events.append(
                    {
                        "specversion": "1.0",
                        "id": f"r-{s}-{n}",
                        "type": "rollback",
                        "source": source,
                        "service": service,
                        "subject": "production",
                        "time": (at + timedelta(seconds=(nxt - second) // 2)).isoformat(),
                    }
                )
            if rng.random() < 500 / deployments:
                regressed.append(f"d-{s}-{n}")
            previous = second
        # Incidents that do not overlap: each resolved before the service's next one.
        incidents = max(1, 300 // _SERVICES)
        slot = span_s // incidents
        for i in range(incidents):
            detected = i * slot + rng.randint(0, slot // 2)
            events.append(
                {
                    "specversion": "1.0",
                    "id": f"i-{s}-{i}",
                    "type": "incident",
                    "source": source,
                    "service": service,
                    "subject": "production",
                    "time": (start + timedelta(seconds=detected)).isoformat(),
                }
            )
            events.append(
                {
                    "specversion": "1.0",
                    "id": f"x-{s}-{i}",
                    "type": "incident-resolved",
                    "source": source,
                    "service": service,
                    "subject": "production",
                    "time": (
                        start + timedelta(seconds=detected + rng.randint(300, slot // 3))
                    ).isoformat(),
                }
            )
    return events, regressed


async def _load(db: Database, principal: Principal, deployments: int, now: datetime) -> int:
    events, regressed = _history(deployments, now)
    ids: dict[str, str] = {}
    for i in range(0, len(events), 1000):
        result = await ingest_events(
            db, principal, list(events[i : i + 1000]), max_event_bytes=10 * 1024, now=now
        )
        assert not result.rejected, result.rejected[:3]
        ids.update({a["event_id"]: a["id"] for a in result.accepted})
    from trailmap.storage import verdicts  # noqa: PLC0415 - setup only, beside the floor's SQL

    now_us = clock.to_us(now)
    for producer_id in regressed:
        event_id = ids[producer_id]
        await db.write(verdicts.claim_verdict, principal.org_id, event_id, "b", now_us, now_us)
        await db.write(
            verdicts.store_verdict, principal.org_id, event_id, "b", "regressed", {}, now_us
        )
    return len(events)


def _sql(backend: Backend) -> dict[str, str]:
    p = "?" if backend == "sqlite" else "%s"
    status = "json_extract(d.data, '$.status')" if backend == "sqlite" else "(d.data ->> 'status')"
    ok = f"COALESCE({status}, '') <> 'failed'"
    deploy = f"d.org_id = {p} AND d.type = 'deployment' AND d.time_us >= {p} AND d.time_us < {p}"
    return {
        "weeks": (
            f"SELECT (d.time_us - {p}) / {7 * _DAY_US} AS week, count(*) FROM events d "
            f"WHERE {deploy} AND {ok} GROUP BY week ORDER BY week"
        ),
        "failed": (
            f"SELECT count(*), sum(CASE WHEN {ok} THEN 0 ELSE 1 END) FROM events d "
            f"WHERE {deploy} AND (NOT ({ok}) OR EXISTS (SELECT 1 FROM deploy_verdicts v "
            "WHERE v.org_id = d.org_id AND v.event_id = d.id AND v.verdict = 'regressed') "
            "OR EXISTS (SELECT 1 FROM events t WHERE t.org_id = d.org_id "
            "AND t.service = d.service AND t.type IN ('rollback', 'incident') "
            "AND (t.subject = d.subject OR t.subject IS NULL) "
            f"AND t.time_us > d.time_us AND t.time_us <= d.time_us + {_DAY_US} "
            "AND NOT EXISTS (SELECT 1 FROM events n WHERE n.org_id = d.org_id "
            "AND n.service = d.service AND n.type = 'deployment' AND n.subject = d.subject "
            "AND n.time_us > d.time_us AND n.time_us < t.time_us)))"
        ),
        "attempted": f"SELECT count(*) FROM events d WHERE {deploy}",
        "lead": (
            "SELECT m.shipped - m.time_us FROM (SELECT m.time_us, (SELECT min(d.time_us) "
            "FROM events d WHERE d.org_id = m.org_id AND d.service = m.service "
            f"AND d.type = 'deployment' AND d.time_us >= m.time_us AND {ok}) AS shipped "
            f"FROM events m WHERE m.org_id = {p} AND m.type = 'change-merged' "
            f"AND m.time_us >= {p} AND m.time_us < {p}) AS m "
            f"WHERE m.shipped >= {p} AND m.shipped < {p}"
        ),
        "restore": (
            "SELECT (SELECT min(r.time_us) FROM events r WHERE r.org_id = i.org_id "
            "AND r.service = i.service AND r.type = 'incident-resolved' "
            "AND r.time_us > i.time_us) - i.time_us FROM events i "
            f"WHERE i.org_id = {p} AND i.type = 'incident' AND i.time_us >= {p} "
            f"AND i.time_us < {p}"
        ),
    }


def _floor(raw: Any, sql: dict[str, str], org_id: str, lo: int, hi: int, monday: int) -> Any:
    weeks = raw.execute(sql["weeks"], (monday, org_id, lo, hi)).fetchall()
    failed_row = raw.execute(sql["failed"], (org_id, lo, hi)).fetchone()
    attempted = raw.execute(sql["attempted"], (org_id, lo, hi)).fetchone()[0]
    leads = [
        r[0] for r in raw.execute(sql["lead"], (org_id, lo - 90 * _DAY_US, hi, lo, hi)).fetchall()
    ]
    restores = [r[0] for r in raw.execute(sql["restore"], (org_id, lo, hi)).fetchall()]
    return {
        "deployments": sum(int(w[1]) for w in weeks),
        "failed": int(failed_row[0]),
        "attempted": int(attempted),
        "lead": statistics.median(leads) / 1e6 if leads else None,
        "changes": len(leads),
        "restore": statistics.median([r for r in restores if r is not None]) / 1e6,
    }


def _figures(answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "deployments": answer["deployment_frequency"]["deployments"],
        "failed": answer["change_failure_rate"]["failed"],
        "attempted": answer["change_failure_rate"]["deployments"],
        "lead": answer["lead_time"]["median_seconds"],
        "changes": answer["lead_time"]["changes"],
        "restore": answer["time_to_restore"]["median_seconds"],
    }


def run_backend(backend: Backend, directory: Path, *, deployments: int, repeat: int) -> bool:
    with bench_database(backend, "dora", directory) as bench:
        org_id, token = create_org_with_key(bench.url, "bench")
        db = Database(bench.url)
        raw: sqlite3.Connection | psycopg.Connection[Any] = (
            raw_sqlite(bench.driver_url)
            if backend == "sqlite"
            else psycopg.connect(bench.driver_url)
        )
        try:
            return asyncio.run(_measure(backend, db, raw, token, deployments, repeat, org_id))
        finally:
            raw.close()
            db.close()


async def _measure(
    backend: Backend,
    db: Database,
    raw: Any,
    token: str,
    deployments: int,
    repeat: int,
    org_id: str,
) -> bool:
    principal = await authenticate(db, token)
    now = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    stored = await _load(db, principal, deployments, now)
    print(f"{backend}: {stored:,} events stored in {time.perf_counter() - started:.0f} s")
    if backend == "postgres":
        raw.execute("ANALYZE")
    frm = now - timedelta(days=_DAYS)
    lo, hi = clock.to_us(frm), clock.to_us(now)
    monday = clock.to_us(
        datetime(frm.year, frm.month, frm.day, tzinfo=UTC) - timedelta(days=frm.weekday())
    )
    sql = _sql(backend)

    async def tool() -> dict[str, Any]:
        return await get_dora_metrics(db, principal, from_=frm.isoformat(), to=now.isoformat())

    answer = await tool()
    floor = _floor(raw, sql, org_id, lo, hi, monday)
    tool_s: list[float] = []
    floor_s: list[float] = []
    for i in range(repeat):
        for step in ("tool", "floor") if i % 2 == 0 else ("floor", "tool"):
            began = time.perf_counter()
            if step == "tool":
                answer = await tool()
                tool_s.append(time.perf_counter() - began)
            else:
                floor = _floor(raw, sql, org_id, lo, hi, monday)
                floor_s.append(time.perf_counter() - began)
    figures = _figures(answer)
    if figures != floor:
        print(f"{backend}: the figures differ: get_dora_metrics {figures}, raw SQL {floor}")
        return False
    t, f = percentile(tool_s, 0.5), percentile(floor_s, 0.5)
    ratio = t / f
    met = ratio <= 2.0
    print(
        f"{backend}: get_dora_metrics(360 days, {figures['attempted']:,} deployments, "
        f"{figures['changes']:,} changes) p50 {t * 1000:.0f} ms, raw SQL aggregation p50 "
        f"{f * 1000:.0f} ms, ratio {ratio:.2f} (target <= 2) {'met' if met else 'MISSED'}"
    )
    print(f"{backend}: figures {figures}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    deployments = 1_000 if args.quick else 100_000
    repeat = 2 if args.quick else args.repeat
    return run_backends(
        "dora",
        args.backend,
        lambda backend, directory: run_backend(
            backend, directory, deployments=deployments, repeat=repeat
        ),
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
