"""Traces in, graph out, end to end: six services instrumented with the real OpenTelemetry
SDK, each with its own TracerProvider and Resource, calling each other with trace context
carried by the real W3C propagator, exported by the real OTLP/HTTP exporters (protobuf and
OTLP/JSON) to a real `trailmap serve`, one export per service, so that the two halves of
every call arrive in different requests. The graph the REST API then answers must be exactly
the architecture that produced the traces, with exact call and error counts.

The traffic (`send_traffic`) is shared with tests/graph/test_graph_api.py, which ingests the
same topology in-process and asks the graph's questions of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from opentelemetry.exporter.otlp.json.http.trace_exporter import (
    OTLPSpanExporter as JSONSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as ProtobufSpanExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.server import module_database, org_with_key, running_server

T = TypeVar("T")

ENVIRONMENT = "production"
SERVICES = ("gateway", "frontend", "checkout", "payments", "orders", "shipping")
FIRST_VERSIONS: Mapping[str, str] = dict.fromkeys(SERVICES, "1.4.0")

REQUESTS = 12
DECLINED = frozenset({0, 1, 2})  # Stripe declines: payments answers 500, checkout 502
FAILED_QUERIES = frozenset({5, 6})  # the INSERT into orders-db fails
FAILED_MESSAGES = frozenset({7})  # shipping fails to process one order event
NOT_FOUND = frozenset({11})  # a 404 is the caller's mistake, not a failure of the callee
HISTORY = frozenset(range(0, REQUESTS, 3))  # the frontend also shows the order history

# (name, kind) of every node the traffic proves.
NODES = {
    ("gateway", "service"),
    ("frontend", "service"),
    ("checkout", "service"),
    ("payments", "service"),
    ("orders", "service"),
    ("shipping", "service"),
    ("orders-db", "database"),
    ("redis", "cache"),
    ("order-events", "topic"),
    ("api.stripe.com", "external_api"),
}
# (from, to, kind) -> (calls, errors) over the whole traffic.
EDGES = {
    ("gateway", "frontend", "calls"): (REQUESTS, 0),
    ("frontend", "checkout", "calls"): (REQUESTS, len(DECLINED)),
    ("frontend", "orders", "calls"): (len(HISTORY), 0),
    ("checkout", "payments", "calls"): (REQUESTS, len(DECLINED)),
    ("checkout", "orders", "calls"): (REQUESTS, 0),
    ("checkout", "redis", "reads_writes"): (2 * REQUESTS, 0),
    ("payments", "api.stripe.com", "calls"): (REQUESTS, len(DECLINED)),
    ("orders", "orders-db", "reads_writes"): (REQUESTS, len(FAILED_QUERIES)),
    ("orders", "order-events", "publishes"): (REQUESTS, 0),
    ("shipping", "order-events", "consumes"): (REQUESTS, len(FAILED_MESSAGES)),
    ("shipping", "orders-db", "reads_writes"): (REQUESTS, 0),
}
# A service's own figures: its SERVER and CONSUMER spans, (calls, errors).
SERVED = {
    "gateway": (REQUESTS, 0),
    "frontend": (REQUESTS, 0),
    "checkout": (REQUESTS, len(DECLINED)),
    "payments": (REQUESTS, len(DECLINED)),
    "orders": (REQUESTS + len(HISTORY), 0),
    "shipping": (REQUESTS, len(FAILED_MESSAGES)),
}
# Each service exports on its own, in this order: the frontend's CLIENT spans arrive before
# checkout's SERVER spans, the orders' SERVER spans before checkout's CLIENT spans, so calls
# are paired in both orders (in the server's memory); no two halves of a call are more than
# two exports apart, well inside the second they wait there.
EXPORT_ORDER = ("gateway", "frontend", "orders", "checkout", "payments", "shipping")

PROPAGATOR = TraceContextTextMapPropagator()


class Fleet:
    """One TracerProvider per service, as if each ran in its own process; finished spans wait
    in memory until `take` hands them to an exporter."""

    def __init__(self, versions: Mapping[str, str], environment: str = ENVIRONMENT) -> None:
        self._memory: dict[str, InMemorySpanExporter] = {}
        self._providers: dict[str, TracerProvider] = {}
        self._tracers: dict[str, Tracer] = {}
        for service, version in versions.items():
            resource = Resource.create(
                {
                    "service.name": service,
                    "service.version": version,
                    "deployment.environment.name": environment,
                }
            )
            memory = InMemorySpanExporter()
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            provider.add_span_processor(SimpleSpanProcessor(memory))
            self._memory[service], self._providers[service] = memory, provider
            self._tracers[service] = provider.get_tracer(f"shop.{service}", version)

    def tracer(self, service: str) -> Tracer:
        return self._tracers[service]

    def take(self, service: str) -> tuple[ReadableSpan, ...]:
        """The service's finished spans, forgotten once taken."""
        spans = self._memory[service].get_finished_spans()
        self._memory[service].clear()
        return spans

    def shutdown(self) -> None:
        for provider in self._providers.values():
            provider.shutdown()


