"""Retention: nothing older than an organization's window is ever shown, and the purge deletes
exactly what lies outside each organization's own window.

Ingestion refuses events that are already too old, so old rows are written straight to the
events table, built by `validate_event` as of the old time so that they are otherwise valid.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.factories import event, make_key, make_org, principal_for
from trailmap.accounts import Organization, get_org
from trailmap.accounts.organizations import set_retention
from trailmap.cli.main import cli
from trailmap.errors import NotFound
from trailmap.jobs.retention import purge_expired
from trailmap.storage import Connection, Database
from trailmap.storage.events import insert_events
from trailmap.storage.metrics import add_points, add_series
from trailmap.timeline.events import EventRow, validate_event
from trailmap.timeline.queries import (
    EventQuery,
    get_event,
    list_facet,
    query_events,
    summarize_events,
)

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def row_at(moment: datetime, event_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid events row whose time is `moment` (as if it had been sent then)."""
    outcome = validate_event(
        event(id=event_id, **overrides), index=0, now=moment, max_bytes=10 * 1024
    )
    assert isinstance(outcome, EventRow), outcome
    return outcome.values


async def put(db: Database, org: Organization, rows: list[dict[str, Any]]) -> list[str]:
    """Write rows directly; return their Trailmap ids."""
    inserted = await db.write(insert_events, org.id, rows)
    assert len(inserted) == len(rows)
    return [r["id"] for r in rows]


def remaining(db: Database) -> dict[str, set[str]]:
    """The producer ids left in the events table, per organization id."""

    def read(conn: Connection) -> list[Any]:
        return list(conn.exec_driver_sql("SELECT org_id, event_id FROM events").fetchall())

    left: dict[str, set[str]] = defaultdict(set)
    for org_id, event_id in db.read_sync(read):
        left[org_id].add(event_id)
    return dict(left)


# -- queries ----------------------------------------------------------------------------------


async def test_no_query_returns_an_event_older_than_the_window(db: Database) -> None:
    org = await make_org(db, plan="free")  # 7 days
    week = timedelta(days=7)
    old, outside, edge, recent = await put(
        db,
        org,
        [
            row_at(NOW - timedelta(days=8), "old", type="incident", subject="qa"),
            row_at(NOW - week - _MICROSECOND, "outside", type="incident", subject="qa"),
            row_at(NOW - week, "edge"),
            row_at(NOW - timedelta(days=6), "recent"),
        ],
    )
    principal = principal_for(org)

    page = await query_events(db, principal, EventQuery(from_="-30d"), now=NOW)
    assert [e["event_id"] for e in page.events] == ["recent", "edge"]
    assert page.range.clipped
    # Filters that match only the old events cannot bring them back.
    for query in (
        EventQuery(from_="-30d", types=["incident"]),
        EventQuery(from_="-30d", subjects=["qa"]),
        EventQuery(from_="-30d", search="incident qa"),
    ):
        assert (await query_events(db, principal, query, now=NOW)).events == [], query
    up_to_the_edge = await query_events(
        db, principal, EventQuery(from_="2026-01-01", to="-7d"), now=NOW
    )
    assert [e["event_id"] for e in up_to_the_edge.events] == ["edge"]
    before = await query_events(db, principal, EventQuery(from_="-30d", to="-8d"), now=NOW)
    assert before.events == []
    assert before.range.before_retention

    assert (await get_event(db, principal, edge, now=NOW))["event_id"] == "edge"
    for stale in (old, outside):
        with pytest.raises(NotFound) as raised:
            await get_event(db, principal, stale, now=NOW)
        assert raised.value.message == f"No event with the id {stale!r} in this organization."

    summary = await summarize_events(db, principal, from_="-30d", now=NOW)
    assert summary.total == 2
    assert [(f["value"], f["count"]) for f in summary.by_type] == [("deployment", 2)]
    assert [e["trailmap_id"] for e in summary.latest] == [recent, edge]
    assert await list_facet(db, principal, "subject", from_="-30d", now=NOW) == [
        {
            "value": "production",
            "count": 2,
            "last_seen": "2026-03-05T12:00:00+00:00",
            "last_seen_relative": "6 d ago",
        }
    ]


async def test_the_http_api_never_shows_an_event_older_than_the_window(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db, plan="free")
    headers = {"Authorization": f"Bearer {await make_key(db, org, scope='read-only')}"}
    now = datetime.now(UTC)
    old, recent = await put(
        db, org, [row_at(now - timedelta(days=8), "old"), row_at(now - timedelta(hours=1), "new")]
    )

    listed = await client.get("/api/v1/events", params={"from": "-30d"}, headers=headers)
    data = listed.json()["data"]
    assert [e["trailmap_id"] for e in data["events"]] == [recent]
    assert data["range"]["note"].startswith("The range starts before the retention window")

    summary = await client.get("/api/v1/events/summary", params={"from": "-30d"}, headers=headers)
    assert summary.json()["data"]["total"] == 1

    stale = await client.get(f"/api/v1/events/{old}", headers=headers)
    missing_id = "01890000-0000-7000-8000-000000000000"
    missing = await client.get(f"/api/v1/events/{missing_id}", headers=headers)
    assert stale.status_code == missing.status_code == 404
    assert stale.json() == {
        **missing.json(),
        "error": missing.json()["error"].replace(missing_id, old),
    }


# -- purge -------------------------------------------------------------------------------------


