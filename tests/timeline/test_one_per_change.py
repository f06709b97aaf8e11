"""One change, one entry: a deployment CI reported and the traces revealed (a new
service.version, recorded with the source otel://SERVICE) is listed, paged and counted once,
as the CI report naming the other source in `also_reported_by`.

The CI reports go in through `ingest_events` as a producer sends them; the detected ones are
made by the OpenTelemetry SDK and ingested by the graph (`ingest_traces`), which records them
as the server does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.trace import SpanKind

from tests.conftest import Tenant
from tests.factories import event, principal_for
from tests.graph.test_traces_to_graph import Fleet
from trailmap import clock
from trailmap.accounts import Organization
from trailmap.graph.learn.pairing import ingest_traces
from trailmap.storage import Database
from trailmap.timeline.ingest import ingest_events
from trailmap.timeline.queries import EventQuery, list_facet, query_events, summarize_events

pytestmark = pytest.mark.anyio


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


async def served(db: Database, org: Organization, service: str, version: str, at: datetime) -> None:
    """One request served by `service` at `version` at `at`, exported by its own process: the
    first version the graph sees of a service is no deployment, each later new one is."""
    fleet = Fleet({service: version})
    try:
        span = fleet.tracer(service).start_span(
            "POST /work", kind=SpanKind.SERVER, start_time=_ns(at)
        )
        span.end(end_time=_ns(at + timedelta(milliseconds=20)))
        result = await ingest_traces(db, principal_for(org), encode_spans(fleet.take(service)))
        assert (result.rejected_spans, result.problems) == (0, [])
    finally:
        fleet.shutdown()


async def reported(
    db: Database, org: Organization, service: str, version: str, at: datetime, **extra: Any
) -> None:
    """CI's report of a deployment, as the producer sends it."""
    item = event(
        id=f"ci-{service}-{version}",
        source=f"//github.com/acme/{service}",
        service=service,
        version=version,
        time=at.isoformat(),
        **extra,
    )
    result = await ingest_events(db, principal_for(org), [item], max_event_bytes=10 * 1024)
    assert (result.rejected, len(result.accepted)) == ([], 1)


async def _page(
    db: Database, org: Organization, **query: Any
) -> tuple[list[dict[str, Any]], str | None]:
    page = await query_events(db, principal_for(org), EventQuery(**query))
    return page.events, page.next_cursor


def _entries(events: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, list[str] | None]]:
    return [(e["service"], e["version"], e["source"], e.get("also_reported_by")) for e in events]


@pytest.fixture
def now() -> datetime:
    return clock.now().replace(microsecond=0)


async def test_a_deployment_ci_reported_and_traces_revealed_is_one_entry_naming_both_sources(
    db: Database, tenant: Tenant, now: datetime
) -> None:
    org = tenant.org
    await served(db, org, "checkout", "3.9.0", now - timedelta(hours=3))
    await served(db, org, "checkout", "3.10.0", now - timedelta(minutes=40))
    await reported(db, org, "checkout", "3.10.0", now - timedelta(minutes=44))
    # Both reports are stored: each is fetched by its own id and the detected one says so.
    stored, _ = await _page(db, org, from_="-1h", sources=["otel://checkout"])
    (detected,) = stored
    assert detected["version"] == "3.10.0"
    events, cursor = await _page(db, org, from_="-1h")
    assert cursor is None
    assert _entries(events) == [
        ("checkout", "3.10.0", "//github.com/acme/checkout", ["otel://checkout"])
    ]


async def test_the_summary_and_the_lists_of_types_and_sources_count_the_change_once(
    db: Database, tenant: Tenant, now: datetime
) -> None:
    org = tenant.org
    await served(db, org, "checkout", "3.9.0", now - timedelta(hours=3))
    await served(db, org, "checkout", "3.10.0", now - timedelta(minutes=40))
    await reported(db, org, "checkout", "3.10.0", now - timedelta(minutes=35))
    # Only the traces saw payments 2.7.0: its one entry is the detected one.
    await served(db, org, "payments", "2.6.0", now - timedelta(hours=3))
    await served(db, org, "payments", "2.7.0", now - timedelta(minutes=20))
    principal = principal_for(org)
    summary = await summarize_events(db, principal, from_="-2h")
    assert summary.total == 2
    assert {r["value"]: r["count"] for r in summary.by_type} == {"deployment": 2}
    assert {r["value"]: r["count"] for r in summary.by_source} == {
        "//github.com/acme/checkout": 1,
        "otel://payments": 1,
    }
    assert _entries(summary.latest) == [
        ("payments", "2.7.0", "otel://payments", None),
        ("checkout", "3.10.0", "//github.com/acme/checkout", ["otel://checkout"]),
    ]
    types = await list_facet(db, principal, "type")
    assert [(r["value"], r["count"]) for r in types] == [("deployment", 2)]
    sources = await list_facet(db, principal, "source")
    assert {r["value"]: r["count"] for r in sources} == {
        "//github.com/acme/checkout": 1,
        "otel://payments": 1,
    }


