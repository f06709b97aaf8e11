"""What the guardrail check adds to a deployment's ingestion, beside ingestion without rules.

    .venv/bin/python benchmarks/guardrails.py [--backend sqlite|postgres|both]
                                              [--shape busy|one-service|both]
                                              [--deployments N] [--quick]

Two organizations on one fresh database: one with no guardrails, one with every kind of rule
(six policies, one of each kind, and four freeze windows, two one-off and two weekly, all
covering every service), both with the same history of earlier deployments. A deployment of
one event is ingested in-process through `ingest_events` (validation, the rules' read, the
history query, the judging, the insert and the commit through the database's writer:
everything but HTTP), N times for each organization, alternating, so that a neighbour's load
falls on both alike. The daily cap is 10,000, never reached, so its count never stops early:
the most the counting can cost for the deployments there are. Every deployment of the
guarded organization is flagged (the velocity limit of 1 an hour sees the one before).

Two shapes of history:
- `busy` (the target): 50 services, each deployed 30 times a day over the last week (10,500
  earlier deployments), the N measured deployments spread over the services in turn: a busy
  organization's day.
- `one-service` (the worst case, for information): 500 earlier deployments of one service in
  the last week, and all N measured deployments of that one service, so that its day grows
  to N deployments, each counted again by the daily cap (its cost grows with the day's
  deployments, bounded by the cap).

Figures: the p50 of each, the difference (what the check adds) and their ratio. Target: the
check adds under 1 ms at p50 in the busy shape; exits 1 when a full run misses it.
`--quick` (200 deployments) is a sanity check that never fails on a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from _common import Backend, bench_database, percentile, run_backends

from trailmap import clock
from trailmap.accounts import create_org, get_org
from trailmap.accounts.audit import OPERATOR
from trailmap.accounts.principal import Principal
from trailmap.accounts.team import OPERATOR_AUTHORITY
from trailmap.guardrails.guardrails import create_freeze, create_policy, flag_deployments
from trailmap.storage import Database
from trailmap.timeline.events import validate_event
from trailmap.timeline.ingest import ingest_events

TARGET_ADDED_MS = 1.0
# (services, earlier deployments of each over the last week) per shape.
_SHAPES: dict[str, tuple[int, int]] = {"busy": (50, 210), "one-service": (1, 500)}
_POLICIES: list[dict[str, Any]] = [
    {"kind": "blocked_days", "settings": {"days": ["sun"], "timezone": "Europe/Paris"}},
    {"kind": "allowed_hours", "settings": {"start": "00:00", "end": "23:59", "timezone": "UTC"}},
    {"kind": "daily_cap", "settings": {"max": 10_000, "timezone": "America/New_York"}},
    {"kind": "cooldown", "settings": {"minutes": 30}},
    {"kind": "max_rollback_rate", "settings": {"max_percent": 50, "window_days": 7}},
    {"kind": "max_velocity_per_hour", "settings": {"max": 1}},
]
_FREEZES: list[dict[str, Any]] = [
    {"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"},
    {"start": "2036-01-01T00:00:00Z", "end": "2036-01-02T00:00:00Z"},
    {"recurrence": {"days": ["fri"], "start": "16:00", "end_day": "mon", "end": "08:00",
                    "timezone": "Europe/Paris"}},
    {"recurrence": {"days": ["mon", "tue", "wed", "thu"], "start": "22:00", "end": "06:00",
                    "timezone": "America/New_York"}},
]  # fmt: skip


def _principal(org: Any) -> Principal:
    return Principal(
        org_id=org.id,
        org_slug=org.slug,
        plan=org.plan,
        retention_days=org.retention_days,
        scope="READ_WRITE",
    )


def _deployment(
    n: int, label: str, services: int, when: str = "NOW", kind: str = "deployment"
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{label}-{n}",
        "type": kind,
        "source": f"//github.com/acme/service-{n % services}",
        "time": when,
        "subject": "production",
        "version": f"v{n}",
    }


async def _setup(db: Database, services: int, history: int) -> tuple[Principal, Principal]:
    await create_org(db, "plain")
    await create_org(db, "guarded")
    guarded = await get_org(db, "guarded")
    for i, policy in enumerate(_POLICIES):
        await create_policy(
            db, guarded.id, {"name": f"p{i}", **policy}, who=OPERATOR_AUTHORITY, by=OPERATOR
        )
    for i, freeze in enumerate(_FREEZES):
        await create_freeze(
            db, guarded.id, {"name": f"f{i}", **freeze}, who=OPERATOR_AUTHORITY, by=OPERATOR
        )
    plain_p, guarded_p = _principal(await get_org(db, "plain")), _principal(guarded)
    # A week of earlier deployments of each service, in both (the same table size).
    now = clock.now()
    total = services * history
    earlier = [
        _deployment(
            i,
            "history",
            services,
            (now - timedelta(days=7) * (i + 1) / (total + 1)).isoformat(),
            "rollback" if i % 10 == 0 else "deployment",
        )
        for i in range(total)
    ]
    for principal in (plain_p, guarded_p):
        for start in range(0, len(earlier), 500):
            await ingest_events(
                db, principal, list(earlier[start : start + 500]), max_event_bytes=64 * 1024
            )
    return plain_p, guarded_p


async def _measure(
    db: Database, principal: Principal, n: int, label: str, services: int
) -> tuple[float, int]:
    event = _deployment(n, label, services)
    started = time.perf_counter()
    result = await ingest_events(db, principal, [event], max_event_bytes=64 * 1024)
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, len(result.accepted[0].get("violations", ()))


async def _check_alone(db: Database, principal: Principal, n: int, services: int) -> float:
    """The check by itself, timed inside the writer's transaction (no insert, no commit
    wait): what it adds to the transaction, apart from the machine's scheduling."""
    row = validate_event(
        _deployment(n, "alone", services), index=0, now=clock.now(), max_bytes=64 * 1024
    )
    assert not isinstance(row, list), row

    def judge(conn: Any) -> float:
        started = time.perf_counter()
        flag_deployments(conn, principal.org_id, [dict(row.values)])
        return (time.perf_counter() - started) * 1000

    elapsed: float = await db.write(judge)
    return elapsed


async def _run(url: str, deployments: int, shape: str, backend: Backend) -> dict[str, Any]:
    services, history = _SHAPES[shape]
    db = Database(url)
    try:
        plain, guarded = await _setup(db, services, history)
        if backend == "postgres":
            # As autovacuum would have by now on a live server: without statistics, the
            # planner takes a fresh table for empty and walks the organization's whole index.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE events")
        times: dict[str, list[float]] = {"plain": [], "guarded": []}
        flagged = 0
        for n in range(deployments):
            order = [("plain", plain), ("guarded", guarded)]
            if n % 2:
                order.reverse()  # neither always goes first
            for label, principal in order:
                elapsed, violations = await _measure(db, principal, n, label, services)
                times[label].append(elapsed)
                flagged += violations if label == "guarded" else 0
        alone: dict[str, list[float]] = {"plain": [], "guarded": []}
        for n in range(deployments):
            for label, principal in (("plain", plain), ("guarded", guarded)):
                alone[label].append(await _check_alone(db, principal, n, services))
        return {"times": times, "flagged": flagged, "alone": alone}
    finally:
        db.close()


def _one_shape(backend: Backend, directory: Path, shape: str, deployments: int) -> bool:
    """Measure one shape; True when it meets the target or is not the one with a target."""
    services, history = _SHAPES[shape]
    with bench_database(backend, f"guardrails-{shape}", directory) as bench:
        measured = asyncio.run(_run(bench.url, deployments, shape, backend))
    times = measured["times"]
    # The first few warm caches and prepared statements: left out of both alike.
    warm = min(20, deployments // 10)
    plain = percentile(times["plain"][warm:], 50)
    guarded = percentile(times["guarded"][warm:], 50)
    added = guarded - plain
    targeted = shape == "busy"
    met = added < TARGET_ADDED_MS
    verdict = ("met" if met else "MISSED") if targeted else "for information, no target"
    alone = {k: percentile(v[warm:], 50) for k, v in measured["alone"].items()}
    print(
        f"{backend}, {shape}: {deployments} deployments each over {services} service(s), "
        f"{len(_POLICIES)} policies + {len(_FREEZES)} freezes, {services * history} earlier "
        f"deployments; p50 without rules {plain:.3f} ms, with rules {guarded:.3f} ms "
        f"(p95 {percentile(times['plain'][warm:], 95):.3f} / "
        f"{percentile(times['guarded'][warm:], 95):.3f} ms); the check adds {added:.3f} ms "
        f"at p50 (ratio {guarded / plain:.2f}); {measured['flagged']} violations found; "
        f"target added < {TARGET_ADDED_MS:.0f} ms: {verdict}; "
        f"the check alone in the transaction, p50: {alone['guarded']:.3f} ms with rules, "
        f"{alone['plain']:.3f} ms without (the rule ids' read)",
        flush=True,
    )
    return met or not targeted


def run_backend(backend: Backend, directory: Path, args: argparse.Namespace) -> bool:
    shapes = list(_SHAPES) if args.shape == "both" else [args.shape]
    results = [_one_shape(backend, directory, shape, args.deployments) for shape in shapes]
    return all(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--deployments", type=int, default=2000, help="default 2,000")
    parser.add_argument("--shape", default="both", choices=[*_SHAPES, "both"])
    parser.add_argument("--quick", action="store_true", help="200 deployments; no target")
    args = parser.parse_args(argv)
    if args.quick:
        args.deployments = 200
    return run_backends(
        "guardrails",
        args.backend,
        lambda backend, directory: run_backend(backend, directory, args),
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
