""" "Did the error rate change after the deployment?" and "what changed near checkout?", asked
the way an assistant asks them: the official `mcp` client, a real `trailmap serve`, and an
organization whose graph, changes and metric points all arrived through the public paths.

The graph comes from traces made with the OpenTelemetry SDK and sent by its OTLP exporter
(checkout calls payments and orders, orders calls postgresql); the changes are CloudEvents
sent to /api/v1/events; checkout's error rate is pushed to /api/v1/metrics, about 0.5% for
the two hours before its deployment and about 5% for the two hours after. Every expected
figure is worked out here from what was sent.
"""

from __future__ import annotations

import random
import re
import statistics
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import CallToolResult, TextContent
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from tests.graph.test_traces_to_graph import Fleet, http_call
from tests.server import module_database, org_with_key, running_server

pytestmark = pytest.mark.anyio

ENVIRONMENT = "production"
# Checkout's deployment is this long before the start of the run: a whole default window
# (2h) after it has passed, so the "after" side is complete.
DEPLOYED_AGO = timedelta(hours=2)
MINUTES = 120  # error_rate points on each side, one a minute
_POLL_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.1
# The graph the traces prove, as (from, to).
EDGES = {("checkout", "payments"), ("checkout", "orders"), ("orders", "postgresql")}


@dataclass(frozen=True)
class Shop:
    base_url: str
    key: str
    sent_at: datetime
    deployed_at: datetime  # checkout 3.10.0
    error_rate_before: tuple[float, ...]
    error_rate_after: tuple[float, ...]


# -- what is sent ---------------------------------------------------------------------------


def _export(base_url: str, key: str, spans: Sequence[ReadableSpan]) -> None:
    # Typed as the SDK's interface: the OTLP exporter's own shutdown carries no annotations.
    exporter: SpanExporter = OTLPSpanExporter(
        endpoint=f"{base_url}/api/v1/otlp/v1/traces",
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


def _payments_served(base_url: str, key: str, version: str, at: datetime) -> None:
    """One request served by payments `version` at `at`, as its own process exports it."""
    fleet = Fleet({"payments": version}, ENVIRONMENT)
    try:
        span = fleet.tracer("payments").start_span(
            "POST /charge", kind=SpanKind.SERVER, start_time=_ns(at)
        )
        span.end(end_time=_ns(at + timedelta(milliseconds=40)))
        _export(base_url, key, fleet.take("payments"))
    finally:
        fleet.shutdown()


def _send_traces(base_url: str, key: str, now: datetime) -> None:
    # payments 2.6.0 is the first version Trailmap sees (not a deployment); 2.7.0, first seen
    # nineteen minutes ago, is one: the server records it with the source otel://payments.
    _payments_served(base_url, key, "2.6.0", now - timedelta(hours=3))
    _payments_served(base_url, key, "2.7.0", now - timedelta(minutes=19))
    fleet = Fleet({"checkout": "3.10.0", "payments": "2.7.0", "orders": "1.2.0"}, ENVIRONMENT)
    try:
        checkout, payments, orders = (fleet.tracer(s) for s in ("checkout", "payments", "orders"))
        for _ in range(5):
            with checkout.start_as_current_span("POST /checkout", kind=SpanKind.SERVER):
                with http_call(checkout, payments, "POST /charge", peer="payments"):
                    pass
                with (
                    http_call(checkout, orders, "POST /orders", peer="orders"),
                    orders.start_as_current_span(
                        "INSERT orders",
                        kind=SpanKind.CLIENT,
                        attributes={
                            "db.system.name": "postgresql",
                            "server.address": "postgresql",
                            "db.namespace": "shop",
                        },
                    ),
                ):
                    pass
        for service in ("orders", "payments", "checkout"):
            _export(base_url, key, fleet.take(service))
    finally:
        fleet.shutdown()


def _event(
    event_id: str,
    type_: str,
    service: str,
    at: datetime,
    *,
    subject: str = ENVIRONMENT,
    **more: str,
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": f"//github.com/acme/{service}",
        "type": type_,
        "subject": subject,
        "service": service,
        "time": at.isoformat(),
        **more,
    }


def _send_events(base_url: str, key: str, now: datetime, deployed_at: datetime) -> None:
    events = [
        _event("deploy-checkout", "deployment", "checkout", deployed_at, version="3.10.0"),
        # Reported by CI a minute before traces first show 2.7.0: the same change.
        _event(
            "deploy-payments",
            "deployment",
            "payments",
            now - timedelta(minutes=20),
            version="2.7.0",
        ),
        _event(
            "pool-postgresql", "config-change", "postgresql", now - timedelta(hours=2, minutes=1)
        ),
        # The same service name in another environment: not near checkout in production.
        _event(
            "deploy-payments-staging",
            "deployment",
            "payments",
            now - timedelta(minutes=10),
            subject="staging",
            version="2.8.0-rc.1",
        ),
    ]
    response = httpx.post(
        f"{base_url}/api/v1/events", json=events, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 201, response.text


def _error_rates(seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """About 0.5% a minute before the deployment and about 5% after, with noise."""
    rng = random.Random(seed)
    before = tuple(max(0.0, rng.gauss(0.005, 0.0015)) for _ in range(MINUTES))
    after = tuple(max(0.0, rng.gauss(0.05, 0.01)) for _ in range(MINUTES))
    return before, after


def _push_error_rate(
    base_url: str, key: str, deployed_at: datetime, before: Sequence[float], after: Sequence[float]
) -> None:
    # Half a minute off the minute, so that no point sits on a window's edge.
    times = [deployed_at - timedelta(minutes=k + 0.5) for k in range(len(before))]
    times += [deployed_at + timedelta(minutes=k + 0.5) for k in range(len(after))]
    points = [
        {
            "name": "error_rate",
            "value": value,
            "time": at.isoformat(),
            "service": "checkout",
            "subject": ENVIRONMENT,
        }
        for at, value in zip(times, [*before, *after], strict=True)
    ]
    response = httpx.post(
        f"{base_url}/api/v1/metrics", json=points, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["data"]["counts"] == {"accepted": len(points), "rejected": 0}


def _wait_for_graph(base_url: str, key: str) -> None:
    """Until the graph holds every edge the traces prove (their halves are paired on a timer)."""
    deadline = time.monotonic() + _POLL_TIMEOUT_S
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}) as http:
        while True:
            response = http.get(
                "/api/v1/graph/nodes/checkout/dependencies",
                params={"direction": "downstream", "max_depth": 3},
            )
            edges: set[tuple[str, str]] = set()
            if response.status_code == 200:
                edges = {(e["from"], e["to"]) for e in response.json()["data"]["edges"]}
            if edges >= EDGES or time.monotonic() > deadline:
                assert edges >= EDGES, response.text
                return
            time.sleep(_POLL_INTERVAL_S)  # bounded by the deadline


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Shop]:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_changes") as (
        url,
        directory,
    ):
        key = org_with_key(url, "acme")
        env = {"TRAILMAP_SPAN_PAIRING_WAIT_SECONDS": "1"}
        with running_server(url, log_path=directory / "server.log", env=env) as base_url:
            now = datetime.now(UTC).replace(microsecond=0)
            deployed_at = now - DEPLOYED_AGO
            before, after = _error_rates(seed=11)
            _send_traces(base_url, key, now)
            _send_events(base_url, key, now, deployed_at)
            _push_error_rate(base_url, key, deployed_at, before, after)
            _wait_for_graph(base_url, key)
            yield Shop(base_url, key, now, deployed_at, before, after)


# -- asking ---------------------------------------------------------------------------------