async def test_pages_neither_repeat_nor_fall_short_when_a_twin_lies_across_their_boundary(
    db: Database, tenant: Tenant, now: datetime
) -> None:
    """Each detected twin is a few minutes older than CI's report, so it would be the first
    entry of the next page were it not left out; pages of every size stay full."""
    org = tenant.org
    services = ("checkout", "payments", "search", "orders")
    for service in services:
        await served(db, org, service, "1.0.0", now - timedelta(hours=5))
    expected: list[tuple[str, str, str, list[str] | None]] = []
    for i, service in enumerate(services):
        at = now - timedelta(minutes=30 * (i + 1))
        await served(db, org, service, "2.0.0", at - timedelta(minutes=4))
        if service == "search":  # a change only the traces saw, between the others
            expected.append((service, "2.0.0", f"otel://{service}", None))
            continue
        await reported(db, org, service, "2.0.0", at)
        source = f"//github.com/acme/{service}"
        expected.append((service, "2.0.0", source, [f"otel://{service}"]))
    for limit in (1, 2, 3, 4):
        pages: list[list[dict[str, Any]]] = []
        cursor = None
        while True:
            events, cursor = await _page(db, org, from_="-3h", limit=limit, cursor=cursor)
            pages.append(events)
            if cursor is None:
                break
        assert _entries([e for page in pages for e in page]) == expected, limit
        assert [len(page) for page in pages[:-1]] == [limit] * (len(pages) - 1), limit
        assert len(pages) == -(-len(expected) // limit), limit


async def test_a_report_more_than_fifteen_minutes_from_the_detection_is_another_change(
    db: Database, tenant: Tenant, now: datetime
) -> None:
    org = tenant.org
    await served(db, org, "checkout", "3.9.0", now - timedelta(hours=3))
    await served(db, org, "checkout", "3.10.0", now - timedelta(minutes=10))
    await reported(db, org, "checkout", "3.10.0", now - timedelta(minutes=26))
    events, _ = await _page(db, org, from_="-1h")
    assert _entries(events) == [
        ("checkout", "3.10.0", "otel://checkout", None),
        ("checkout", "3.10.0", "//github.com/acme/checkout", None),
    ]


async def test_a_report_of_another_version_leaves_the_detected_deployment_listed(
    db: Database, tenant: Tenant, now: datetime
) -> None:
    org = tenant.org
    await served(db, org, "checkout", "3.9.0", now - timedelta(hours=3))
    await served(db, org, "checkout", "3.10.0", now - timedelta(minutes=10))
    await reported(db, org, "checkout", "3.10.1", now - timedelta(minutes=9))
    events, _ = await _page(db, org, from_="-1h", types=["deployment"])
    assert [e["source"] for e in events] == ["//github.com/acme/checkout", "otel://checkout"]


async def test_adjacent_ranges_count_a_change_in_one_of_them_only(
    db: Database, tenant: Tenant, now: datetime
) -> None:
    """CI's time is the change's: a twin on the other side of a range's edge is not
    counted in that range, so two ranges side by side add up to the whole."""
    org = tenant.org
    edge = now - timedelta(minutes=30)
    await served(db, org, "checkout", "3.9.0", now - timedelta(hours=3))
    await served(db, org, "checkout", "3.10.0", edge + timedelta(minutes=5))
    await reported(db, org, "checkout", "3.10.0", edge - timedelta(minutes=5))
    principal = principal_for(org)
    before = await summarize_events(db, principal, from_="-1h", to=edge.isoformat())
    after = await summarize_events(db, principal, from_=edge.isoformat(), to="now")
    assert (before.total, after.total) == (1, 0)
    whole = await summarize_events(db, principal, from_="-1h")
    assert whole.total == 1


async def test_asking_for_the_detected_source_lists_the_detected_report(
    db: Database, tenant: Tenant, now: datetime
) -> None:
    org = tenant.org
    await served(db, org, "checkout", "3.9.0", now - timedelta(hours=3))
    await served(db, org, "checkout", "3.10.0", now - timedelta(minutes=10))
    await reported(db, org, "checkout", "3.10.0", now - timedelta(minutes=12))
    events, _ = await _page(
        db, org, from_="-1h", sources=["otel://checkout", "//github.com/acme/checkout"]
    )
    assert _entries(events) == [
        ("checkout", "3.10.0", "//github.com/acme/checkout", ["otel://checkout"])
    ]
    (detected,) = (await _page(db, org, from_="-1h", sources=["otel://checkout"]))[0]
    assert detected["source"] == "otel://checkout"


async def test_the_rest_api_lists_the_change_once_with_both_sources(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, now: datetime
) -> None:
    org = tenant.org
    await served(db, org, "checkout", "3.9.0", now - timedelta(hours=3))
    await served(db, org, "checkout", "3.10.0", now - timedelta(minutes=40))
    await reported(db, org, "checkout", "3.10.0", now - timedelta(minutes=44))
    auth = tenant.auth(tenant.reader)
    listed = await client.get("/api/v1/events", params={"from": "-1h"}, headers=auth)
    assert listed.status_code == 200, listed.text
    (entry,) = listed.json()["data"]["events"]
    assert (entry["source"], entry["also_reported_by"]) == (
        "//github.com/acme/checkout",
        ["otel://checkout"],
    )
    summary = await client.get("/api/v1/events/summary", params={"from": "-1h"}, headers=auth)
    assert summary.status_code == 200, summary.text
    data = summary.json()["data"]
    assert data["total"] == 1
    assert data["latest"][0]["also_reported_by"] == ["otel://checkout"]