@contextmanager
def http_call(
    caller: Tracer, callee: Tracer, name: str, *, peer: str, status: int = 200
) -> Iterator[Span]:
    """A CLIENT span in the caller and the SERVER span it causes in the callee, the trace
    context crossing in a dict of headers as it would over the wire; yields the callee's
    span, current, so that what the callee does next is its child."""
    attributes: dict[str, str | int] = {
        "http.request.method": "POST",
        "http.response.status_code": status,
    }
    with caller.start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes={**attributes, "server.address": peer}
    ):
        headers: dict[str, str] = {}
        PROPAGATOR.inject(headers)
        with callee.start_as_current_span(
            name, context=PROPAGATOR.extract(headers), kind=SpanKind.SERVER, attributes=attributes
        ) as served:
            yield served


def send_traffic(fleet: Fleet, requests: int = REQUESTS) -> None:
    """`requests` purchases through the shop, with the failures the module's sets name."""
    gateway, frontend, checkout = (fleet.tracer(s) for s in ("gateway", "frontend", "checkout"))
    payments, orders, shipping = (fleet.tracer(s) for s in ("payments", "orders", "shipping"))
    messages: list[tuple[dict[str, str], int]] = []
    for i in range(requests):
        declined = i in DECLINED
        with (
            gateway.start_as_current_span(
                "POST /buy",
                kind=SpanKind.SERVER,
                attributes={"http.request.method": "POST", "http.response.status_code": 200},
            ),
            http_call(
                gateway,
                frontend,
                "POST /buy",
                peer="frontend",
                status=404 if i in NOT_FOUND else 200,
            ),
        ):
            if i in HISTORY:
                with http_call(frontend, orders, "GET /orders", peer="orders"):
                    pass
            with http_call(
                frontend,
                checkout,
                "POST /checkout",
                peer="checkout",
                status=502 if declined else 200,
            ):
                for key in ("cart", "session"):
                    with checkout.start_as_current_span(
                        f"GET {key}", kind=SpanKind.CLIENT, attributes={"db.system.name": "redis"}
                    ):
                        pass
                with (
                    http_call(
                        checkout,
                        payments,
                        "POST /charge",
                        peer="payments",
                        status=500 if declined else 200,
                    ),
                    payments.start_as_current_span(
                        "POST",
                        kind=SpanKind.CLIENT,
                        attributes={
                            "http.request.method": "POST",
                            "server.address": "api.stripe.com",
                            "url.full": "https://api.stripe.com/v1/charges",
                        },
                    ) as stripe,
                ):
                    if declined:
                        stripe.set_status(StatusCode.ERROR, "card declined")
                with http_call(checkout, orders, "POST /orders", peer="orders"):
                    with orders.start_as_current_span(
                        "INSERT orders",
                        kind=SpanKind.CLIENT,
                        attributes={
                            "db.system.name": "postgresql",
                            "server.address": "orders-db",
                            "db.namespace": "shop",
                        },
                    ) as insert:
                        if i in FAILED_QUERIES:
                            insert.set_status(StatusCode.ERROR, "deadlock detected")
                    with orders.start_as_current_span(
                        "send order-events",
                        kind=SpanKind.PRODUCER,
                        attributes={
                            "messaging.system": "kafka",
                            "messaging.destination.name": "order-events",
                            "messaging.operation.type": "send",
                        },
                    ):
                        carrier: dict[str, str] = {}
                        PROPAGATOR.inject(carrier)
                        messages.append((carrier, i))
    # Shipping reads the messages later, in its own process.
    for carrier, i in messages:
        with shipping.start_as_current_span(
            "process order-events",
            context=PROPAGATOR.extract(carrier),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": "order-events",
                "messaging.operation.type": "process",
            },
        ) as consumed:
            with shipping.start_as_current_span(
                "SELECT orders",
                kind=SpanKind.CLIENT,
                attributes={"db.system.name": "postgresql", "server.address": "orders-db"},
            ):
                pass
            if i in FAILED_MESSAGES:
                consumed.set_status(StatusCode.ERROR, "address not found")


def per_minute(calls: int) -> float:
    """What the API shows for `calls` calls over its last-hour window."""
    return round(calls / 60, 2)


def error_rate(calls: int, errors: int) -> float:
    return round(errors / calls, 4)


# -- the server ---------------------------------------------------------------------------

_EXPORTERS: dict[str, Callable[..., SpanExporter]] = {
    "protobuf": ProtobufSpanExporter,
    "json": JSONSpanExporter,
}
_POLL_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Served:
    base_url: str
    database_url: str


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Served]:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_traces") as (
        url,
        directory,
    ):
        # A one-second wait after a second in memory, so that an unanswered CLIENT span
        # becomes an edge quickly.
        env = {
            "TRAILMAP_SPAN_PAIRING_WAIT_SECONDS": "1",
            "TRAILMAP_SPAN_PAIRING_MEMORY_SECONDS": "1",
        }
        with running_server(url, log_path=directory / "server.log", env=env) as base_url:
            yield Served(base_url, url)


def _export(base_url: str, key: str, encoding: str, spans: Sequence[ReadableSpan]) -> None:
    exporter = _EXPORTERS[encoding](
        endpoint=f"{base_url}/api/v1/otlp/v1/traces",
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


def _get(http: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    response = http.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is True
    data: dict[str, Any] = body["data"]
    return data


def _poll(fetch: Callable[[], T], done: Callable[[T], bool]) -> T:
    """`fetch()` until `done` says its answer is the awaited one, or the deadline passes; the
    last answer either way, for the assertion to judge."""
    deadline = time.monotonic() + _POLL_TIMEOUT_S
    while True:
        answer = fetch()
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(_POLL_INTERVAL_S)  # bounded by the deadline: the server's sweep runs on a timer


def _whole_graph(http: httpx.Client) -> dict[str, Any]:
    # Every node is within ten hops of the gateway when edges are walked both ways.
    return _get(http, "/api/v1/graph/nodes/gateway/dependencies", direction="both", max_depth=10)


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_traces_from_six_services_become_exactly_their_architecture(
    served: Served, encoding: str
) -> None:
    key = org_with_key(served.database_url, f"shop-{encoding}")
    fleet = Fleet(FIRST_VERSIONS)
    try:
        send_traffic(fleet)
        for service in EXPORT_ORDER:
            _export(served.base_url, key, encoding, fleet.take(service))
    finally:
        fleet.shutdown()

    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=served.base_url, headers=auth, timeout=10) as http:
        # The Stripe call has no SERVER half: it becomes an edge once its wait is over.
        graph = _poll(
            lambda: _whole_graph(http),
            lambda g: any(n["name"] == "api.stripe.com" for n in g["nodes"]),
        )
        assert {(n["name"], n["kind"]) for n in graph["nodes"]} == NODES
        assert {n["environment"] for n in graph["nodes"]} == {ENVIRONMENT}
        assert _get(http, "/api/v1/graph/nodes", query="gateway")["total_nodes"] == len(NODES)

        edges = {(e["from"], e["to"], e["kind"]): e for e in graph["edges"]}
        assert set(edges) == set(EDGES)
        for edge, (calls, errors) in EDGES.items():
            shown = edges[edge]
            assert (shown["calls_per_minute"], shown["error_rate"]) == (
                per_minute(calls),
                error_rate(calls, errors),
            ), edge

        # Exact counts: a node that serves nothing itself shows what its callers saw.
        for name, calls, errors in [
            ("orders-db", 2 * REQUESTS, len(FAILED_QUERIES)),
            ("redis", 2 * REQUESTS, 0),
            ("api.stripe.com", REQUESTS, len(DECLINED)),
        ]:
            figures = _get(http, f"/api/v1/graph/nodes/{name}")["last_hour"]
            assert (figures["calls"], figures["errors"]) == (calls, errors), name
        for name, (calls, errors) in SERVED.items():
            figures = _get(http, f"/api/v1/graph/nodes/{name}")["last_hour"]
            assert (figures["calls"], figures["errors"]) == (calls, errors), name

        # First versions are when Trailmap began to watch, not deployments.
        assert _get(http, "/api/v1/events", type="deployment")["events"] == []


def test_a_new_checkout_version_is_one_deployment_and_seeing_it_again_adds_none(
    served: Served,
) -> None:
    key = org_with_key(served.database_url, "shop-deployments")

    def send(version: str) -> None:
        fleet = Fleet({"checkout": version})
        try:
            with fleet.tracer("checkout").start_as_current_span(
                "POST /checkout", kind=SpanKind.SERVER
            ):
                pass
            _export(served.base_url, key, "protobuf", fleet.take("checkout"))
        finally:
            fleet.shutdown()

    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=served.base_url, headers=auth, timeout=10) as http:
        send("1.4.0")
        assert _get(http, "/api/v1/events", type="deployment")["events"] == []
        send("1.5.0")
        (deployment,) = _get(http, "/api/v1/events", type="deployment")["events"]
        assert deployment["source"] == "otel://checkout"
        assert deployment["version"] == "1.5.0"
        assert deployment["subject"] == ENVIRONMENT
        send("1.5.0")
        again = _get(http, "/api/v1/events", type="deployment")["events"]
        assert [e["id"] for e in again] == [deployment["id"]]
        checkout = _get(http, "/api/v1/graph/nodes/checkout")
        assert checkout["attributes"]["service.version"] == "1.5.0"
        assert [c["version"] for c in checkout["recent_changes"]] == ["1.5.0"]