class _Assistant:
    """One MCP session with the shop's server, as a model's client holds it."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def call(self, tool: str, args: dict[str, Any]) -> CallToolResult:
        return await self.client.call_tool(tool, args)

    async def refusal(self, tool: str, args: dict[str, Any]) -> str:
        """The text of a call that must fail as a tool error."""
        result = await self.call(tool, args)
        assert result.is_error, result.structured_content
        return _text(result)

    async def ask(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        result = await self.call(tool, args)
        assert not result.is_error, result.content
        answer: dict[str, Any] | None = result.structured_content
        assert answer is not None
        return answer


@asynccontextmanager
async def _connected(shop: Shop) -> AsyncIterator[_Assistant]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {shop.key}"})
    transport = streamable_http_client(f"{shop.base_url}/mcp", http_client=http)
    async with http, Client(transport) as client:
        yield _Assistant(client)


def _text(result: CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, TextContent)
    return content.text


async def _refusal(shop: Shop, tool: str, args: dict[str, Any]) -> str:
    async with _connected(shop) as assistant:
        return await assistant.refusal(tool, args)


# -- did the error rate change after the deployment? -----------------------------------------


async def test_the_last_deployment_of_checkout_raised_its_error_rate(shop: Shop) -> None:
    async with _connected(shop) as assistant:
        found = await assistant.ask(
            "query_events", {"type": ["deployment"], "service": ["checkout"], "limit": 1}
        )
        (deployment,) = found["events"]
        assert (deployment["event_id"], deployment["version"]) == ("deploy-checkout", "3.10.0")
        result = await assistant.call("get_metrics_around_event", {"event_id": deployment["id"]})
    assert not result.is_error, result.content
    answer = result.structured_content
    assert answer is not None
    assert answer["service"] == "checkout"
    assert answer["environment"] == ENVIRONMENT
    assert answer["window"] == "2h"
    assert answer["after"]["complete"] is True
    assert datetime.fromisoformat(answer["event"]["time"]) == shop.deployed_at
    (error_rate,) = [m for m in answer["metrics"] if m["name"] == "error_rate"]
    assert error_rate["verdict"] == "increased"
    assert error_rate["source"] == "pushed"
    before, after = error_rate["before"], error_rate["after"]
    assert (before["points"], after["points"]) == (MINUTES, MINUTES)
    assert before["mean"] == pytest.approx(statistics.fmean(shop.error_rate_before), rel=1e-3)
    assert after["mean"] == pytest.approx(statistics.fmean(shop.error_rate_after), rel=1e-3)
    assert before["median"] == pytest.approx(statistics.median(shop.error_rate_before), rel=1e-3)
    assert after["mean"] > 5 * before["mean"]
    assert error_rate["p_value"] < 0.01
    text = _text(result)
    assert "error_rate increased" in text
    assert "deployment of checkout (production) 3.10.0" in text


async def test_a_window_of_one_hour_compares_one_hour_on_each_side(shop: Shop) -> None:
    async with _connected(shop) as assistant:
        found = await assistant.ask(
            "query_events", {"type": ["deployment"], "service": ["checkout"], "limit": 1}
        )
        answer = await assistant.ask(
            "get_metrics_around_event",
            {"event_id": found["events"][0]["id"], "window": "1h", "metrics": ["error_rate"]},
        )
    (error_rate,) = answer["metrics"]
    assert (error_rate["before"]["points"], error_rate["after"]["points"]) == (60, 60)
    assert error_rate["before"]["mean"] == pytest.approx(
        statistics.fmean(shop.error_rate_before[:60]), rel=1e-3
    )
    assert error_rate["after"]["mean"] == pytest.approx(
        statistics.fmean(shop.error_rate_after[:60]), rel=1e-3
    )
    assert error_rate["verdict"] == "increased"


# -- what changed near checkout? ----------------------------------------------------------------


_NEAR_CHECKOUT = {"node": "checkout", "from": "-3h"}


def _by_event_id(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {change["event"]["event_id"]: change for change in answer["changes"]}


async def _changes_near(shop: Shop, args: dict[str, Any]) -> tuple[dict[str, Any], str]:
    async with _connected(shop) as assistant:
        result = await assistant.call("find_changes_near", args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content, _text(result)


async def test_a_payments_deployment_next_door_ranks_above_an_older_change_two_hops_away(
    shop: Shop,
) -> None:
    answer, text = await _changes_near(shop, _NEAR_CHECKOUT)
    assert answer["node"] == {"name": "checkout", "kind": "service", "environment": ENVIRONMENT}
    ids = [change["event"]["event_id"] for change in answer["changes"]]
    assert ids == ["deploy-payments", "deploy-checkout", "pool-postgresql"]
    scores = [change["score"] for change in answer["changes"]]
    assert scores == sorted(scores, reverse=True)
    assert answer["total"] == len(ids)
    assert answer["nodes_searched"] == 4  # checkout, payments, orders, postgresql

    changes = _by_event_id(answer)
    payments = changes["deploy-payments"]
    assert (payments["distance"], payments["path"]) == (1, ["checkout", "payments"])
    assert re.fullmatch(
        r"payments, one hop downstream of checkout \(checkout → payments\): "
        r"deployed 2\.7\.0 2[01] minutes before now",
        payments["reason"],
    ), payments["reason"]
    postgresql = changes["pool-postgresql"]
    assert (postgresql["distance"], postgresql["path"]) == (2, ["checkout", "orders", "postgresql"])
    assert re.fullmatch(
        r"postgresql, two hops downstream of checkout \(checkout → orders → postgresql\): "
        r"configuration changed 2 h [12] min before now",
        postgresql["reason"],
    ), postgresql["reason"]
    own = changes["deploy-checkout"]
    assert own["distance"] == 0
    assert own["reason"].startswith("checkout itself: deployed 3.10.0 2 h")
    # The text a model reads carries each reason, in the same order.
    lines = text.splitlines()
    assert lines[0].startswith("3 changes near checkout (production)")
    assert [line.split(" (event ")[0] for line in lines[1:]] == [
        f"- {change['reason']}" for change in answer["changes"]
    ]


async def test_a_deployment_reported_by_ci_and_seen_in_traces_is_listed_once(shop: Shop) -> None:
    answer, _ = await _changes_near(shop, _NEAR_CHECKOUT)
    of_payments = [c for c in answer["changes"] if c["node"]["name"] == "payments"]
    (listed,) = of_payments
    assert listed["event"]["source"] == "//github.com/acme/payments"
    assert listed["event"]["also_reported_by"] == ["otel://payments"]
    _, text = await _changes_near(shop, _NEAR_CHECKOUT)
    (line,) = [line for line in text.splitlines() if line.startswith("- payments")]
    assert line.endswith(", its version also seen in traces)")
    # The timeline lists it once too, naming both sources; each report is still stored.
    async with _connected(shop) as assistant:
        timeline = await assistant.ask(
            "query_events",
            {
                "from": "-1h",
                "type": ["deployment"],
                "service": ["payments"],
                "subject": ["production"],
            },
        )
        payments = await assistant.ask("get_node", {"node": "payments"})
    assert [(e["source"], e.get("also_reported_by")) for e in timeline["events"]] == [
        ("//github.com/acme/payments", ["otel://payments"])
    ]
    # The node's recent changes join them as the ranking does.
    assert [
        (c["source"], c.get("also_reported_by"))
        for c in payments["recent_changes"]
        if c.get("version") == "2.7.0"
    ] == [("//github.com/acme/payments", ["otel://payments"])]


async def test_a_change_to_payments_in_staging_is_not_near_checkout_in_production(
    shop: Shop,
) -> None:
    answer, text = await _changes_near(shop, _NEAR_CHECKOUT)
    assert "deploy-payments-staging" not in _by_event_id(answer)
    assert "2.8.0-rc.1" not in text


async def test_looking_only_upstream_of_postgresql_finds_what_calls_it(shop: Shop) -> None:
    async with _connected(shop) as assistant:
        answer = await assistant.ask(
            "find_changes_near",
            {"node": "postgresql", "from": "-3h", "direction": "upstream", "max_depth": 1},
        )
    # orders is one hop upstream and has no change; checkout is two hops away.
    assert [c["event"]["event_id"] for c in answer["changes"]] == ["pool-postgresql"]
    assert answer["changes"][0]["reason"].startswith("postgresql itself: configuration changed")


# -- prompts --------------------------------------------------------------------------------


async def test_the_three_prompts_are_listed_with_their_arguments(shop: Shop) -> None:
    async with _connected(shop) as assistant:
        listed = await assistant.client.list_prompts()
    arguments = {
        prompt.name: {(a.name, bool(a.required)) for a in prompt.arguments or []}
        for prompt in listed.prompts
    }
    assert arguments == {
        "incident_triage": {("service", True), ("since", False)},
        "impact_analysis": {("event_id", False), ("service", False)},
        "discover_architecture": set(),
    }
    assert all(prompt.description for prompt in listed.prompts)


def _prompt_text(messages: Sequence[Any]) -> str:
    (message,) = messages
    assert message.role == "user"
    assert isinstance(message.content, TextContent)
    text: str = message.content.text
    return text


async def test_incident_triage_finds_the_changes_before_it_measures_them(shop: Shop) -> None:
    async with _connected(shop) as assistant:
        prompt = await assistant.client.get_prompt(
            "incident_triage", {"service": "checkout", "since": "-1h"}
        )
    text = _prompt_text(prompt.messages)
    assert 'find_changes_near(node="checkout", from="-1h"' in text
    assert text.index("find_changes_near") < text.index("get_metrics_around_event")


async def test_impact_analysis_plans_differently_for_an_event_and_for_a_service(
    shop: Shop,
) -> None:
    async with _connected(shop) as assistant:
        of_event = _prompt_text(
            (await assistant.client.get_prompt("impact_analysis", {"event_id": "abc-123"})).messages
        )
        of_service = _prompt_text(
            (await assistant.client.get_prompt("impact_analysis", {"service": "payments"})).messages
        )
        of_nothing = _prompt_text(
            (await assistant.client.get_prompt("impact_analysis", {})).messages
        )
    assert of_event != of_service
    assert 'get_event(id="abc-123")' in of_event
    assert 'get_metrics_around_event(event_id="abc-123")' in of_event
    assert 'get_impact(node="payments")' in of_service
    assert 'query_events(service=["payments"]' in of_service
    assert "event_id or service" in of_nothing


async def test_discover_architecture_needs_no_arguments(shop: Shop) -> None:
    async with _connected(shop) as assistant:
        prompt = await assistant.client.get_prompt("discover_architecture")
    text = _prompt_text(prompt.messages)
    assert "rank_critical_services" in text
    assert "traverse_dependencies" in text


# -- bad input --------------------------------------------------------------------------------


async def test_an_unknown_event_id_is_a_tool_error_that_says_so(shop: Shop) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    text = await _refusal(shop, "get_metrics_around_event", {"event_id": missing})
    # The SDK puts "Error executing tool get_metrics_around_event: " before the message.
    assert text.endswith(f"No event with the id {missing!r} in this organization.")


async def test_a_window_that_is_not_offered_is_refused(shop: Shop) -> None:
    async with _connected(shop) as assistant:
        found = await assistant.ask("query_events", {"type": ["deployment"], "limit": 1})
        result = await assistant.call(
            "get_metrics_around_event", {"event_id": found["events"][0]["id"], "window": "3h"}
        )
    assert result.is_error
    text = _text(result)
    assert "window" in text
    assert "'2h'" in text  # the values it takes


async def test_an_empty_metric_name_is_a_tool_error_that_says_so(shop: Shop) -> None:
    async with _connected(shop) as assistant:
        found = await assistant.ask("query_events", {"type": ["deployment"], "limit": 1})
        text = await assistant.refusal(
            "get_metrics_around_event", {"event_id": found["events"][0]["id"], "metrics": [""]}
        )
    assert "metrics" in text
    assert "empty" in text


async def test_an_unknown_node_is_refused_with_the_names_it_might_mean(shop: Shop) -> None:
    unknown = await _refusal(shop, "find_changes_near", {"node": "shipping"})
    assert unknown.endswith("No node named 'shipping'. Use search_nodes to find names.")
    several = await _refusal(shop, "find_changes_near", {"node": "the service"})
    assert several.endswith(
        "There are several nodes of kind service: checkout, orders, payments; name one."
    )
    # Close names are offered when several are equally close; one closest name is taken
    # (next test).
    tied = await _refusal(shop, "find_changes_near", {"node": "t"})
    assert tied.endswith("No node named 't'. Did you mean: checkout, payments, postgresql?")


async def test_a_misspelt_node_is_read_as_the_closest_name_and_the_answer_says_which(
    shop: Shop,
) -> None:
    answer, text = await _changes_near(shop, {"node": "paiments"})
    assert answer["node"]["name"] == "payments"
    assert text.startswith("1 change near payments (production)")


async def test_a_depth_of_nine_hops_is_refused(shop: Shop) -> None:
    text = await _refusal(shop, "find_changes_near", {"node": "checkout", "max_depth": 9})
    assert "max_depth" in text
    assert "5" in text