async def test_the_purge_deletes_exactly_what_is_outside_each_organizations_window(
    db: Database,
) -> None:
    free = await make_org(db, plan="free")  # the plan's 7 days
    month = await make_org(db)  # self-hosted, set to 30 days below
    await set_retention(db, month.slug, 30)
    month = await get_org(db, month.slug)
    year = await make_org(db)  # self-hosted, the default 365 days
    assert (free.retention_days, month.retention_days, year.retention_days) == (7, 30, 365)

    days = timedelta(days=1)
    await put(
        db,
        free,
        [
            row_at(NOW - 8 * days, "f-8d"),
            row_at(NOW - 7 * days - _MICROSECOND, "f-outside"),
            row_at(NOW - 7 * days, "f-edge"),
            row_at(NOW - days, "f-1d"),
        ],
    )
    await put(
        db,
        month,
        [
            row_at(NOW - 31 * days, "m-31d"),
            row_at(NOW - 30 * days, "m-edge"),
            row_at(NOW - 29 * days, "m-29d"),
            row_at(NOW - 8 * days, "m-8d"),  # would be gone on the free plan
        ],
    )
    await put(db, year, [row_at(NOW - 366 * days, "y-366d"), row_at(NOW - 300 * days, "y-300d")])

    report = await purge_expired(db, now=NOW)
    assert (report.organizations, report.deleted) == (3, 4)
    assert remaining(db) == {
        free.id: {"f-edge", "f-1d"},
        month.id: {"m-edge", "m-29d", "m-8d"},
        year.id: {"y-300d"},
    }

    again = await purge_expired(db, now=NOW)
    assert again.deleted == 0


async def test_the_purge_leaves_other_organizations_alone_when_it_deletes_many(
    db: Database,
) -> None:
    free = await make_org(db, plan="free")
    other = await make_org(db)
    old = NOW - timedelta(days=9)
    await put(db, free, [row_at(old, f"old-{i}") for i in range(120)])
    # The same producer ids in another organization with a longer window.
    await put(db, other, [row_at(old, f"old-{i}") for i in range(120)])

    report = await purge_expired(db, now=NOW)
    assert report.deleted == 120
    assert remaining(db) == {other.id: {f"old-{i}" for i in range(120)}}


def test_trailmap_db_purge_deletes_expired_events_now(database_url: str, db: Database) -> None:
    runner = CliRunner()
    created = runner.invoke(
        cli, ["--database", database_url, "org", "create", "acme", "--plan", "free"]
    )
    assert created.exit_code == 0, created.output
    org = asyncio.run(get_org(db, "acme"))
    now = datetime.now(UTC)
    rows = [row_at(now - timedelta(days=8), "expired"), row_at(now - timedelta(days=1), "kept")]
    db.write_sync(insert_events, org.id, rows)

    purged = runner.invoke(cli, ["--database", database_url, "db", "purge"])
    assert purged.exit_code == 0, purged.output
    assert "deleted 1 events across 1 organizations" in purged.stderr
    assert remaining(db) == {org.id: {"kept"}}


def metric_times(db: Database) -> dict[str, list[int]]:
    """Per organization id, the times (µs) of its metric points and span minutes."""

    def read(conn: Connection) -> list[Any]:
        return list(
            conn.exec_driver_sql(
                "SELECT org_id, time_us FROM metric_points "
                "UNION ALL SELECT org_id, minute_us FROM graph_minutes"
            ).fetchall()
        )

    left: dict[str, list[int]] = defaultdict(list)
    for org_id, time_us in db.read_sync(read):
        left[org_id].append(time_us)
    return {org_id: sorted(times) for org_id, times in left.items()}


async def test_the_purge_deletes_metric_points_and_span_minutes_outside_each_window(
    db: Database,
) -> None:
    free = await make_org(db, plan="free")  # 7 days
    month = await make_org(db)  # self-hosted, set to 30 days below
    await set_retention(db, month.slug, 30)
    day_us = 86_400_000_000
    now_us = int(NOW.timestamp() * 1_000_000)
    ages = (40, 8, 6, 1)  # days
    for org in (free, month):
        points = [
            {"series_id": "s-1", "time_us": now_us - age * day_us, "value": float(age)}
            for age in ages
        ]
        minutes = [
            {"subject_id": "n-1", "minute_us": now_us - age * day_us, "calls": 1, "errors": 0}
            for age in ages
        ]
        db.write_sync(_metric_rows, org.id, points, minutes)

    report = await purge_expired(db, now=NOW)
    assert report.deleted_points == 2 * 2 + 2 * 1  # free: 40 and 8 days, twice; month: 40
    assert metric_times(db) == {
        free.id: sorted([now_us - 6 * day_us, now_us - day_us] * 2),
        month.id: sorted([now_us - a * day_us for a in (8, 6, 1)] * 2),
    }


def _metric_rows(
    conn: Connection, org_id: str, points: list[dict[str, Any]], minutes: list[dict[str, Any]]
) -> None:
    add_series(
        conn,
        org_id,
        [
            {
                "series_id": "s-1",
                "name": "error_rate",
                "service": "checkout",
                "environment": "production",
                "labels": {},
                "kind": "gauge",
                "created_us": 0,
            }
        ],
    )
    add_points(conn, org_id, points)
    # Written as SQL: the graph's own writer takes rows shaped for its ingestion path.
    buckets = [f"b{i:02d}" for i in range(32)]
    columns = ", ".join(
        ["org_id", "subject_id", "minute_us", "calls", "errors", "duration_ms", *buckets]
    )
    marks = ", ".join(["%s" if conn.dialect.name == "postgresql" else "?"] * (6 + len(buckets)))
    for m in minutes:
        conn.exec_driver_sql(
            f"INSERT INTO graph_minutes ({columns}) VALUES ({marks})",  # noqa: S608 - fixed names
            (org_id, m["subject_id"], m["minute_us"], m["calls"], m["errors"], 1.0, *[0] * 32),
        )
