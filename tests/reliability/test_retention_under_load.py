"""Retention under load: while clients keep sending events and metric points, the purge
deletes exactly what lies outside each organization's window, and nothing inside it, as
the purge job does inside a running server (same app, same database, same writer).

Alone: `scripts/reliability tests/reliability/test_retention_under_load.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.factories import make_key, make_org
from tests.reliability.forms import FULL, scale
from tests.timeline.test_retention import metric_times, remaining, row_at
from trailmap.accounts import Organization, get_org
from trailmap.accounts.organizations import set_retention
from trailmap.app import create_app
from trailmap.jobs.retention import purge_expired
from trailmap.settings import Settings
from trailmap.storage import Connection, Database
from trailmap.storage.events import insert_events
from trailmap.storage.metrics import add_points, add_series

pytestmark = pytest.mark.anyio

# Enough old rows that the purge takes several of its 5,000-row chunks, each its own
# transaction, between which the ingestion's writes go through.
OLD_EVENTS = int(scale(4_000, 40_000))
OLD_POINTS = int(scale(2_000, 20_000))
WINDOWS = (7, 30, 365)  # days, one organization each
CLIENTS = 6
PURGES = int(scale(2, 6))
_DAY_US = 86_400_000_000


@dataclass
class Tenant:
    org: Organization
    key: str
    inside_events: set[str] = field(default_factory=set)
    outside_events: set[str] = field(default_factory=set)
    inside_point_times: list[int] = field(default_factory=list)
    sent_events: set[str] = field(default_factory=set)
    sent_point_times: set[int] = field(default_factory=set)


@pytest.fixture
async def app_client(database_url: str, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=database_url, retention_purge_interval_seconds=0)
    app = create_app(settings, database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def test_the_purge_deletes_exactly_what_is_outside_each_window_while_ingestion_goes_on(
    db: Database, app_client: httpx.AsyncClient
) -> None:
    now = datetime.now(UTC)
    tenants = [await _tenant(db, days, now) for days in WINDOWS]

    purging = asyncio.Event()
    purged = asyncio.Event()
    during = itertools.count()
    reports = []

    async def purge() -> None:
        await purging.wait()
        reports.extend([await purge_expired(db, now=now) for _ in range(PURGES)])
        purged.set()

    async def ingest(n: int) -> None:
        after = 0
        for batch in itertools.count():
            tenant = tenants[(n + batch) % len(tenants)]
            await _send(app_client, tenant, n, batch)
            purging.set()  # the purge starts once ingestion is under way
            if purged.is_set():
                after += 1
                if after >= 3:  # ingestion outlives the purge
                    return
            else:
                next(during)

    started = time.monotonic()
    await asyncio.gather(purge(), *(ingest(n) for n in range(CLIENTS)))
    elapsed = time.monotonic() - started
    overlapping = next(during)

    left = remaining(db)
    points = metric_times(db)
    for tenant in tenants:
        events_left = left.get(tenant.org.id, set())
        assert not tenant.outside_events & events_left, "an event outside the window is left"
        assert tenant.inside_events <= events_left, "an event inside the window was deleted"
        assert tenant.sent_events <= events_left, "an event sent during the purge was lost"
        cutoff_us = _us(now - timedelta(days=tenant.org.retention_days))
        times = points.get(tenant.org.id, [])
        assert all(t >= cutoff_us for t in times), "a metric point outside the window is left"
        assert sorted(t for t in times if t in set(tenant.inside_point_times)) == sorted(
            tenant.inside_point_times
        ), "a metric point inside the window was deleted"
        assert tenant.sent_point_times <= set(times), "a point sent during the purge was lost"
    expected_events = sum(len(t.outside_events) for t in tenants)
    expected_points = sum(OLD_POINTS - len(t.inside_point_times) for t in tenants)
    assert sum(r.deleted for r in reports) == expected_events
    assert sum(r.deleted_points for r in reports) == expected_points
    assert reports[-1].deleted == reports[-1].deleted_points == 0
    assert overlapping > 0, "no ingestion request ran while the purge did"
    sent = sum(len(t.sent_events) for t in tenants)
    print(
        f"\nretention under load on {'sqlite' if db.is_sqlite else 'postgresql'} "
        f"({'full' if FULL else 'fast'}): "
        f"{expected_events} events and {expected_points} points purged in {PURGES} purges "
        f"across {len(tenants)} organizations while {CLIENTS} clients sent {sent} events "
        f"({overlapping} requests during the purge), {elapsed:.1f} s"
    )


async def _tenant(db: Database, days: int, now: datetime) -> Tenant:
    """An organization with a `days` window and old events and points on both sides of it."""
    org = await make_org(db)
    await set_retention(db, org.slug, days)
    org = await get_org(db, org.slug)
    tenant = Tenant(org=org, key=await make_key(db, org, scope="read-write"))
    window = timedelta(days=days)
    # Ages spread over twice the window; the edge itself (exactly `days` old) stays.
    ages = [window * 2 * i / OLD_EVENTS for i in range(OLD_EVENTS)] + [window]
    rows = []
    for i, age in enumerate(ages):
        event_id = f"old-{days}-{i}"
        rows.append(row_at(now - age, event_id))
        (tenant.inside_events if age <= window else tenant.outside_events).add(event_id)
    for start in range(0, len(rows), 2_000):
        await db.write(insert_events, org.id, rows[start : start + 2_000])

    now_us = _us(now)
    step = 2 * days * _DAY_US // OLD_POINTS
    times = [now_us - i * step for i in range(OLD_POINTS)]
    tenant.inside_point_times = [t for t in times if t >= now_us - days * _DAY_US]
    point_rows: list[dict[str, object]] = [
        {"series_id": "s-old", "time_us": t, "value": 1.0} for t in times
    ]
    await db.write(_points, org.id, point_rows)
    return tenant


def _points(conn: Connection, org_id: str, rows: list[dict[str, object]]) -> None:
    add_series(
        conn,
        org_id,
        [
            {
                "series_id": "s-old",
                "name": "error_rate",
                "service": "checkout",
                "environment": "production",
                "labels": {},
                "kind": "gauge",
                "created_us": 0,
            }
        ],
    )
    add_points(conn, org_id, rows)


async def _send(http: httpx.AsyncClient, tenant: Tenant, n: int, batch: int) -> None:
    """Events and metric points of now, inside every window."""
    headers = {"Authorization": f"Bearer {tenant.key}"}
    ids = [f"live-{n}-{batch}-{i}" for i in range(10)]
    body = [
        {"specversion": "1.0", "id": i, "type": "deployment", "source": "//ci/live", "time": "NOW"}
        for i in ids
    ]
    sent = await http.post("/api/v1/events", json=body, headers=headers)
    assert sent.status_code < 300, sent.text
    assert sent.json()["data"]["counts"]["accepted"] == len(ids)
    tenant.sent_events.update(ids)
    # A time of its own per point: stored once per series and time.
    moment = datetime.now(UTC) + timedelta(microseconds=n * 1_000 + batch % 1_000)
    point = {"name": "live", "value": 1.0, "time": moment.isoformat(), "service": f"c{n}"}
    pushed = await http.post("/api/v1/metrics", json=[point], headers=headers)
    assert pushed.status_code < 300, pushed.text
    assert pushed.json()["data"]["counts"]["accepted"] == 1, pushed.text
    tenant.sent_point_times.add(_us(moment))


def _us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond
