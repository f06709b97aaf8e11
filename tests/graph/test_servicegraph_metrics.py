"""The Collector's servicegraph connector, end to end (graph/learn/servicegraph.py).

What the connector sends is made two ways. The OpenTelemetry SDK's own metrics pipeline, under
the connector's names, scope and attributes with an empty resource, exported by the official
OTLP/HTTP exporters (protobuf and JSON) to `/api/v1/otlp/v1/metrics`; and, for what the SDK
cannot make (a series started hours ago, a total that goes down, wrong types), exports built
with the opentelemetry-proto classes. What they become is read back through the graph's REST
API, and exactly from the tables graph_nodes, graph_edges, graph_minutes and
graph_metric_cursors.
"""

from __future__ import annotations

import bisect
import gzip
import math
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

import anyio
import anyio.to_thread
import httpx
import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from tests.api.otlp_common import JSON, PROTOBUF, encoding, otlp_client
from tests.api.test_otlp_metrics_receiver import METRICS, AppTransport, real_exporter
from tests.conftest import Tenant
from tests.factories import make_key, make_org
from tests.ingest.test_otlp_metrics_decoding import attributes
from trailmap import clock
from trailmap.graph.learn.servicegraph import EdgeSample
from trailmap.graph.model import DEFAULT_ENVIRONMENT, edge_id, node_id
from trailmap.graph.stats import bucket_of
from trailmap.ingest.servicegraph import edge_sample, latency_buckets
from trailmap.jobs.retention import purge_expired
from trailmap.storage import Connection, Database
from trailmap.storage.tables import (
    LATENCY_BUCKETS,
    graph_edges,
    graph_metric_cursors,
    graph_minutes,
    graph_nodes,
)

pytestmark = pytest.mark.anyio
__all__ = ["encoding", "otlp_client"]

GRAPH = "/api/v1/graph"
SCOPE = "traces_service_graph"
TOTAL = "traces_service_graph_request_total"
FAILED = "traces_service_graph_request_failed_total"
CLIENT = "traces_service_graph_request_client"
SERVER = "traces_service_graph_request_server"
# The connector's default latency buckets, in seconds.
BOUNDS_S = (0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1, 1.4, 2, 5, 10, 15)
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US


# -- the connector, made with the SDK ------------------------------------------------------


class Connector:
    """What the servicegraph connector sends, made with the SDK: scope `traces_service_graph`,
    an empty resource, its four instruments and its latency buckets. `call` is one edge the
    connector paired; `flush` is its `metrics_flush_interval` going off."""

    def __init__(
        self,
        exporter: MetricExporter,
        wire: AppTransport,
        *,
        labels_failed: bool,
        resource: Resource,
    ) -> None:
        self.wire = wire
        self.labels_failed = labels_failed  # Collectors label every series `failed`
        # An infinite interval: no timer thread, an export only when flushed.
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
        buckets = ExplicitBucketHistogramAggregation(boundaries=BOUNDS_S)
        self.provider = MeterProvider(
            metric_readers=[reader],
            resource=resource,
            views=[View(instrument_type=HistogramInstrument, aggregation=buckets)],
            shutdown_on_exit=False,
        )
        meter = self.provider.get_meter(SCOPE)
        self.total = meter.create_counter(TOTAL)
        self.failed = meter.create_counter(FAILED)
        self.client = meter.create_histogram(CLIENT, unit="s")
        self.server = meter.create_histogram(SERVER, unit="s")

    def call(
        self,
        client: str,
        server: str,
        *,
        client_s: float = 0.03,
        server_s: float = 0.02,
        failed: bool = False,
        connection_type: str = "",
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        labels: dict[str, str | bool] = {
            "client": client,
            "server": server,
            "connection_type": connection_type,
            **(dimensions or {}),
        }
        if self.labels_failed:
            labels["failed"] = failed
        self.total.add(1, labels)
        if failed:
            self.failed.add(1, labels)
        self.client.record(client_s, labels)
        self.server.record(server_s, labels)

    async def flush(self) -> None:
        before = len(self.wire.exchanges)
        assert await anyio.to_thread.run_sync(self.provider.force_flush)
        assert len(self.wire.exchanges) > before, "the flush sent nothing"
        last = self.wire.exchanges[-1]
        # Accepted whole: no partial success to report.
        assert (last.status, last.answer) in ((200, b""), (200, b"{}")), last.answer

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.provider.shutdown)


class Connectors:
    """Makes connectors exporting to the app as `key`; their temporality comes from the
    environment, as in production."""

    def __init__(self, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, key: str) -> None:
        self.http, self.monkeypatch, self.key = http, monkeypatch, key
        self.made: list[Connector] = []

    def make(
        self,
        *,
        encoding: str = "protobuf",
        temporality: str = "cumulative",
        labels_failed: bool = True,
        resource: Resource | None = None,
    ) -> Connector:
        self.monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", temporality)
        wire = AppTransport(self.http)
        exporter = real_exporter(encoding, wire, self.key)
        resource = Resource.get_empty() if resource is None else resource
        made = Connector(exporter, wire, labels_failed=labels_failed, resource=resource)
        self.made.append(made)
        return made


@pytest.fixture
async def connectors(
    otlp_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, tenant: Tenant
) -> AsyncIterator[Connectors]:
    made = Connectors(otlp_client, monkeypatch, tenant.writer)
    yield made
    for connector in made.made:
        await connector.close()


# -- the connector's exports, built by hand ---------------------------------------------------


def labels_of(client: str, server: str, **more: str | bool) -> dict[str, str | bool]:
    """A data point's attributes, as the connector writes them."""
    return {"client": client, "server": server, "connection_type": "", "failed": False, **more}


def counter(name: str, *points: NumberDataPoint) -> Metric:
    return Metric(
        name=name,
        sum=Sum(data_points=points, aggregation_temporality=CUMULATIVE, is_monotonic=True),
    )


class Times(NamedTuple):
    """A data point's startTimeUnixNano and timeUnixNano, in microseconds."""

    start_us: int
    time_us: int


def count_point(value: int, labels: Mapping[str, object], at: Times) -> NumberDataPoint:
    return NumberDataPoint(
        attributes=attributes(labels),
        start_time_unix_nano=at.start_us * 1000,
        time_unix_nano=at.time_us * 1000,
        as_int=value,
    )


def latency(name: str, *points: HistogramDataPoint, unit: str = "s") -> Metric:
    return Metric(
        name=name,
        unit=unit,
        histogram=Histogram(data_points=points, aggregation_temporality=CUMULATIVE),
    )


def latency_point(
    values: Sequence[float],
    labels: Mapping[str, object],
    at: Times,
    *,
    bounds: Sequence[float] = BOUNDS_S,
) -> HistogramDataPoint:
    """A running histogram of `values`, counted as the connector counts them (a bucket holds
    the values up to and including its bound)."""
    counts = [0] * (len(bounds) + 1)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    return HistogramDataPoint(
        attributes=attributes(labels),
        start_time_unix_nano=at.start_us * 1000,
        time_unix_nano=at.time_us * 1000,
        count=len(values),
        sum=sum(values),
        bucket_counts=counts,
        explicit_bounds=list(bounds),
    )


def connector_export(*metrics: Metric) -> ExportMetricsServiceRequest:
    """One export of the connector: an empty resource, its scope."""
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=ProtoResource(),
                scope_metrics=[
                    ScopeMetrics(scope=InstrumentationScope(name=SCOPE), metrics=list(metrics))
                ],
            )
        ]
    )


@dataclass(frozen=True)
class Answer:
    """The OTLP partial success of an export."""

    rejected: int
    message: str


ACCEPTED = Answer(0, "")  # every data point kept, nothing to say


async def post(
    http: httpx.AsyncClient,
    key: str,
    request: ExportMetricsServiceRequest,
    encoding: str = "protobuf",
) -> Answer:
    auth = {"Authorization": f"Bearer {key}"}
    if encoding == "protobuf":
        body, headers = request.SerializeToString(), {**auth, **PROTOBUF}
    else:
        body, headers = json_format.MessageToJson(request).encode(), {**auth, **JSON}
    response = await http.post(METRICS, content=body, headers=headers)
    assert response.status_code == 200, response.text
    if encoding == "protobuf":
        found = ExportMetricsServiceResponse.FromString(response.content).partial_success
        return Answer(found.rejected_data_points, found.error_message)
    partial = response.json().get("partialSuccess", {})
    return Answer(int(partial.get("rejectedDataPoints", 0)), partial.get("errorMessage", ""))


def decoded(body: bytes) -> ExportMetricsServiceRequest:
    """A protobuf export the SDK's exporter sent, gzip-compressed."""
    request: ExportMetricsServiceRequest = ExportMetricsServiceRequest.FromString(
        gzip.decompress(body)
    )
    return request


# -- reading the graph back ------------------------------------------------------------------


class Key(NamedTuple):
    """A node as the graph names it."""

    name: str
    kind: str = "service"
    environment: str = DEFAULT_ENVIRONMENT

    def id_in(self, org_id: str) -> str:
        return node_id(org_id, self.kind, self.environment, self.name)


Link = tuple[Key, Key, str]  # (source, target, edge kind)


def link_id(org_id: str, link: Link) -> str:
    source, target, kind = link
    return edge_id(org_id, source.id_in(org_id), target.id_in(org_id), kind)


async def graph_of(db: Database, org_id: str) -> tuple[set[Key], set[Link]]:
    """Every node and edge of the organization."""

    def read(conn: Connection) -> tuple[set[Key], set[Link]]:
        n, e = graph_nodes.c, graph_edges.c
        nodes = {
            row.id: Key(row.name, row.kind, row.environment)
            for row in conn.execute(graph_nodes.select().where(n.org_id == org_id))
        }
        edges = {
            (nodes[row.source_id], nodes[row.target_id], row.kind)
            for row in conn.execute(graph_edges.select().where(e.org_id == org_id))
        }
        return set(nodes.values()), edges

    return await db.read(read)


@dataclass(frozen=True)
class Figures:
    """A subject's statistics over all its minutes: the latency sum rounded to a millionth
    of a millisecond (what float arithmetic leaves), the buckets that are not empty."""

    calls: int
    errors: int
    duration_ms: float
    buckets: dict[int, int]


async def figures(db: Database, org_id: str, subject_id: str) -> Figures | None:
    """The statistics of an edge or a node, or None when it has none."""

    def read(conn: Connection) -> list[Any]:
        m = graph_minutes.c
        query = graph_minutes.select().where(m.org_id == org_id, m.subject_id == subject_id)
        return list(conn.execute(query))

    rows = await db.read(read)
    if not rows:
        return None
    buckets = [sum(row._mapping[f"b{i:02d}"] for row in rows) for i in range(LATENCY_BUCKETS)]
    return Figures(
        calls=sum(row.calls for row in rows),
        errors=sum(row.errors for row in rows),
        duration_ms=round(sum(row.duration_ms for row in rows), 6),
        buckets={i: count for i, count in enumerate(buckets) if count},
    )


async def edge_figures(db: Database, org_id: str, link: Link) -> Figures | None:
    return await figures(db, org_id, link_id(org_id, link))


async def node_figures(db: Database, org_id: str, key: Key) -> Figures | None:
    return await figures(db, org_id, key.id_in(org_id))


async def all_minutes(db: Database) -> list[tuple[Any, ...]]:
    def read(conn: Connection) -> list[tuple[Any, ...]]:
        return sorted(tuple(row) for row in conn.execute(graph_minutes.select()))

    return await db.read(read)


@dataclass(frozen=True)
class Cursor:
    org_id: str
    series_key: str
    start_us: int
    time_us: int
    count: float


async def cursors(db: Database) -> list[Cursor]:
    """Every stored running total, of every organization."""

    def read(conn: Connection) -> list[Cursor]:
        return sorted(
            (
                Cursor(row.org_id, row.series_key, row.start_us, row.time_us, row._mapping["count"])
                for row in conn.execute(graph_metric_cursors.select())
            ),
            key=lambda cursor: (cursor.org_id, cursor.time_us, cursor.count),
        )

    return await db.read(read)


async def node_details(
    http: httpx.AsyncClient, key: str, name: str, **params: str
) -> dict[str, Any]:
    """`GET /api/v1/graph/nodes/{name}`: a node, its edges with their statistics."""
    response = await http.get(
        f"{GRAPH}/nodes/{name}", params=params, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def edge_lines(lines: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], tuple[Any, Any]]:
    """(from, to, kind) -> (calls, errors) of a node's upstream or downstream edges; None
    for an edge without statistics in the last hour."""
    return {
        (line["from"], line["to"], line["kind"]): (line.get("calls"), line.get("errors"))
        for line in lines
    }


def landing(low_s: float, high_s: float) -> int:
    """The Trailmap bucket a connector bucket's calls go to: its geometric middle's."""
    return bucket_of(math.sqrt(low_s * high_s) * 1000)


FIRST = bucket_of(BOUNDS_S[0] / 2 * 1000)  # the connector's (0, 2 ms] bucket
AT_3MS, AT_30MS = landing(0.002, 0.004), landing(0.01, 0.05)
AT_300MS, AT_600MS = landing(0.2, 0.4), landing(0.4, 0.8)


# -- what the connector's metrics make -------------------------------------------------------

FRONTEND, CHECKOUT = Key("frontend"), Key("checkout")
ORDERS, SHIPPING = Key("orders"), Key("shipping")
ORDER_EVENTS = Key("order-events", "topic")


async def test_the_connectors_metrics_make_services_databases_topics_and_external_apis(
    encoding: str,
    connectors: Connectors,
    otlp_client: httpx.AsyncClient,
    db: Database,
    tenant: Tenant,
) -> None:
    connector = connectors.make(encoding=encoding)
    connector.call("frontend", "checkout")
    connector.call("checkout", "orders-db", connection_type="database")
    redis = {"server_db.system": "redis"}
    connector.call("checkout", "sessions", connection_type="database", dimensions=redis)
    # On a database edge the real connector has only the client span's attributes.
    memcached = {"client_db.system": "memcached"}
    connector.call("orders", "prices", connection_type="database", dimensions=memcached)
    kafka = {
        "client_messaging.destination.name": "order-events",
        "server_messaging.destination.name": "order-events",
    }
    connector.call("orders", "shipping", connection_type="messaging_system", dimensions=kafka)
    rabbit = {
        "client_messaging.destination.name": "invoices",
        "server_messaging.system": "rabbitmq",
    }
    connector.call("billing", "ledger", connection_type="messaging_system", dimensions=rabbit)
    connector.call("audit", "archive", connection_type="messaging_system")
    connector.call("checkout", "api.stripe.com", connection_type="virtual_node")
    connector.call("user", "frontend", client_s=0.0, server_s=0.06, connection_type="virtual_node")
    connector.call("shipping", "unknown", server_s=0.0, connection_type="virtual_node")
    await connector.flush()

    nodes, edges = await graph_of(db, tenant.org.id)
    database, cache = Key("orders-db", "database"), Key("sessions", "cache")
    prices, stripe = Key("prices", "cache"), Key("api.stripe.com", "external_api")
    invoices, audit_queue = Key("invoices", "queue"), Key("audit messages", "queue")
    billing, ledger, audit, archive = Key("billing"), Key("ledger"), Key("audit"), Key("archive")
    assert edges == {
        (FRONTEND, CHECKOUT, "calls"),
        (CHECKOUT, database, "reads_writes"),
        (CHECKOUT, cache, "reads_writes"),
        (ORDERS, prices, "reads_writes"),
        (ORDERS, ORDER_EVENTS, "publishes"),
        (SHIPPING, ORDER_EVENTS, "consumes"),
        (billing, invoices, "publishes"),
        (ledger, invoices, "consumes"),
        (audit, audit_queue, "publishes"),
        (archive, audit_queue, "consumes"),
        (CHECKOUT, stripe, "calls"),
    }
    # Neither "user" nor "unknown" is a node.
    assert nodes == {node for edge in edges for node in edge[:2]}

    topic = await node_details(otlp_client, tenant.reader, "order-events")
    assert (topic["kind"], topic["connected_services"]) == ("topic", ["orders", "shipping"])
    assert edge_lines(topic["upstream"]) == {
        ("orders", "order-events", "publishes"): (1, 0),
        ("shipping", "order-events", "consumes"): (1, 0),
    }
    # Traffic from outside: no edge, but the frontend's own statistics count it.
    frontend = await node_details(otlp_client, tenant.reader, "frontend")
    assert frontend["upstream"] == []
    assert (frontend["last_hour"]["calls"], frontend["last_hour"]["errors"]) == (1, 0)
    shipping = await node_details(otlp_client, tenant.reader, "shipping")
    assert edge_lines(shipping["downstream"]) == {("shipping", "order-events", "consumes"): (1, 0)}
    # The db.system and messaging.system dimensions are the nodes' technology.
    for name, kept in (
        ("sessions", {"technology": "redis"}),
        ("prices", {"technology": "memcached"}),
        ("invoices", {"technology": "rabbitmq"}),
        ("orders-db", {}),
    ):
        assert (await node_details(otlp_client, tenant.reader, name))["attributes"] == kept


async def test_an_edge_counts_its_clients_latencies_and_a_service_its_servers(
    connectors: Connectors, otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    connector = connectors.make()
    connector.call("frontend", "checkout", client_s=0.003, server_s=0.0025)
    connector.call("frontend", "checkout", client_s=0.03, server_s=0.02)
    connector.call("frontend", "checkout", client_s=0.3, server_s=0.25, failed=True)
    connector.call("orders", "checkout", client_s=0.7, server_s=0.6)
    destination = {"client_messaging.destination.name": "order-events"}
    connector.call(
        "orders",
        "shipping",
        client_s=0.001,
        server_s=0.5,
        connection_type="messaging_system",
        dimensions=destination,
    )
    connector.call("checkout", "orders-db", client_s=0.007, connection_type="database")
    await connector.flush()

    org = tenant.org.id
    # Calls and latencies are the histograms'; errors are request_failed_total's, counted
    # against the edge and the service it reached; request_total adds nothing.
    assert await edge_figures(db, org, (FRONTEND, CHECKOUT, "calls")) == Figures(
        3, 1, 333.0, {AT_3MS: 1, AT_30MS: 1, AT_300MS: 1}
    )
    assert await edge_figures(db, org, (ORDERS, CHECKOUT, "calls")) == Figures(
        1, 0, 700.0, {AT_600MS: 1}
    )
    assert await node_figures(db, org, CHECKOUT) == Figures(
        4, 1, 872.5, {AT_3MS: 1, AT_30MS: 1, AT_300MS: 1, AT_600MS: 1}
    )
    # A message: the publisher's latency on its edge, the consumer's on its own and its edge.
    assert await edge_figures(db, org, (ORDERS, ORDER_EVENTS, "publishes")) == Figures(
        1, 0, 1.0, {FIRST: 1}
    )
    assert await edge_figures(db, org, (SHIPPING, ORDER_EVENTS, "consumes")) == Figures(
        1, 0, 500.0, {AT_600MS: 1}
    )
    assert await node_figures(db, org, SHIPPING) == Figures(1, 0, 500.0, {AT_600MS: 1})
    database = Key("orders-db", "database")
    assert await edge_figures(db, org, (CHECKOUT, database, "reads_writes")) == Figures(
        1, 0, 7.0, {landing(0.006, 0.008): 1}
    )
    # Only services have statistics of their own; a client's calls are not its own.
    for key in (FRONTEND, ORDERS, database, ORDER_EVENTS):
        assert await node_figures(db, org, key) is None

    checkout = await node_details(otlp_client, tenant.reader, "checkout")
    assert edge_lines(checkout["upstream"]) == {
        ("frontend", "checkout", "calls"): (3, 1),
        ("orders", "checkout", "calls"): (1, 0),
    }
    assert edge_lines(checkout["downstream"]) == {("checkout", "orders-db", "reads_writes"): (1, 0)}
    last_hour = checkout["last_hour"]
    assert (last_hour["calls"], last_hour["errors"], last_hour["error_rate"]) == (4, 1, 0.25)
    assert last_hour["mean_ms"] == round(872.5 / 4, 1)


async def test_a_collector_that_does_not_label_failed_calls_counts_the_same_errors(
    connectors: Connectors, db: Database, tenant: Tenant
) -> None:
    """Before 2024 the connector did not split its series by `failed`: errors come from
    request_failed_total either way, against the edge and the service it reached."""
    connector = connectors.make(labels_failed=False)
    connector.call("frontend", "checkout", client_s=0.03, server_s=0.02)
    connector.call("frontend", "checkout", client_s=0.03, server_s=0.02)
    connector.call("frontend", "checkout", client_s=0.3, server_s=0.25, failed=True)
    await connector.flush()

    assert await edge_figures(db, tenant.org.id, (FRONTEND, CHECKOUT, "calls")) == Figures(
        3, 1, 360.0, {AT_30MS: 2, AT_300MS: 1}
    )
    assert await node_figures(db, tenant.org.id, CHECKOUT) == Figures(
        3, 1, 290.0, {landing(0.01, 0.05): 2, AT_300MS: 1}
    )


# -- running totals -----------------------------------------------------------------------------


async def test_a_second_flush_of_running_totals_adds_only_the_calls_made_since_the_first(
    connectors: Connectors, db: Database, tenant: Tenant
) -> None:
    connector = connectors.make()
    connector.call("frontend", "checkout", client_s=0.03)
    connector.call("frontend", "checkout", client_s=0.03)
    await connector.flush()
    connector.call("frontend", "checkout", client_s=0.03)
    connector.call("frontend", "checkout", client_s=0.3, failed=True)
    connector.call("frontend", "orders", client_s=0.003)
    await connector.flush()

    org = tenant.org.id
    assert await edge_figures(db, org, (FRONTEND, CHECKOUT, "calls")) == Figures(
        4, 1, 390.0, {AT_30MS: 3, AT_300MS: 1}
    )
    assert await edge_figures(db, org, (FRONTEND, ORDERS, "calls")) == Figures(
        1, 0, 3.0, {AT_3MS: 1}
    )
    assert await node_figures(db, org, CHECKOUT) == Figures(4, 1, 80.0, {AT_30MS: 4})
    # Where each running total stood at the second flush: one per metric and series.
    second = decoded(connector.wire.exchanges[-1].body).resource_metrics[0].scope_metrics[0]
    sent_at = {
        point.time_unix_nano // 1000
        for metric in second.metrics
        for point in (*metric.sum.data_points, *metric.histogram.data_points)
    }
    stored = await cursors(db)
    assert {cursor.time_us for cursor in stored} == sent_at
    # calls, client and server latencies of 3 series, and the failed series' failed total
    assert sorted(cursor.count for cursor in stored) == [1.0] * 7 + [3.0] * 3


async def test_collector_replicas_that_name_themselves_keep_their_own_running_totals(
    connectors: Connectors, db: Database, tenant: Tenant
) -> None:
    # The connector scaled out behind a load-balancing exporter (by trace id): each replica
    # pairs its own share of the traces and sends its own running total of the same edge,
    # named apart by a resource attribute its Collector was given.
    replicas = [
        connectors.make(resource=Resource({"service.instance.id": f"collector-{n}"}))
        for n in (1, 2)
    ]
    calls = [(2, 5), (1, 1)]  # per flush round, per replica
    for round_calls in calls:
        for replica, count in zip(replicas, round_calls, strict=True):
            for _ in range(count):
                replica.call("frontend", "checkout", client_s=0.03)
            await replica.flush()

    total = sum(map(sum, calls))
    assert await edge_figures(db, tenant.org.id, (FRONTEND, CHECKOUT, "calls")) == Figures(
        total, 0, 30.0 * total, {AT_30MS: total}
    )


async def test_the_same_export_sent_twice_adds_nothing_the_second_time(
    connectors: Connectors, otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    connector = connectors.make()
    connector.call("frontend", "checkout", client_s=0.03)
    connector.call("frontend", "checkout", client_s=0.3, failed=True)
    await connector.flush()
    minutes, totals = await all_minutes(db), await cursors(db)
    assert await edge_figures(db, tenant.org.id, (FRONTEND, CHECKOUT, "calls")) == Figures(
        2, 1, 330.0, {AT_30MS: 1, AT_300MS: 1}
    )

    (exchange,) = connector.wire.exchanges
    again = await otlp_client.post(METRICS, content=exchange.body, headers=exchange.headers)
    assert (again.status_code, again.content) == (200, exchange.answer)
    assert await all_minutes(db) == minutes
    assert await cursors(db) == totals


@pytest.mark.parametrize(
    ("age_s", "counted_from_start"),
    [(120, True), (121, False), (3 * 3600, False)],
    ids=["started-2-min-before", "started-121-s-before", "started-3-h-before"],
)
async def test_a_series_first_seen_long_after_its_start_proves_its_edge_and_counts_from_then(
    age_s: int,
    counted_from_start: bool,
    otlp_client: httpx.AsyncClient,
    db: Database,
    tenant: Tenant,
) -> None:
    now_us = clock.now_us()
    start_us, first_us = now_us - 60 * SECOND_US - age_s * SECOND_US, now_us - 60 * SECOND_US
    labels = labels_of("frontend", "checkout")

    def export_at(
        time_us: int, client: list[float], server: list[float]
    ) -> ExportMetricsServiceRequest:
        at = Times(start_us, time_us)
        return connector_export(
            counter(TOTAL, count_point(len(client), labels, at)),
            latency(CLIENT, latency_point(client, labels, at)),
            latency(SERVER, latency_point(server, labels, at)),
        )

    org, edge = tenant.org.id, (FRONTEND, CHECKOUT, "calls")
    first = export_at(first_us, [0.03] * 10, [0.02] * 10)
    assert await post(otlp_client, tenant.writer, first) == ACCEPTED
    _, edges = await graph_of(db, org)
    assert edges == {edge}
    before = Figures(10, 0, 300.0, {AT_30MS: 10}) if counted_from_start else None
    assert await edge_figures(db, org, edge) == before
    # The histograms' running totals; request_total, which counts what they count, has none.
    assert len(await cursors(db)) == 2

    later = export_at(now_us, [0.03] * 10 + [0.3] * 4, [0.02] * 10 + [0.25] * 4)
    assert await post(otlp_client, tenant.writer, later) == ACCEPTED
    if counted_from_start:
        assert await edge_figures(db, org, edge) == Figures(
            14, 0, 1500.0, {AT_30MS: 10, AT_300MS: 4}
        )
        assert await node_figures(db, org, CHECKOUT) == Figures(
            14, 0, 1200.0, {AT_30MS: 10, AT_300MS: 4}
        )
    else:
        assert await edge_figures(db, org, edge) == Figures(4, 0, 1200.0, {AT_300MS: 4})
        assert await node_figures(db, org, CHECKOUT) == Figures(4, 0, 1000.0, {AT_300MS: 4})


def client_export(calls: int, start_us: int, time_us: int) -> ExportMetricsServiceRequest:
    """The connector's client latencies of frontend -> checkout: `calls` calls of 30 ms
    counted since `start_us`, as of `time_us`."""
    labels = labels_of("frontend", "checkout")
    point = latency_point([0.03] * calls, labels, Times(start_us, time_us))
    return connector_export(latency(CLIENT, point))


EDGE = (FRONTEND, CHECKOUT, "calls")


@pytest.mark.parametrize("calls_after", [3, 12], ids=["lower-count", "higher-count"])
async def test_a_collector_that_restarts_counts_from_its_new_start_beside_its_old_total(
    calls_after: int, otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    now_us = clock.now_us()
    first_us, second_us = now_us - 60 * SECOND_US, now_us
    first_start, second_start = first_us - 30 * SECOND_US, second_us - 20 * SECOND_US

    first = client_export(10, first_start, first_us)
    assert await post(otlp_client, tenant.writer, first) == ACCEPTED
    assert await edge_figures(db, tenant.org.id, EDGE) == Figures(10, 0, 300.0, {AT_30MS: 10})
    again = client_export(calls_after, second_start, second_us)
    assert await post(otlp_client, tenant.writer, again) == ACCEPTED

    total = 10 + calls_after
    assert await edge_figures(db, tenant.org.id, EDGE) == Figures(
        total, 0, 30.0 * total, {AT_30MS: total}
    )
    assert [(c.start_us, c.time_us, c.count) for c in await cursors(db)] == [
        (first_start, first_us, 10),
        (second_start, second_us, calls_after),
    ]


@pytest.mark.parametrize(
    ("silence_s", "calls_after", "counted"),
    [(60, 3, 3), (16 * 60, 12, 12), (14 * 60, 12, 2)],
    ids=["lower-count", "after-15-minutes-of-silence", "within-15-minutes-the-difference"],
)
async def test_a_series_the_connector_forgot_and_began_again_counts_whole(
    silence_s: int,
    calls_after: int,
    counted: int,
    otlp_client: httpx.AsyncClient,
    db: Database,
    tenant: Tenant,
) -> None:
    """The connector drops a series after 15 minutes without calls and begins it again from
    0 with its start time unchanged: a lower value, or any value after a longer silence, is
    all new calls; otherwise only the difference is."""
    now_us = clock.now_us()
    first_us, second_us = now_us - silence_s * SECOND_US, now_us
    start = first_us - 30 * SECOND_US

    assert await post(otlp_client, tenant.writer, client_export(10, start, first_us)) == ACCEPTED
    again = client_export(calls_after, start, second_us)
    assert await post(otlp_client, tenant.writer, again) == ACCEPTED

    total = 10 + counted
    assert await edge_figures(db, tenant.org.id, EDGE) == Figures(
        total, 0, 30.0 * total, {AT_30MS: total}
    )
    (cursor,) = await cursors(db)
    assert (cursor.start_us, cursor.time_us, cursor.count) == (start, second_us, calls_after)


async def test_a_new_series_of_a_collector_heard_from_before_counts_whole(
    otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    """A Collector that started hours ago: its first export proves edges only, but an edge
    that first appears in a later export is new since then, and all its calls count."""
    now_us = clock.now_us()
    start = now_us - 3 * 3600 * SECOND_US
    first_us = now_us - 60 * SECOND_US
    old_labels = labels_of("frontend", "checkout")
    first = connector_export(
        latency(CLIENT, latency_point([0.03] * 10, old_labels, Times(start, first_us)))
    )
    assert await post(otlp_client, tenant.writer, first) == ACCEPTED
    assert await edge_figures(db, tenant.org.id, EDGE) is None

    new_labels = labels_of("checkout", "payments")
    later = connector_export(
        latency(
            CLIENT,
            latency_point([0.03] * 10, old_labels, Times(start, now_us)),
            latency_point([0.03] * 4, new_labels, Times(start, now_us)),
        )
    )
    assert await post(otlp_client, tenant.writer, later) == ACCEPTED
    assert await edge_figures(db, tenant.org.id, EDGE) is None
    payments = (CHECKOUT, Key("payments"), "calls")
    assert await edge_figures(db, tenant.org.id, payments) == Figures(4, 0, 120.0, {AT_30MS: 4})


async def test_a_higher_total_stamped_earlier_counts_its_difference(
    otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    """A point stamped ahead (a Collector's clock that ran fast, then was corrected) does
    not hide the higher totals stamped before it."""
    now_us = clock.now_us()
    start = now_us - 90 * SECOND_US
    exports = [
        client_export(2, start, now_us - 60 * SECOND_US),
        client_export(4, start, now_us + 10 * 60 * SECOND_US),  # the clock ran ahead
        client_export(7, start, now_us),  # and was put right
    ]
    for export in exports:
        assert await post(otlp_client, tenant.writer, export) == ACCEPTED
    counted = Figures(7, 0, 210.0, {AT_30MS: 7})
    assert await edge_figures(db, tenant.org.id, EDGE) == counted
    # Sent again, none adds anything.
    for export in exports:
        assert await post(otlp_client, tenant.writer, export) == ACCEPTED
    assert await edge_figures(db, tenant.org.id, EDGE) == counted


async def test_delta_temporality_counts_each_export_as_it_is(
    connectors: Connectors, db: Database, tenant: Tenant
) -> None:
    connector = connectors.make(temporality="delta")
    connector.call("frontend", "checkout", client_s=0.03)
    connector.call("frontend", "checkout", client_s=0.03)
    await connector.flush()
    connector.call("frontend", "checkout", client_s=0.03)
    connector.call("frontend", "checkout", client_s=0.3, failed=True)
    await connector.flush()

    for exchange in connector.wire.exchanges:
        metrics = decoded(exchange.body).resource_metrics[0].scope_metrics[0].metrics
        assert {m.name: m.histogram.aggregation_temporality for m in metrics if m.unit == "s"} == {
            CLIENT: DELTA,
            SERVER: DELTA,
        }
    assert await edge_figures(db, tenant.org.id, (FRONTEND, CHECKOUT, "calls")) == Figures(
        4, 1, 390.0, {AT_30MS: 3, AT_300MS: 1}
    )
    assert await node_figures(db, tenant.org.id, CHECKOUT) == Figures(4, 1, 80.0, {AT_30MS: 4})
    assert await cursors(db) == []  # nothing to subtract from


# -- what the data points say ---------------------------------------------------------------------


async def test_environment_dimensions_put_each_node_in_its_environment(
    connectors: Connectors, otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    production = {
        "client_deployment.environment.name": "production",
        "server_deployment.environment.name": "production",
    }
    connector = connectors.make()
    connector.call("frontend", "checkout", dimensions=production)
    connector.call(
        "checkout",
        "payments",
        dimensions={
            "client_deployment.environment.name": "production",
            "server_deployment.environment.name": "staging",
        },
    )
    database_in = {"client_deployment.environment.name": "production"}
    connector.call("checkout", "orders-db", connection_type="database", dimensions=database_in)
    older = {"client_deployment.environment": "qa", "server_deployment.environment": "qa"}
    connector.call("tester", "checkout", dimensions=older)
    connector.call("frontend", "checkout")
    await connector.flush()

    frontend, checkout = (
        Key("frontend", environment="production"),
        Key("checkout", "service", "production"),
    )
    payments = Key("payments", "service", "staging")
    database = Key("orders-db", "database", "production")
    tester, qa_checkout = Key("tester", "service", "qa"), Key("checkout", "service", "qa")
    nodes, edges = await graph_of(db, tenant.org.id)
    assert edges == {
        (frontend, checkout, "calls"),
        (checkout, payments, "calls"),
        (checkout, database, "reads_writes"),
        (tester, qa_checkout, "calls"),
        (FRONTEND, CHECKOUT, "calls"),
    }
    assert nodes == {
        frontend,
        checkout,
        payments,
        database,
        tester,
        qa_checkout,
        FRONTEND,
        CHECKOUT,
    }

    in_production = await node_details(
        otlp_client, tenant.reader, "checkout", environment="production"
    )
    assert in_production["environment"] == "production"
    assert edge_lines(in_production["upstream"]) == {("frontend", "checkout", "calls"): (1, 0)}
    assert edge_lines(in_production["downstream"]) == {
        ("checkout", "orders-db", "reads_writes"): (1, 0),
        ("checkout", "payments", "calls"): (1, 0),
    }
    by_default = await node_details(otlp_client, tenant.reader, "checkout", environment="default")
    assert edge_lines(by_default["upstream"]) == {("frontend", "checkout", "calls"): (1, 0)}
    assert by_default["downstream"] == []


@pytest.mark.parametrize(
    ("suffix", "unit", "scale"),
    [("_seconds", "", 1.0), ("", "ms", 1000.0)],
    ids=["legacy-name-in-seconds", "milliseconds"],
)
async def test_legacy_latency_names_and_units_are_read_in_their_unit(
    suffix: str,
    unit: str,
    scale: float,
    otlp_client: httpx.AsyncClient,
    db: Database,
    tenant: Tenant,
) -> None:
    now_us = clock.now_us()
    at = Times(now_us - 10 * SECOND_US, now_us)
    labels = labels_of("frontend", "checkout")
    bounds = [bound * scale for bound in BOUNDS_S]

    def point(values_s: list[float]) -> HistogramDataPoint:
        return latency_point([v * scale for v in values_s], labels, at, bounds=bounds)

    request = connector_export(
        latency(CLIENT + suffix, point([0.03, 0.3]), unit=unit),
        latency(SERVER + suffix, point([0.02, 0.6]), unit=unit),
    )
    assert await post(otlp_client, tenant.writer, request) == ACCEPTED

    org = tenant.org.id
    assert await edge_figures(db, org, (FRONTEND, CHECKOUT, "calls")) == Figures(
        2, 0, 330.0, {AT_30MS: 1, AT_300MS: 1}
    )
    assert await node_figures(db, org, CHECKOUT) == Figures(2, 0, 620.0, {AT_30MS: 1, AT_600MS: 1})


async def test_an_exponential_latency_histogram_is_read_too(
    otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    # The connector without latency_histogram_buckets: scale 0, bucket i holds (2**i, 2**(i+1)]
    # seconds; offset -6 puts the first at (1/64, 1/32] s.
    now_us = clock.now_us()
    point = ExponentialHistogramDataPoint(
        attributes=attributes(labels_of("frontend", "checkout")),
        start_time_unix_nano=(now_us - 10 * SECOND_US) * 1000,
        time_unix_nano=now_us * 1000,
        count=3,
        sum=0.075,
        scale=0,
        positive=ExponentialHistogramDataPoint.Buckets(offset=-6, bucket_counts=[3]),
    )
    histogram = ExponentialHistogram(data_points=[point], aggregation_temporality=CUMULATIVE)
    request = connector_export(Metric(name=CLIENT, unit="s", exponential_histogram=histogram))
    assert await post(otlp_client, tenant.writer, request) == ACCEPTED

    assert await edge_figures(db, tenant.org.id, (FRONTEND, CHECKOUT, "calls")) == Figures(
        3, 0, 75.0, {landing(2**-6, 2**-5): 3}
    )


async def test_an_exponential_client_latency_point_without_a_time_is_taken_as_of_its_arrival(
    otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    # Collectors before collector-contrib#48049 leave timeUnixNano out of the exponential
    # client-latency points (and only those): the edge's calls must not be lost for it.
    start_us = clock.now_us() - 10 * SECOND_US

    def unstamped(count: int, *, name: str = CLIENT) -> Metric:
        point = ExponentialHistogramDataPoint(
            attributes=attributes(labels_of("frontend", "checkout")),
            start_time_unix_nano=start_us * 1000,
            count=count,
            sum=0.025 * count,
            scale=0,
            positive=ExponentialHistogramDataPoint.Buckets(offset=-6, bucket_counts=[count]),
        )
        histogram = ExponentialHistogram(data_points=[point], aggregation_temporality=CUMULATIVE)
        return Metric(name=name, unit="s", exponential_histogram=histogram)

    before_us = clock.now_us()
    assert await post(otlp_client, tenant.writer, connector_export(unstamped(3))) == ACCEPTED
    assert await post(otlp_client, tenant.writer, connector_export(unstamped(5))) == ACCEPTED
    after_us = clock.now_us()

    assert await edge_figures(db, tenant.org.id, (FRONTEND, CHECKOUT, "calls")) == Figures(
        5, 0, 125.0, {landing(2**-6, 2**-5): 5}
    )
    (cursor,) = await cursors(db)
    assert before_us <= cursor.time_us <= after_us
    # Any other point without a time is still refused: the server side's is always stamped.
    answer = await post(otlp_client, tenant.writer, connector_export(unstamped(1, name=SERVER)))
    assert answer.rejected == 1
    assert "needs timeUnixNano" in answer.message


async def test_bad_data_points_are_refused_with_a_reason_and_their_neighbours_kept(
    encoding: str, otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    now_us = clock.now_us()
    at = Times(now_us - 10 * SECOND_US, now_us)
    long_ago_us = now_us - 400 * DAY_US
    good = labels_of("frontend", "checkout")
    request = connector_export(
        latency(CLIENT, latency_point([0.03], good, at)),
        Metric(
            name=TOTAL,
            gauge=Gauge(data_points=[count_point(1, labels_of("gauge", "checkout"), at)]),
        ),
        counter(
            TOTAL,
            count_point(1, good, at),
            count_point(1, labels_of("grpc", "checkout", connection_type="grpc"), at),
            count_point(1, {"client": "lonely", "connection_type": "", "failed": False}, at),
        ),
        latency(SERVER, latency_point([0.02], labels_of("bytes", "checkout"), at), unit="By"),
        latency(
            CLIENT,
            latency_point(
                [0.03],
                labels_of("old", "checkout"),
                Times(long_ago_us - 10 * SECOND_US, long_ago_us),
            ),
        ),
    )
    answer = await post(otlp_client, tenant.writer, request, encoding)

    assert answer.rejected == 5
    reasons = answer.message.split("; ")
    assert len(reasons) == 5, answer.message
    gauge, grpc, lonely, unit, old = reasons
    assert TOTAL in gauge
    assert "sum, not a gauge" in gauge
    assert "connection_type 'grpc'" in grpc
    assert "needs its client and server" in lonely
    assert SERVER in unit
    assert "unit 'By' is not a unit of time" in unit
    assert "retention window" in old

    nodes, edges = await graph_of(db, tenant.org.id)
    assert (nodes, edges) == ({FRONTEND, CHECKOUT}, {(FRONTEND, CHECKOUT, "calls")})
    assert await edge_figures(db, tenant.org.id, (FRONTEND, CHECKOUT, "calls")) == Figures(
        1, 0, 30.0, {AT_30MS: 1}
    )
    # The good histogram's; the good total's edge has a histogram, so the total is not kept.
    assert len(await cursors(db)) == 1


# -- organizations and retention ----------------------------------------------------------------


async def test_two_organizations_sending_the_same_series_keep_their_own_totals_and_graphs(
    otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    other = await make_org(db)
    other_writer = await make_key(db, other)
    other_reader = await make_key(db, other, scope="read-only")
    now_us = clock.now_us()
    start_us = now_us - 90 * SECOND_US
    labels = labels_of("frontend", "checkout")

    def client(calls: int, time_us: int) -> ExportMetricsServiceRequest:
        point = latency_point([0.03] * calls, labels, Times(start_us, time_us))
        return connector_export(latency(CLIENT, point))

    first = client(3, now_us - 60 * SECOND_US)
    assert await post(otlp_client, tenant.writer, first) == ACCEPTED
    assert await post(otlp_client, other_writer, first) == ACCEPTED
    assert await post(otlp_client, tenant.writer, client(5, now_us)) == ACCEPTED

    edge = (FRONTEND, CHECKOUT, "calls")
    assert await edge_figures(db, tenant.org.id, edge) == Figures(5, 0, 150.0, {AT_30MS: 5})
    assert await edge_figures(db, other.id, edge) == Figures(3, 0, 90.0, {AT_30MS: 3})
    ours, theirs = sorted(await cursors(db), key=lambda c: c.org_id != tenant.org.id)
    assert ours.series_key == theirs.series_key
    assert (ours.org_id, ours.count, theirs.org_id, theirs.count) == (
        tenant.org.id,
        5.0,
        other.id,
        3.0,
    )
    for reader, calls in ((tenant.reader, 5), (other_reader, 3)):
        checkout = await node_details(otlp_client, reader, "checkout")
        assert edge_lines(checkout["upstream"]) == {("frontend", "checkout", "calls"): (calls, 0)}


async def test_the_retention_purge_deletes_running_totals_not_received_within_the_window(
    otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    days = tenant.org.retention_days
    assert days > 300
    now_us = clock.now_us()
    old_us = now_us - 300 * DAY_US

    def client(client_name: str, time_us: int) -> Metric:
        labels = labels_of(client_name, "checkout")
        return latency(CLIENT, latency_point([0.03], labels, Times(time_us - SECOND_US, time_us)))

    request = connector_export(client("stopped", old_us), client("frontend", now_us))
    assert await post(otlp_client, tenant.writer, request) == ACCEPTED
    assert [c.time_us for c in await cursors(db)] == [old_us, now_us]

    # The cutoff is the stopped total's time: kept; a microsecond later, gone.
    cutoff_at_old = clock.from_us(old_us) + timedelta(days=days)
    await purge_expired(db, now=cutoff_at_old)
    assert [c.time_us for c in await cursors(db)] == [old_us, now_us]
    await purge_expired(db, now=cutoff_at_old + timedelta(microseconds=1))
    assert [c.time_us for c in await cursors(db)] == [now_us]


# -- the rules, without a database ---------------------------------------------------------------


def test_a_buckets_calls_go_to_the_trailmap_bucket_of_its_geometric_middle() -> None:
    expected = [0] * LATENCY_BUCKETS
    expected[AT_30MS] = 3
    assert latency_buckets([(0.01, 0.05, 3)], unit_ms=1000) == tuple(expected)
    assert latency_buckets([(10.0, 50.0, 3)], unit_ms=1) == tuple(expected)
    assert latency_buckets([(0.01, 0.05, 0)], unit_ms=1000) == (0,) * LATENCY_BUCKETS


def test_the_bucket_from_zero_to_its_first_bound_counts_at_half_the_bound() -> None:
    found = latency_buckets([(0.0, 0.002, 2)], unit_ms=1000)
    assert {i: n for i, n in enumerate(found) if n} == {bucket_of(1.0): 2}


def test_the_overflow_bucket_counts_at_its_lower_bound() -> None:
    closed = latency_buckets([(15.0, 15.0, 1)], unit_ms=1000)  # as the receiver closes it
    open_ended = latency_buckets([(15.0, math.inf, 1)], unit_ms=1000)
    assert closed == open_ended
    assert {i: n for i, n in enumerate(closed) if n} == {bucket_of(15_000.0): 1}


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=17, max_size=17))
def test_latency_buckets_keep_every_call(counts: list[int]) -> None:
    edges = [0.0, *BOUNDS_S, math.inf]
    source = [(edges[i], edges[i + 1], count) for i, count in enumerate(counts)]
    found = latency_buckets(source, unit_ms=1000)
    assert len(found) == LATENCY_BUCKETS
    assert sum(found) == sum(counts)


def sample_of(labels: Mapping[str, Any], metric_name: str = CLIENT, **overrides: Any) -> EdgeSample:
    fields: dict[str, Any] = {
        "resource_environment": None,
        "start_us": 1,
        "time_us": 2,
        "cumulative": True,
        "count": 1.0,
    }
    return edge_sample(metric_name=metric_name, attributes=labels, **(fields | overrides))


def test_a_series_key_is_the_same_whatever_the_order_of_the_attributes() -> None:
    labels = labels_of("frontend", "checkout", **{"client_deployment.environment.name": "prod"})
    reordered = dict(reversed(list(labels.items())))
    assert list(reordered) != list(labels)
    key = sample_of(labels).series_key
    assert sample_of(reordered).series_key == key
    assert sample_of(labels, SERVER).series_key != key
    assert sample_of({**labels, "failed": True}).series_key != key
    # One Collector's total: another instance, or another start, is another series.
    other = sample_of(labels, instance="collector-2")
    assert other.series_key != key
    restarted = sample_of(labels, start_us=3, time_us=4)
    assert restarted.series_key != key


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        (labels_of("frontend", "checkout", connection_type="grpc"), "connection_type 'grpc'"),
        (labels_of("frontend", "checkout", connection_type="Database"), "connection_type"),
        ({"client": "frontend", "server": "checkout", "connection_type": 1}, "connection_type"),
        (labels_of("frontend", ""), "client and server"),
        (labels_of("", "checkout"), "client and server"),
    ],
    ids=["unknown", "capitalised", "not-a-string", "no-server", "no-client"],
)
def test_a_data_point_the_connector_cannot_send_is_refused(
    labels: Mapping[str, Any], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        sample_of(labels)


async def test_a_new_version_in_the_service_version_dimension_is_one_deployment(
    connectors: Connectors, otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """With `service.version` among the connector's dimensions, a version new for a
    service is a deployment detected from traces, as a span's resource makes it; the first
    version seen is when Trailmap began to watch."""
    connector = connectors.make()
    versions = {"client_service.version": "2.0.0", "server_service.version": "1.4.0"}
    connector.call("frontend", "checkout", dimensions=versions)
    await connector.flush()

    async def deployments() -> list[dict[str, Any]]:
        answer = await otlp_client.get(
            "/api/v1/events", params={"type": "deployment"}, headers=tenant.auth()
        )
        assert answer.status_code == 200, answer.text
        events: list[dict[str, Any]] = answer.json()["data"]["events"]
        return events

    assert await deployments() == []
    connector.call(
        "frontend", "checkout", dimensions={**versions, "server_service.version": "1.5.0"}
    )
    await connector.flush()
    (deployment,) = await deployments()
    assert (deployment["source"], deployment["service"], deployment["version"]) == (
        "otel://checkout",
        "checkout",
        "1.5.0",
    )
    assert deployment["data"]["detected_from"] == "traces"

    connector.call(
        "frontend", "checkout", dimensions={**versions, "server_service.version": "1.5.0"}
    )
    await connector.flush()
    assert [event["id"] for event in await deployments()] == [deployment["id"]]


async def test_the_legacy_request_duration_name_is_the_server_sides_latency(
    otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    now_us = clock.now_us()
    at = Times(now_us - 10 * SECOND_US, now_us)
    point = latency_point([0.02, 0.6], labels_of("frontend", "checkout"), at)
    request = connector_export(
        latency("traces_service_graph_request_duration_seconds", point, unit="")
    )
    assert await post(otlp_client, tenant.writer, request) == ACCEPTED

    org = tenant.org.id
    assert await node_figures(db, org, CHECKOUT) == Figures(2, 0, 620.0, {AT_30MS: 1, AT_600MS: 1})
    assert await edge_figures(db, org, (FRONTEND, CHECKOUT, "calls")) is None


async def test_request_total_alone_proves_its_edge_where_no_histogram_is_sent(
    otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    """A pipeline that drops the latency histograms still gets its edges from
    request_total (and no statistics); beside a histogram, request_total keeps nothing."""
    now_us = clock.now_us()
    at = Times(now_us - 10 * SECOND_US, now_us)
    request = connector_export(
        counter(TOTAL, count_point(3, labels_of("frontend", "checkout"), at)),
        counter(TOTAL, count_point(2, labels_of("checkout", "orders"), at)),
        latency(CLIENT, latency_point([0.03, 0.03], labels_of("checkout", "orders"), at)),
    )
    assert await post(otlp_client, tenant.writer, request) == ACCEPTED

    _, edges = await graph_of(db, tenant.org.id)
    assert edges == {(FRONTEND, CHECKOUT, "calls"), (CHECKOUT, ORDERS, "calls")}
    assert await edge_figures(db, tenant.org.id, (FRONTEND, CHECKOUT, "calls")) is None
    assert await edge_figures(db, tenant.org.id, (CHECKOUT, ORDERS, "calls")) == Figures(
        2, 0, 60.0, {AT_30MS: 2}
    )
    assert sorted(cursor.count for cursor in await cursors(db)) == [2.0, 3.0]


async def test_the_same_new_export_reaching_two_app_nodes_at_once_counts_once(
    otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    """A retried export that arrives while the first is still being stored (two app nodes,
    two connections to PostgreSQL): the two take their Collector's lock in turn, so the
    second finds the first's totals and adds nothing."""
    now_us = clock.now_us()
    start = now_us - 30 * SECOND_US
    exports = [client_export(10, start, now_us) for _ in range(4)]

    async with anyio.create_task_group() as group:
        for export in exports:
            group.start_soon(post, otlp_client, tenant.writer, export)

    assert await edge_figures(db, tenant.org.id, EDGE) == Figures(10, 0, 300.0, {AT_30MS: 10})
    (cursor,) = await cursors(db)
    assert (cursor.start_us, cursor.time_us, cursor.count) == (start, now_us, 10)
