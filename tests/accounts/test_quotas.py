"""Quotas: the free plan's daily and monthly event limits, when they reset, and its member limit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import anyio
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.factories import event, make_key, make_org
from trailmap import clock
from trailmap.accounts import Organization, add_user
from trailmap.accounts.plans import PLANS
from trailmap.accounts.quotas import month_period, seconds_until_reset
from trailmap.app import create_app
from trailmap.errors import Conflict, Forbidden
from trailmap.settings import Settings
from trailmap.storage import Connection, Database

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class FreeOrg:
    org: Organization
    headers: dict[str, str]


async def free_org(db: Database) -> FreeOrg:
    org = await make_org(db, plan="free")
    token = await make_key(db, org, scope="read-write")
    return FreeOrg(org=org, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
async def free(db: Database) -> FreeOrg:
    return await free_org(db)


async def push(client: httpx.AsyncClient, org: FreeOrg, count: int) -> httpx.Response:
    items = [event() for _ in range(count)]
    return await client.post("/api/v1/events", json=items, headers=org.headers)


def seed_usage(db: Database, org: Organization, metric: str, period: str, count: int) -> None:
    def insert(conn: Connection) -> None:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        conn.exec_driver_sql(
            "INSERT INTO usage_counters (org_id, metric, period, count) "  # noqa: S608 - placeholders only
            f"VALUES ({mark}, {mark}, {mark}, {mark})",
            (org.id, metric, period, count),
        )

    db.write_sync(insert)


def stored_events(db: Database) -> int:
    count = db.read_sync(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM events").scalar())
    return int(count or 0)


# -- the day limit ---------------------------------------------------------------------------------


async def test_the_free_plan_takes_100_events_a_day_then_refuses_until_midnight_utc(
    client: httpx.AsyncClient, free: FreeOrg, db: Database
) -> None:
    filled = await push(client, free, 100)
    assert filled.status_code == 201, filled.text
    assert filled.json()["data"]["counts"]["accepted"] == 100

    longest = seconds_until_reset(clock.now(), monthly=False)
    refused = await push(client, free, 1)
    shortest = seconds_until_reset(clock.now(), monthly=False)
    assert refused.status_code == 429
    body = refused.json()
    assert body["success"] is False
    assert body["code"] == "QUOTA_EXCEEDED"
    assert body["error"] == (
        "The free plan allows 100 events a day and today's are used up; "
        "the count resets at midnight UTC."
    )
    assert shortest <= int(refused.headers["retry-after"]) <= longest
    assert stored_events(db) == 100


async def test_a_batch_that_crosses_the_day_limit_stores_what_fits_and_says_why_not_the_rest(
    client: httpx.AsyncClient, free: FreeOrg, db: Database
) -> None:
    assert (await push(client, free, 95)).status_code == 201
    response = await push(client, free, 10)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["counts"] == {"accepted": 5, "duplicates": 0, "rejected": 5}
    assert [r["index"] for r in data["rejected"]] == [5, 6, 7, 8, 9]
    assert {r["code"] for r in data["rejected"]} == {"QUOTA_EXCEEDED"}
    assert "100 events a day" in data["rejected"][0]["message"]
    assert stored_events(db) == 100


async def test_a_duplicate_costs_nothing_once_the_quota_is_used_up(
    client: httpx.AsyncClient, free: FreeOrg
) -> None:
    first = event(id="again")
    assert (
        await client.post("/api/v1/events", json=first, headers=free.headers)
    ).status_code == 201
    assert (await push(client, free, 99)).status_code == 201
    repeat = await client.post("/api/v1/events", json=first, headers=free.headers)
    assert repeat.status_code == 200
    assert repeat.json()["data"]["counts"] == {"accepted": 0, "duplicates": 1, "rejected": 0}


async def test_each_organization_has_its_own_quota(
    client: httpx.AsyncClient, free: FreeOrg, db: Database
) -> None:
    assert (await push(client, free, 100)).status_code == 201
    other = await free_org(db)
    assert (await push(client, other, 1)).status_code == 201
    assert (await push(client, free, 1)).status_code == 429


# -- the month limit -------------------------------------------------------------------------------


async def test_the_free_plan_takes_1000_events_a_month_then_refuses_until_the_first(
    client: httpx.AsyncClient, free: FreeOrg, db: Database
) -> None:
    seed_usage(db, free.org, "events/month", month_period(clock.now()), 1_000)

    longest = seconds_until_reset(clock.now(), monthly=True)
    refused = await push(client, free, 1)
    shortest = seconds_until_reset(clock.now(), monthly=True)
    assert refused.status_code == 429
    assert refused.json()["code"] == "QUOTA_EXCEEDED"
    assert refused.json()["error"] == (
        "The free plan allows 1000 events a month and this month's are used up; "
        "the count resets on the first of the month (UTC)."
    )
    assert shortest <= int(refused.headers["retry-after"]) <= longest
    assert stored_events(db) == 0


async def test_the_month_limit_counts_what_is_left_of_it(
    client: httpx.AsyncClient, free: FreeOrg, db: Database
) -> None:
    seed_usage(db, free.org, "events/month", month_period(clock.now()), 998)
    response = await push(client, free, 5)
    assert response.status_code == 200
    assert response.json()["data"]["counts"] == {"accepted": 2, "duplicates": 0, "rejected": 3}


async def test_last_months_usage_does_not_count_this_month(
    client: httpx.AsyncClient, free: FreeOrg, db: Database
) -> None:
    last_month = month_period(clock.now().replace(day=1) - timedelta(days=1))
    seed_usage(db, free.org, "events/month", last_month, 1_000)
    assert (await push(client, free, 1)).status_code == 201


async def test_a_self_hosted_organization_has_no_event_limit(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    headers = {"Authorization": f"Bearer {await make_key(db, org)}"}
    seed_usage(db, org, "events/month", month_period(clock.now()), 1_000_000)
    items = [event() for _ in range(150)]
    response = await client.post("/api/v1/events", json=items, headers=headers)
    assert response.status_code == 201
    assert response.json()["data"]["counts"]["accepted"] == 150


# -- when the counts reset -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "monthly", "until"),
    [
        (datetime(2026, 3, 10, 23, 59, 30, tzinfo=UTC), False, timedelta(seconds=30)),
        (datetime(2026, 3, 10, 12, 0, tzinfo=UTC), False, timedelta(hours=12)),
        (datetime(2026, 3, 11, 0, 0, tzinfo=UTC), False, timedelta(days=1)),
        # 20:00 in New York is 00:00 UTC the next day: the reset is midnight UTC, not local.
        (
            datetime(2026, 3, 10, 20, 0, tzinfo=timezone(timedelta(hours=-4))),
            False,
            timedelta(days=1),
        ),
        (datetime(2026, 2, 28, 12, 0, tzinfo=UTC), True, timedelta(hours=12)),
        (datetime(2026, 3, 1, 0, 0, tzinfo=UTC), True, timedelta(days=31)),
        (datetime(2026, 4, 15, 0, 0, tzinfo=UTC), True, timedelta(days=16)),
        (datetime(2026, 12, 31, 23, 0, tzinfo=UTC), True, timedelta(hours=1)),
        (datetime(2028, 2, 28, 0, 0, tzinfo=UTC), True, timedelta(days=2)),  # a leap year
        (datetime(2026, 3, 31, 23, 59, 59, 500_000, tzinfo=UTC), True, timedelta(seconds=0.5)),
    ],
)
def test_retry_after_runs_until_midnight_utc_or_the_first_of_next_month(
    now: datetime, monthly: bool, until: timedelta
) -> None:
    seconds = seconds_until_reset(now, monthly=monthly)
    # Never before the reset, and at most a second after it.
    assert until.total_seconds() <= seconds <= until.total_seconds() + 1


# -- members -------------------------------------------------------------------------------------


async def test_the_free_plan_allows_two_members_and_refuses_the_third(db: Database) -> None:
    org = await make_org(db, plan="free")
    assert (await add_user(db, "ada@example.com", org_slug=org.slug, role="owner")).created
    assert (await add_user(db, "grace@example.com", org_slug=org.slug)).created
    with pytest.raises(Forbidden) as raised:
        await add_user(db, "linus@example.com", org_slug=org.slug)
    assert raised.value.message == (
        f"The free plan allows 2 members and {org.slug} has 2; remove one or change plan."
    )
    users = db.read_sync(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM users").scalar())
    assert users == 2  # the refused user was not left behind


async def test_adding_an_existing_member_again_says_so_even_on_a_full_plan(db: Database) -> None:
    org = await make_org(db, plan="free")
    await add_user(db, "ada@example.com", org_slug=org.slug, role="owner")
    await add_user(db, "grace@example.com", org_slug=org.slug)
    with pytest.raises(Conflict, match="already a member"):
        await add_user(db, "grace@example.com", org_slug=org.slug)


async def test_a_self_hosted_organization_has_no_member_limit(db: Database) -> None:
    org = await make_org(db)
    for n in range(5):
        await add_user(db, f"user{n}@example.com", org_slug=org.slug)


# -- counted atomically, and what else is metered (the audit's hole 8) -----------------------------


async def test_concurrent_batches_never_take_more_than_the_day_allows(
    free: FreeOrg, settings: Settings, database_url: str
) -> None:
    # Twenty batches of ten at once: before, each read the count and added to it, so on
    # PostgreSQL twice the day's 100 events could be accepted.
    databases = [Database(database_url) for _ in range(4)]  # as separate app nodes would
    try:
        clients = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(settings, database=node)),
                base_url="http://testserver",
            )
            for node in databases
        ]
        statuses: list[int] = []

        async def send(client: httpx.AsyncClient) -> None:
            statuses.append((await push(client, free, 10)).status_code)

        async with anyio.create_task_group() as group:
            for n in range(20):
                group.start_soon(send, clients[n % len(clients)])
        for client in clients:
            await client.aclose()
        assert stored_events(databases[0]) <= 100
        assert stored_events(databases[0]) == 100  # and the day's allowance is used whole
        assert statuses.count(429) >= 10
    finally:
        for node in databases:
            node.close()


def _points(count: int, *, series: int = 1) -> list[dict[str, object]]:
    at = (clock.now() - timedelta(minutes=5)).isoformat()
    return [
        {"name": "queue_depth", "value": n, "time": at, "labels": {"queue": f"q{n % series}"}}
        for n in range(count)
    ]


async def test_metric_series_beyond_the_plan_are_refused_and_the_rest_kept(
    client: httpx.AsyncClient, free: FreeOrg
) -> None:
    # A free organization once stored 50,000 series in five requests.
    limit = PLANS["free"].series
    assert limit is not None
    sent = await client.post(
        "/api/v1/metrics", json=_points(limit + 5, series=limit + 5), headers=free.headers
    )
    assert sent.status_code == 200, sent.text
    body = sent.json()["data"]
    assert body["counts"] == {"accepted": limit, "rejected": 5}
    assert {r["code"] for r in body["rejected"]} == {"QUOTA_EXCEEDED"}
    assert "metric series" in body["rejected"][0]["message"]
    # Known series keep taking points; new ones stay refused.
    again = await client.post("/api/v1/metrics", json=_points(3, series=3), headers=free.headers)
    assert again.json()["data"]["counts"] == {"accepted": 3, "rejected": 0}


async def test_metric_points_beyond_the_day_are_refused_with_quota_exceeded(
    client: httpx.AsyncClient, free: FreeOrg, db: Database
) -> None:
    limit = PLANS["free"].metric_points_per_day
    assert limit is not None
    seed_usage(db, free.org, "metric_points/day", clock.now().strftime("%Y-%m-%d"), limit - 2)
    sent = await client.post("/api/v1/metrics", json=_points(5), headers=free.headers)
    body = sent.json()["data"]
    assert body["counts"] == {"accepted": 2, "rejected": 3}
    assert [r["index"] for r in body["rejected"]] == [2, 3, 4]
    assert all(r["code"] == "QUOTA_EXCEEDED" for r in body["rejected"])


def _spans_export(count: int) -> bytes:
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value="checkout"))
    )
    scope = resource.scope_spans.add()
    now_ns = clock.now_us() * 1_000
    for i in range(count):
        span = scope.spans.add()
        span.trace_id = (i + 1).to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = "GET /"
        span.kind = Span.SpanKind.SPAN_KIND_SERVER
        span.start_time_unix_nano = now_ns - 1_000_000
        span.end_time_unix_nano = now_ns
    encoded: bytes = request.SerializeToString()
    return encoded


async def test_spans_beyond_the_day_refuse_the_export_whole_with_retry_after(
    client: httpx.AsyncClient, free: FreeOrg, db: Database
) -> None:
    limit = PLANS["free"].spans_per_day
    assert limit is not None
    seed_usage(db, free.org, "spans/day", clock.now().strftime("%Y-%m-%d"), limit - 5)
    headers = {**free.headers, "Content-Type": "application/x-protobuf"}
    refused = await client.post(
        "/api/v1/otlp/v1/traces", content=_spans_export(10), headers=headers
    )
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "QUOTA_EXCEEDED"
    assert int(refused.headers["Retry-After"]) >= 1
    # All or none: the refused export took nothing, so five more still fit.
    accepted = await client.post(
        "/api/v1/otlp/v1/traces", content=_spans_export(5), headers=headers
    )
    assert accepted.status_code == 200, accepted.text
