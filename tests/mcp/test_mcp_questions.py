"""The three questions an SRE asks first, put the way a model puts them (scripted tool calls),
to two Trailmap processes sharing one database, calls alternating between them.

The events are sent through the REST API at times chosen around the day boundaries of
Asia/Tokyo and UTC and around the relative windows, so that a wrong zone, an off-by-one
boundary or a node that answers from its own state shows up as a wrong list of events. The
expected answer of each question is worked out here from the events' own times.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import TextContent
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from tests.graph.test_traces_to_graph import Fleet
from tests.mcp.handshake import list_tools_in, open_session
from tests.server import module_database, org_with_key, running_server

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]  # 2026-07-28 (server/discover) and the 2025-11-25 handshake
# Events are placed this far from a boundary; a run that starts closer than this after a
# midnight waits until it is not, so that no event lies in the future.
_EDGE = timedelta(seconds=30)


@dataclass(frozen=True)
class Sent:
    id: str
    type: str
    subject: str
    service: str
    time: datetime


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[str, str]
    key: str
    events: tuple[Sent, ...]
    sent_at: datetime
    database_url: str


def _midnight(at: datetime, zone: str) -> datetime:
    local = at.astimezone(ZoneInfo(zone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def _plan_events(now: datetime) -> list[Sent]:
    """Events on both sides of each boundary the questions depend on."""
    plan: list[tuple[str, str, str, str, datetime]] = []
    for zone in ("Asia/Tokyo", "UTC"):
        start = _midnight(now, zone)
        tag = zone.split("/")[-1].lower()
        plan += [
            (f"{tag}-day-first", "deployment", "production", "checkout", start + _EDGE),
            (f"{tag}-day-before", "deployment", "production", "payments", start - _EDGE),
        ]
    plan += [
        ("two-hours-inside", "deployment", "production", "search", now - timedelta(minutes=110)),
        ("two-hours-outside", "deployment", "production", "search", now - timedelta(minutes=130)),
        ("flag-just-now", "feature_flag", "production", "checkout", now - timedelta(minutes=5)),
        ("incident-recent", "incident", "production", "payments", now - timedelta(minutes=20)),
        ("staging-recent", "deployment", "staging", "checkout", now - timedelta(minutes=15)),
        ("production-23h", "config_change", "production", "gateway", now - timedelta(hours=23)),
        ("production-25h", "config_change", "production", "gateway", now - timedelta(hours=25)),
    ]
    return [Sent(*row) for row in plan]


def _wait_clear_of_midnights() -> datetime:
    """Now (whole seconds: answers give milliseconds), unless a day began less than a minute
    ago in either zone: then a minute later."""
    now = datetime.now(UTC).replace(microsecond=0)
    for zone in ("Asia/Tokyo", "UTC"):
        since = now - _midnight(now, zone)
        if since < 2 * _EDGE:
            time.sleep((2 * _EDGE - since).total_seconds() + 1)
            return datetime.now(UTC).replace(microsecond=0)
    return now


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Cluster]:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_nodes") as (
        url,
        directory,
    ):
        key = org_with_key(url, "initech")
        with (
            running_server(url, log_path=directory / "node-a.log") as node_a,
            running_server(url, log_path=directory / "node-b.log") as node_b,
        ):
            now = _wait_clear_of_midnights()
            events = _plan_events(now)
            # Half the events through each node: both write to the one database.
            for node, sent in zip(itertools.cycle((node_a, node_b)), events, strict=False):
                body = {
                    "specversion": "1.0",
                    "id": sent.id,
                    "source": f"//github.com/initech/{sent.service}",
                    "type": sent.type,
                    "subject": sent.subject,
                    "time": sent.time.isoformat(),
                }
                response = httpx.post(
                    f"{node}/api/v1/events", json=body, headers={"Authorization": f"Bearer {key}"}
                )
                assert response.status_code == 201, response.text
            yield Cluster(
                nodes=(node_a, node_b),
                key=key,
                events=tuple(events),
                sent_at=now,
                database_url=url,
            )


async def _ask(
    node: str, key: str, tool: str, args: dict[str, Any], mode: str = "auto"
) -> dict[str, Any]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    transport = streamable_http_client(f"{node}/mcp", http_client=http)
    async with http, Client(transport, mode=mode) as client:
        result = await client.call_tool(tool, args)
    assert not result.is_error, result.content
    answer: dict[str, Any] | None = result.structured_content
    assert answer is not None
    return answer


def _ids(answer: dict[str, Any]) -> list[str]:
    return [e["event_id"] for e in answer["events"]]


def _newest_first(events: list[Sent]) -> list[str]:
    return [e.id for e in sorted(events, key=lambda e: e.time, reverse=True)]


@pytest.mark.parametrize("mode", MODES)
async def test_what_was_deployed_today_depends_on_whose_today_it_is(
    cluster: Cluster, mode: str
) -> None:
    answers = {}
    for node, zone in zip(cluster.nodes, ("Asia/Tokyo", "UTC"), strict=True):
        answer = await _ask(
            node,
            cluster.key,
            "query_events",
            {"from": "today", "type": ["deployment"], "timezone": zone},
            mode,
        )
        start = _midnight(cluster.sent_at, zone)
        expected = [e for e in cluster.events if e.type == "deployment" and e.time >= start]
        assert _ids(answer) == _newest_first(expected), zone
        assert answer["from"] == start.astimezone(ZoneInfo(zone)).isoformat()
        answers[zone] = _ids(answer)
    # Tokyo's day began nine hours before UTC's: the two answers cannot be the same list.
    assert answers["Asia/Tokyo"] != answers["UTC"]


@pytest.mark.parametrize("mode", MODES)
async def test_recent_events_in_production_are_the_last_days_and_nothing_else(
    cluster: Cluster, mode: str
) -> None:
    answer = await _ask(
        cluster.nodes[1], cluster.key, "query_events", {"subject": ["production"]}, mode
    )
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    expected = [e for e in cluster.events if e.subject == "production" and e.time >= day_ago]
    assert _ids(answer) == _newest_first(expected)
    assert "production-23h" in _ids(answer)
    assert "production-25h" not in _ids(answer)
    assert "staging-recent" not in _ids(answer)


@pytest.mark.parametrize("mode", MODES)
async def test_what_changed_in_the_last_two_hours_is_every_kind_of_change_since(
    cluster: Cluster, mode: str
) -> None:
    answer = await _ask(cluster.nodes[0], cluster.key, "query_events", {"from": "-2h"}, mode)
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    expected = [e for e in cluster.events if e.time >= two_hours_ago]
    assert _ids(answer) == _newest_first(expected)
    assert {"flag-just-now", "incident-recent", "staging-recent", "two-hours-inside"} <= set(
        _ids(answer)
    )
    assert "two-hours-outside" not in _ids(answer)


async def test_times_come_back_in_the_asked_zone_with_a_relative_form(cluster: Cluster) -> None:
    answer = await _ask(
        cluster.nodes[1],
        cluster.key,
        "query_events",
        {"from": "-30m", "type": ["feature_flag"], "timezone": "Asia/Tokyo"},
    )
    (flag,) = answer["events"]
    assert flag["time"].endswith("+09:00")
    sent = next(e for e in cluster.events if e.id == "flag-just-now")
    assert datetime.fromisoformat(flag["time"]) == sent.time
    assert flag["time_relative"] in {"5 min ago", "6 min ago", "7 min ago"}


async def test_calls_alternate_between_the_two_nodes_and_every_answer_is_right(
    cluster: Cluster,
) -> None:
    everything = _newest_first(list(cluster.events))
    # One page at a time, each from the other node: a cursor made by one is honoured by the
    # other, and the pages join into exactly the events that were sent.
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    for turn in itertools.count():
        args: dict[str, Any] = {"from": "-2d", "limit": 3}
        if cursor:
            args["cursor"] = cursor
        answer = await _ask(cluster.nodes[turn % 2], cluster.key, "query_events", args)
        pages += answer["events"]
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert [e["event_id"] for e in pages] == everything
    for turn in range(4):
        node = cluster.nodes[turn % 2]
        types = await _ask(node, cluster.key, "list_event_types", {})
        counts = {row["value"]: row["count"] for row in types["types"]}
        assert counts == {
            kind: sum(1 for e in cluster.events if e.type == kind)
            for kind in {e.type for e in cluster.events}
        }
        listed = pages[turn]
        detail = await _ask(node, cluster.key, "get_event", {"id": listed["id"]})
        assert (detail["id"], detail["event_id"]) == (listed["id"], listed["event_id"])


async def test_a_session_opened_on_one_node_is_honoured_by_the_other(cluster: Cluster) -> None:
    node_a, node_b = cluster.nodes
    async with httpx.AsyncClient() as http:
        session_id = await open_session(http, f"{node_a}/mcp", cluster.key)
        listed = await list_tools_in(http, f"{node_b}/mcp", cluster.key, session_id)
    assert listed.status_code == 200, listed.text
    assert "query_events" in {tool["name"] for tool in listed.json()["result"]["tools"]}


async def test_the_summary_and_the_source_list_count_what_was_sent(cluster: Cluster) -> None:
    since = datetime.now(UTC) - timedelta(hours=24)
    recent = [e for e in cluster.events if e.time >= since]
    summary = await _ask(
        cluster.nodes[0], cluster.key, "get_event_summary", {"timezone": "Asia/Tokyo"}
    )
    assert summary["total"] == len(recent)
    by_type = {row["value"]: row["count"] for row in summary["by_type"]}
    assert by_type == {t: sum(1 for e in recent if e.type == t) for t in {e.type for e in recent}}
    assert summary["latest"][0]["event_id"] == _newest_first(recent)[0]
    assert summary["from"].endswith("+09:00")

    sources = await _ask(cluster.nodes[1], cluster.key, "list_event_sources", {})
    counted = {row["value"]: row["count"] for row in sources["sources"]}
    expected: dict[str, int] = {}
    for sent in cluster.events:
        source = f"//github.com/initech/{sent.service}"
        expected[source] = expected.get(source, 0) + 1
    assert counted == expected


async def test_events_reach_the_model_without_the_constant_specversion(cluster: Cluster) -> None:
    answer = await _ask(cluster.nodes[0], cluster.key, "query_events", {"limit": 2})
    assert answer["events"]
    for shown in answer["events"]:
        assert "specversion" not in shown
        assert {"id", "event_id", "type", "source", "time", "time_relative"} <= set(shown)


async def test_the_text_answer_counts_in_words_a_person_would_use(cluster: Cluster) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {cluster.key}"})
    transport = streamable_http_client(f"{cluster.nodes[0]}/mcp", http_client=http)
    async with http, Client(transport) as client:
        one = await client.call_tool("query_events", {"from": "-30m", "type": ["feature_flag"]})
        several = await client.call_tool("query_events", {"from": "-30m"})
    texts = [answer.content[0] for answer in (one, several)]
    assert all(isinstance(text, TextContent) for text in texts)
    # Counted from the plan, not written down: within half an hour after a day begins in
    # Tokyo or UTC, that midnight's events are recent too.
    since = datetime.now(UTC) - timedelta(minutes=30)
    recent = sum(1 for e in cluster.events if e.time >= since)
    assert recent >= 3
    assert [text.text.split(" from ")[0] for text in texts if isinstance(text, TextContent)] == [
        "1 event",
        f"{recent} events",
    ]


# -- filters whatever their case, and empty answers that say what exists --------------------


async def test_filters_match_whatever_the_case_the_model_writes_them_in(cluster: Cluster) -> None:
    lower = await _ask(
        cluster.nodes[0],
        cluster.key,
        "query_events",
        {"from": "-2d", "type": ["deployment"], "subject": ["production"], "service": ["checkout"]},
    )
    assert _ids(lower)
    mixed = await _ask(
        cluster.nodes[1],
        cluster.key,
        "query_events",
        {"from": "-2d", "type": ["Deployment"], "subject": ["PRODUCTION"], "service": ["Checkout"]},
    )
    assert _ids(mixed) == _ids(lower)
    assert "hint" not in mixed


async def test_an_empty_answer_names_the_values_that_exist_and_what_the_range_holds(
    cluster: Cluster,
) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {cluster.key}"})
    transport = streamable_http_client(f"{cluster.nodes[0]}/mcp", http_client=http)
    async with http, Client(transport) as client:
        result = await client.call_tool(
            "query_events", {"from": "-2d", "type": ["deploy"], "subject": ["prod"]}
        )
    assert not result.is_error, result.content
    answer = result.structured_content
    assert answer is not None
    assert answer["events"] == []
    assert answer["hint"]["unmatched"] == [
        {"filter": "type", "value": "deploy", "closest": ["deployment"]},
        {"filter": "subject", "value": "prod", "closest": ["production"]},
    ]
    since = datetime.now(UTC) - timedelta(days=2)
    recent = [e for e in cluster.events if e.time >= since]
    assert answer["hint"]["in_range"]["total"] == len(recent)
    by_type = {row["value"]: row["count"] for row in answer["hint"]["in_range"]["by_type"]}
    assert by_type == {t: sum(1 for e in recent if e.type == t) for t in {e.type for e in recent}}
    # What the model reads says it in words: never a bare "nothing was deployed".
    (text,) = result.content
    assert isinstance(text, TextContent)
    assert "did you mean 'deployment'?" in text.text
    assert "did you mean 'production'?" in text.text
    assert f"In this range the organization has {len(recent)} events: " in text.text


# -- one change, one entry ------------------------------------------------------------------


@dataclass(frozen=True)
class Shop:
    node: str
    key: str


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


def _served(node: str, key: str, service: str, version: str, at: datetime) -> None:
    """One request served by `service` at `version`, exported by its own process over OTLP:
    a version after the first one the server sees is a deployment it detects."""
    fleet = Fleet({service: version})
    # Typed as the SDK's interface: the OTLP exporter's own shutdown carries no annotations.
    exporter: SpanExporter = OTLPSpanExporter(
        endpoint=f"{node}/api/v1/otlp/v1/traces",
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    try:
        span = fleet.tracer(service).start_span(
            "POST /work", kind=SpanKind.SERVER, start_time=_ns(at)
        )
        span.end(end_time=_ns(at + timedelta(milliseconds=20)))
        assert exporter.export(fleet.take(service)) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
        fleet.shutdown()


@pytest.fixture(scope="module")
def shop(cluster: Cluster) -> Shop:
    """Another organization on the same nodes: checkout 3.10.0 reported by CI and revealed by
    its traces four minutes later; payments 2.7.0 revealed by its traces alone."""
    key = org_with_key(cluster.database_url, "acme-shop")
    node = cluster.nodes[0]
    now = datetime.now(UTC).replace(microsecond=0)
    for service, first in (("checkout", "3.9.0"), ("payments", "2.6.0")):
        _served(node, key, service, first, now - timedelta(hours=3))
    _served(node, key, "checkout", "3.10.0", now - timedelta(minutes=40))
    _served(node, key, "payments", "2.7.0", now - timedelta(minutes=20))
    body = {
        "specversion": "1.0",
        "id": "ci-checkout-3.10.0",
        "source": "//github.com/acme/checkout",
        "type": "deployment",
        "subject": "production",
        "service": "checkout",
        "version": "3.10.0",
        "time": (now - timedelta(minutes=44)).isoformat(),
    }
    response = httpx.post(
        f"{node}/api/v1/events", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 201, response.text
    return Shop(node=cluster.nodes[1], key=key)


async def test_a_change_ci_reported_and_traces_revealed_reaches_the_model_once(
    shop: Shop,
) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {shop.key}"})
    transport = streamable_http_client(f"{shop.node}/mcp", http_client=http)
    async with http, Client(transport) as client:
        result = await client.call_tool("query_events", {"from": "-1h", "type": ["deployment"]})
    answer = result.structured_content
    assert answer is not None
    assert [(e["service"], e["source"], e.get("also_reported_by")) for e in answer["events"]] == [
        ("payments", "otel://payments", None),
        ("checkout", "//github.com/acme/checkout", ["otel://checkout"]),
    ]
    (text,) = result.content
    assert isinstance(text, TextContent)
    assert text.text.startswith("2 events from ")
    assert "[reported by //github.com/acme/checkout, also otel://checkout]" in text.text
    # One page at a time, the twin never takes a place.
    first = await _ask(shop.node, shop.key, "query_events", {"from": "-1h", "limit": 1})
    assert first["next_cursor"] is not None
    second = await _ask(
        shop.node,
        shop.key,
        "query_events",
        {"from": "-1h", "limit": 1, "cursor": first["next_cursor"]},
    )
    assert [e["source"] for e in first["events"] + second["events"]] == [
        "otel://payments",
        "//github.com/acme/checkout",
    ]
    assert second["next_cursor"] is None


async def test_the_counts_an_assistant_reads_count_a_change_once(shop: Shop) -> None:
    summary = await _ask(shop.node, shop.key, "get_event_summary", {"from": "-1h"})
    assert summary["total"] == 2
    assert {r["value"]: r["count"] for r in summary["by_type"]} == {"deployment": 2}
    assert [e.get("also_reported_by") for e in summary["latest"]] == [None, ["otel://checkout"]]
    types = await _ask(shop.node, shop.key, "list_event_types", {})
    assert {r["value"]: r["count"] for r in types["types"]} == {"deployment": 2}
    sources = await _ask(shop.node, shop.key, "list_event_sources", {})
    assert {r["value"]: r["count"] for r in sources["sources"]} == {
        "//github.com/acme/checkout": 1,
        "otel://payments": 1,
    }
