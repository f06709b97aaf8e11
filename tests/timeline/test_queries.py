"""Asking the timeline: filters, time ranges, pagination and summaries, over HTTP and in the domain.

Domain calls pass a fixed `now`, so day boundaries and relative times are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Tenant
from tests.factories import event, make_org, principal_for
from trailmap.accounts import Organization
from trailmap.errors import ValidationFailed
from trailmap.storage import Database
from trailmap.storage import events as store_events
from trailmap.storage.database import Connection
from trailmap.storage.dialect import fetch_on_driver
from trailmap.timeline.ingest import ingest_events
from trailmap.timeline.queries import (
    EventQuery,
    get_event,
    list_facet,
    query_events,
    summarize_events,
)
from trailmap.timeline.times import format_time, resolve_timezone

pytestmark = pytest.mark.anyio

# 00:15 UTC on a Wednesday: still Tuesday in New York, already Wednesday in Paris.
NOW = datetime(2026, 3, 11, 0, 15, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def store(
    db: Database, org: Organization, items: Sequence[dict[str, Any]], *, now: datetime = NOW
) -> list[str]:
    """Ingest `items` as of `now`; return the stored ids in the order given."""
    result = await ingest_events(
        db, principal_for(org), list(items), max_event_bytes=10 * 1024, now=now
    )
    assert result.rejected == []
    assert len(result.accepted) == len(items)
    return [a["id"] for a in sorted(result.accepted, key=lambda a: a["index"])]


async def listed(
    db: Database, org: Organization, *, now: datetime = NOW, **query: Any
) -> list[str]:
    """The producer ids (`event_id`) a query returns, in the order it returns them."""
    page = await query_events(db, principal_for(org), EventQuery(**query), now=now)
    return [e["event_id"] for e in page.events]


# -- every filter, over HTTP ---------------------------------------------------------------

_FILTER_EVENTS = [
    event(
        id="e1",
        type="deployment",
        source="//github.com/acme/checkout",
        subject="production",
        severity="LOW",
        version="v2.0.0",
        data={"description": "Checkout V2 rolled out to EU"},
    ),
    event(
        id="e2",
        type="rollback",
        source="//github.com/acme/payments",
        subject="staging",
        severity="MAJOR",
        service="billing",
        version="v1.4.1",
        data={"description": "payments rolled back after errors"},
    ),
    event(
        id="e3",
        type="config-change",
        source="//argo/acme/search",
        subject="production",
        severity="CRITICAL",
        version="v9",
        data={"description": "raise the search timeout"},
    ),
    event(
        id="e4",
        type="incident",
        source="//pagerduty/acme",
        subject="production",
        service="checkout",
        version=None,
        data={"description": "Checkout latency spike"},
    ),
]


@pytest.fixture
async def filter_events(client: httpx.AsyncClient, tenant: Tenant) -> None:
    sent = await client.post("/api/v1/events", json=_FILTER_EVENTS, headers=tenant.auth())
    assert sent.status_code == 201, sent.text


async def found(
    client: httpx.AsyncClient, tenant: Tenant, params: list[tuple[str, str]]
) -> set[str]:
    response = await client.get(
        "/api/v1/events", params=tuple(params), headers=tenant.auth(tenant.reader)
    )
    assert response.status_code == 200, response.text
    return {e["event_id"] for e in response.json()["data"]["events"]}


# Checked in one test per backend (one database, one ingest); every mismatch is reported.
_FILTER_CASES: list[tuple[list[tuple[str, str]], set[str]]] = [
    ([], {"e1", "e2", "e3", "e4"}),
    ([("type", "deployment")], {"e1"}),
    ([("type", "deployment,rollback")], {"e1", "e2"}),
    ([("type", "deployment"), ("type", "rollback")], {"e1", "e2"}),
    ([("type", "release")], set()),
    ([("source", "//github.com/acme/checkout")], {"e1"}),
    ([("source", "//github.com/acme/checkout"), ("source", "//argo/acme/search")], {"e1", "e3"}),
    ([("subject", "production")], {"e1", "e3", "e4"}),
    ([("subject", "staging,production")], {"e1", "e2", "e3", "e4"}),
    ([("subject", "staging"), ("subject", "qa")], {"e2"}),
    ([("severity", "major")], {"e2"}),
    ([("severity", "LOW,CRITICAL")], {"e1", "e3"}),
    ([("severity", "LOW"), ("severity", "MAJOR")], {"e1", "e2"}),
    ([("service", "checkout")], {"e1", "e4"}),
    ([("service", "billing,search")], {"e2", "e3"}),
    ([("service", "billing"), ("service", "search")], {"e2", "e3"}),
    ([("type", "incident"), ("subject", "production"), ("service", "checkout")], {"e4"}),
    ([("type", "deployment,incident"), ("severity", "LOW")], {"e1"}),
]

_SEARCH_CASES: list[tuple[str, set[str]]] = [
    ("checkout", {"e1", "e4"}),  # source, service and description
    ("CHECKOUT v2", {"e1"}),  # every word must appear, in any case
    ("checkout payments", set()),  # words are ANDed, never ORed
    ("rollback payments", {"e2"}),  # type and source
    ("staging", {"e2"}),  # subject
    ("billing", {"e2"}),  # service
    ("v1.4.1", {"e2"}),  # version
    ("v9", {"e3"}),
    ("TIMEOUT", {"e3"}),  # description
    ("config-change", {"e3"}),
    ("argo", {"e3"}),
    ("latency spike", {"e4"}),
    ("%", set()),  # LIKE wildcards are literal text
    ("_", set()),
]


@pytest.mark.usefixtures("filter_events")
async def test_every_filter_narrows_and_accepts_commas_and_repeats(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    mismatches = {}
    for params, expected in _FILTER_CASES:
        got = await found(client, tenant, params)
        if got != expected:
            mismatches[repr(params)] = (sorted(got), sorted(expected))
    assert mismatches == {}


@pytest.mark.usefixtures("filter_events")
async def test_search_matches_all_words_case_insensitively_across_the_searchable_fields(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    mismatches = {}
    for search, expected in _SEARCH_CASES:
        got = await found(client, tenant, [("search", search)])
        if got != expected:
            mismatches[search] = (sorted(got), sorted(expected))
    assert mismatches == {}


async def test_an_unknown_severity_is_refused_naming_the_choices(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.get(
        "/api/v1/events", params={"severity": "HIGH"}, headers=tenant.auth()
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["details"][0]["field"] == "severity"
    assert "LOW, MINOR, MAJOR, CRITICAL" in body["error"]


# -- time ranges, with a fixed now ----------------------------------------------------------


async def test_relative_times_now_and_iso_bound_the_range(db: Database) -> None:
    org = await make_org(db)
    await store(
        db,
        org,
        [
            event(id="in-5m", time=iso(NOW + timedelta(minutes=5))),
            event(id="10m", time=iso(NOW - timedelta(minutes=10))),
            event(id="1h", time=iso(NOW - timedelta(hours=1))),
            event(id="3d", time=iso(NOW - timedelta(days=3))),
            event(id="10d", time=iso(NOW - timedelta(days=10))),
        ],
    )
    assert await listed(db, org, from_="-30m") == ["10m"]
    assert await listed(db, org, from_="-2h") == ["10m", "1h"]
    assert await listed(db, org, from_="-7d") == ["10m", "1h", "3d"]
    assert await listed(db, org, from_="-30d", to="now") == ["10m", "1h", "3d", "10d"]
    assert await listed(db, org, from_="-7d", to="-2h") == ["3d"]
    # Both bounds are inclusive.
    assert await listed(db, org, from_="-1h", to="-1h") == ["1h"]
    # `now` is the end by default; a future event needs a future end.
    assert await listed(db, org, from_="-30m", to="+1h") == ["in-5m", "10m"]
    assert await listed(db, org, from_="2026-03-10T23:30:00Z", to="2026-03-11T00:10:00Z") == ["10m"]
    assert await listed(db, org, from_="2026-03-10T23:00:00+00:00") == ["10m", "1h"]
    # Without a zone, ISO is wall time in the asked time zone (Paris is UTC+1 in March).
    assert await listed(db, org, from_="2026-03-11T00:30", timezone="Europe/Paris") == ["10m"]
    assert await listed(db, org, from_="2026-03-11T00:00", timezone="Europe/Paris") == [
        "10m",
        "1h",
    ]


async def test_today_and_yesterday_follow_the_asked_time_zone(db: Database) -> None:
    org = await make_org(db)
    await store(
        db,
        org,
        [
            event(id="c", time="2026-03-11T00:05:00Z"),  # today everywhere but New York
            event(id="a", time="2026-03-10T23:30:00Z"),  # yesterday in UTC, today in Paris
            event(id="b", time="2026-03-10T22:30:00Z"),  # yesterday in UTC and in Paris
            event(id="d", time="2026-03-09T12:00:00Z"),  # yesterday in New York only
        ],
    )
    assert await listed(db, org, from_="today") == ["c"]
    assert await listed(db, org, from_="today", timezone="UTC") == ["c"]
    assert await listed(db, org, from_="yesterday", to="today") == ["a", "b"]

    assert await listed(db, org, from_="today", timezone="Europe/Paris") == ["c", "a"]
    assert await listed(db, org, from_="yesterday", to="today", timezone="Europe/Paris") == ["b"]

    # New York is UTC-4 since 8 March: it is still the 10th there.
    assert await listed(db, org, from_="today", timezone="America/New_York") == ["c", "a", "b"]
    assert await listed(db, org, from_="yesterday", to="today", timezone="America/New_York") == [
        "d"
    ]

    page = await query_events(
        db,
        principal_for(org),
        EventQuery(from_="yesterday", to="today", timezone="America/New_York"),
        now=NOW,
    )
    assert format_time(page.range.start, page.range.tz) == "2026-03-09T00:00:00-04:00"
    assert format_time(page.range.end, page.range.tz) == "2026-03-10T00:00:00-04:00"


async def test_a_range_that_ends_before_it_starts_or_an_unknown_zone_is_refused(
    db: Database,
) -> None:
    org = await make_org(db)
    with pytest.raises(ValidationFailed, match=r"^from: .* is after to"):
        await listed(db, org, from_="-1h", to="-2h")
    with pytest.raises(ValidationFailed, match=r"^timezone: 'Mars/Olympus' is not a time zone"):
        await listed(db, org, timezone="Mars/Olympus")
    with pytest.raises(ValidationFailed, match=r"^from: Could not read 'last tuesday'"):
        await listed(db, org, from_="last tuesday")


@pytest.mark.parametrize(
    ("timezone", "rendered"),
    [
        ("UTC", "2026-03-10T23:30:00+00:00"),
        ("Europe/Paris", "2026-03-11T00:30:00+01:00"),
        ("America/New_York", "2026-03-10T19:30:00-04:00"),
        ("Asia/Kolkata", "2026-03-11T05:00:00+05:30"),
    ],
)
async def test_times_are_rendered_in_the_asked_time_zone_with_its_offset(
    db: Database, timezone: str, rendered: str
) -> None:
    org = await make_org(db)
    (stored_id,) = await store(db, org, [event(time="2026-03-10T23:30:00Z")])
    principal = principal_for(org)

    page = await query_events(
        db, principal, EventQuery(from_="-1d", timezone=timezone), now=NOW, full=True
    )
    assert page.events[0]["time"] == rendered
    assert page.events[0]["time_relative"] == "45 min ago"
    assert "received" not in page.events[0]  # pages stay lean; one event says when it came

    one = await get_event(db, principal, stored_id, timezone=timezone, now=NOW)
    assert one["time"] == rendered
    assert one["received"] == format_time(NOW, resolve_timezone(timezone))


async def test_the_http_api_renders_times_in_the_asked_time_zone(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sent = await client.post("/api/v1/events", json=event(), headers=tenant.auth())
    assert sent.status_code == 201
    response = await client.get(
        "/api/v1/events", params={"timezone": "Asia/Kolkata"}, headers=tenant.auth()
    )
    data = response.json()["data"]
    assert data["events"][0]["time"].endswith("+05:30")
    assert data["range"]["timezone"] == "Asia/Kolkata"
    assert data["range"]["from"].endswith("+05:30")
    assert data["range"]["to"].endswith("+05:30")


# -- pagination ---------------------------------------------------------------------------


async def test_pages_cover_every_event_once_newest_first_when_times_are_shared(
    db: Database,
) -> None:
    org = await make_org(db)
    # 57 events on 6 distinct times: ten share each minute, the last seven share one too.
    items = [event(id=f"p{i}", time=iso(NOW - timedelta(minutes=i // 10))) for i in range(57)]
    stored = await store(db, org, items)
    principal = principal_for(org)

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await query_events(
            db, principal, EventQuery(from_="-1h", limit=10, cursor=cursor), now=NOW
        )
        pages += 1
        seen.extend(page.events)
        cursor = page.next_cursor
        if cursor is None:
            break
        assert len(page.events) == 10
    assert pages == 6
    ids = [e["trailmap_id"] for e in seen]
    assert len(ids) == len(set(ids)) == 57
    assert set(ids) == set(stored)
    times = [datetime.fromisoformat(e["time"]) for e in seen]
    assert times == sorted(times, reverse=True)
    # Within a shared time the order is by id, so a page boundary inside it is exact.
    assert ids == [
        i
        for _t, i in sorted(
            zip(times, ids, strict=True), key=lambda pair: (pair[0], pair[1]), reverse=True
        )
    ]


async def test_an_event_arriving_between_pages_does_not_shift_the_next_page(
    db: Database,
) -> None:
    org = await make_org(db)
    await store(
        db, org, [event(id=f"p{i}", time=iso(NOW - timedelta(minutes=1))) for i in range(15)]
    )
    principal = principal_for(org)
    first = await query_events(db, principal, EventQuery(from_="-1h", limit=10), now=NOW)
    await store(db, org, [event(id="late", time=iso(NOW))])
    second = await query_events(
        db, principal, EventQuery(from_="-1h", limit=10, cursor=first.next_cursor), now=NOW
    )
    first_ids = {e["id"] for e in first.events}
    second_ids = {e["id"] for e in second.events}
    assert len(second_ids) == 5
    assert not first_ids & second_ids
    assert "late" not in {e["event_id"] for e in second.events}
    assert second.next_cursor is None


async def test_the_http_api_pages_through_events_sent_at_the_same_instant(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    # One batch with time NOW: all 57 share the server's time to the microsecond.
    batch = [event(id=f"same-{i}") for i in range(57)]
    sent = await client.post("/api/v1/events", json=batch, headers=tenant.auth())
    assert sent.status_code == 201, sent.text
    stored = {a["id"] for a in sent.json()["data"]["accepted"]}

    ids: list[str] = []
    params: dict[str, str | int] = {"from": "-1h", "limit": 10}
    for _ in range(10):
        response = await client.get("/api/v1/events", params=params, headers=tenant.auth())
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        ids.extend(e["trailmap_id"] for e in data["events"])
        if data["next_cursor"] is None:
            break
        params["cursor"] = data["next_cursor"]
    assert len(ids) == len(set(ids)) == 57
    assert set(ids) == stored


async def test_a_cursor_trailmap_did_not_issue_is_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.get(
        "/api/v1/events", params={"cursor": "bm90LWEtY3Vyc29y"}, headers=tenant.auth()
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "cursor"


# -- summary ------------------------------------------------------------------------------


def _counts(facet: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(f["value"], f["count"]) for f in facet]


async def test_the_summary_counts_by_type_subject_source_and_severity(db: Database) -> None:
    org = await make_org(db)
    a, b, c = "//ci/acme/a", "//ci/acme/b", "//ci/acme/c"
    stored = await store(
        db,
        org,
        [
            event(type="deployment", source=a, subject="production", severity="MAJOR"),
            event(
                type="deployment",
                source=a,
                subject="production",
                time=iso(NOW - timedelta(hours=5)),
            ),
            event(
                type="deployment", source=b, subject="staging", time=iso(NOW - timedelta(hours=4))
            ),
            event(
                type="rollback",
                source=a,
                subject="production",
                severity="MAJOR",
                time=iso(NOW - timedelta(hours=3)),
            ),
            event(
                type="incident",
                source=b,
                subject="staging",
                severity="LOW",
                time=iso(NOW - timedelta(hours=2)),
            ),
            event(
                type="incident", source=c, subject="production", time=iso(NOW - timedelta(hours=1))
            ),
            # Outside the default last 24 hours: counted nowhere.
            event(type="incident", source=c, subject="qa", time=iso(NOW - timedelta(days=3))),
        ],
    )
    summary = await summarize_events(
        db, principal_for(org), latest=3, timezone="Europe/Paris", now=NOW
    )
    assert summary.total == 6
    assert _counts(summary.by_type) == [("deployment", 3), ("incident", 2), ("rollback", 1)]
    assert _counts(summary.by_subject) == [("production", 4), ("staging", 2)]
    assert _counts(summary.by_source) == [(a, 3), (b, 2), (c, 1)]
    assert _counts(summary.by_severity) == [("MAJOR", 2), ("LOW", 1)]
    assert [e["trailmap_id"] for e in summary.latest] == [stored[0], stored[5], stored[4]]
    # The last time `incident` was seen: an hour ago, shown in Paris time.
    assert summary.by_type[1]["last_seen"] == "2026-03-11T00:15:00+01:00"
    assert summary.by_type[1]["last_seen_relative"] == "1 h ago"


async def test_the_summary_endpoint_answers_in_the_common_shape(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [event(type="deployment"), event(type="deployment"), event(type="rollback")]
    assert (
        await client.post("/api/v1/events", json=batch, headers=tenant.auth())
    ).status_code == 201
    response = await client.get("/api/v1/events/summary", headers=tenant.auth(tenant.reader))
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    assert data["total"] == 3
    assert _counts(data["by_type"]) == [("deployment", 2), ("rollback", 1)]
    assert len(data["latest"]) == 3
    assert data["range"]["timezone"] == "UTC"


async def test_a_facet_lists_each_value_with_its_count(db: Database) -> None:
    org = await make_org(db)
    await store(
        db, org, [event(subject="production"), event(subject="production"), event(subject="qa")]
    )
    facet = await list_facet(db, principal_for(org), "subject", now=NOW)
    assert _counts(facet) == [("production", 2), ("qa", 1)]


# -- a page read straight on the driver ---------------------------------------------------

_SHAPES: list[dict[str, Any]] = [
    {},
    {"types": ("deployment",)},
    {"subjects": ("production",), "services": ("checkout",)},
    {"severities": ("MAJOR",)},
    {"sources": ("//github.com/acme/api", "//github.com/acme/checkout")},  # an IN list
    {"words": ("checkout",)},
]


@pytest.mark.parametrize("shape", _SHAPES)
async def test_a_page_read_on_the_driver_is_the_page_sqlalchemy_reads(
    db: Database, shape: dict[str, Any]
) -> None:
    org = await make_org(db)
    items = [
        event(
            id=f"e{i}",
            time=iso(NOW - timedelta(minutes=i)),
            subject=("production", "staging")[i % 2],
            source=("//github.com/acme/checkout", "//github.com/acme/api")[i % 3 == 0],
            severity=("MAJOR", None)[i % 4 != 0],
            type=("deployment", "rollback")[i % 5 == 0],
        )
        for i in range(40)
    ]
    await store(db, org, items)
    flt = store_events.EventFilter(
        from_us=int((NOW - timedelta(days=1)).timestamp() * 1e6),
        to_us=int(NOW.timestamp() * 1e6),
        **shape,
    )

    def page(*, direct: bool, before: tuple[int, str] | None = None) -> list[Any]:
        return db.read_one_sync(
            store_events.select_events,
            org.id,
            flt,
            limit=7,
            before=before,
            full=False,
            direct=direct,
        )

    first, expected_first = page(direct=True), page(direct=False)
    if all(len(v) <= 1 for v in shape.values()):
        # The driver really answered: a silent fallback would pass the comparison too.
        shape_key, params = store_events._shape_and_params(org.id, flt)

        def on_the_driver(conn: Connection) -> list[Any] | None:
            statement = store_events._driver_sql(conn.dialect, shape_key, paged=False, limit=7)
            return fetch_on_driver(conn, statement, params)

        on_driver = db.read_one_sync(on_the_driver)
        assert on_driver is not None
        assert len(on_driver) == len(first)
    assert first == expected_first
    assert first, shape
    cursor = (first[-1]["time_us"], first[-1]["id"])
    assert page(direct=True, before=cursor) == page(direct=False, before=cursor)
    assert set(first[0]) == set(store_events.SUMMARY_COLUMNS)


async def test_a_driver_error_on_the_direct_path_is_reported_as_sqlalchemy_reports_it(
    db: Database,
) -> None:
    org = await make_org(db)
    # A value no driver can bind: the driver fails, and the statement runs again through
    # SQLAlchemy, whose error (wrapped, with pool invalidation where due) the storage layer
    # knows how to map; the driver's own error never escapes.
    unbindable: Any = object()
    flt = store_events.EventFilter(from_us=0, to_us=1, subjects=(unbindable,))
    try:
        db.read_one_sync(store_events.select_events, org.id, flt, limit=5, full=False, direct=True)
    except Exception as error:  # noqa: BLE001 - which exception it is, is the point
        failure = error
    else:
        pytest.fail("a value no driver can bind was bound")
    assert type(failure).__module__.startswith("sqlalchemy"), repr(failure)
