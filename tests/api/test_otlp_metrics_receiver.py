"""`POST /api/v1/otlp/v1/metrics` end to end: the OpenTelemetry SDK's own metrics pipeline
(a MeterProvider, a PeriodicExportingMetricReader and the official OTLP/HTTP exporters, in
protobuf and in JSON, gzip-compressed) talks to the app, and the points stored are exactly
what was measured; every refusal keeps Trailmap's one error shape."""

from __future__ import annotations

import gzip
import json
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio.from_thread
import anyio.to_thread
import httpx
import pytest

# protobuf ships no type information; only its JSON view of a message is used here.
from google.protobuf import json_format  # type: ignore[import-untyped]
from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport
from opentelemetry.exporter.otlp.common.http import Compression
from opentelemetry.exporter.otlp.json.http.metric_exporter import (
    OTLPMetricExporter as JSONMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as ProtobufMetricExporter,
)
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from tests.api.otlp_common import (
    JSON,
    MAX_DATA_POINTS,
    MAX_METRICS,
    PROTOBUF,
    assert_documented,
    refused,
    refuses_a_body_declared_too_large,
    refuses_a_gzip_bomb,
    refuses_a_wrong_content_type,
    refuses_an_unknown_content_encoding,
    refuses_too_many_entries,
)
from tests.api.test_error_shape import assert_error_shape
from tests.conftest import Tenant
from tests.ingest.test_otlp_entry_limits import metrics_body, metrics_export
from tests.ingest.test_otlp_metrics_decoding import attributes, export, number
from trailmap import clock
from trailmap.metrics.sources import PushedSource
from trailmap.settings import Settings
from trailmap.storage import Connection, Database
from trailmap.storage import metrics as store

pytestmark = pytest.mark.anyio

METRICS = "/api/v1/otlp/v1/metrics"
SERVICE, ENVIRONMENT = "checkout", "production"
BOUNDS = (10.0, 50.0, 100.0, 500.0)
NAMES = (
    "orders",
    "queue.depth",
    "pool.size",
    "checkout.duration.count",
    "checkout.duration.sum",
    "checkout.duration.p50",
    "checkout.duration.p95",
    "checkout.duration.p99",
)


# -- the SDK's pipeline, wired to the app in-process --------------------------------------


@dataclass(frozen=True, slots=True)
class _Answer(BaseHTTPResult):
    body: bytes = b""
    answer_headers: Mapping[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        return self.body

    def headers(self) -> Mapping[str, str]:
        return self.answer_headers


@dataclass(frozen=True, slots=True)
class Exchange:
    headers: dict[str, str]
    body: bytes
    status: int
    answer: bytes


class AppTransport(BaseHTTPTransport):
    """The network under a real exporter: the exporter runs on a worker thread, and each of
    its requests hops back to the event loop to be answered by the app; the exporter gets
    the app's real answer. Every exchange is kept."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.exchanges: list[Exchange] = []

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        data: bytes | None = None,
    ) -> BaseHTTPResult:
        del timeout  # the app answers in-process
        send = partial(self.http.request, method, url, headers=headers, content=data)
        response = anyio.from_thread.run(send)
        sent = dict(headers or {})
        self.exchanges.append(Exchange(sent, data or b"", response.status_code, response.content))
        return _Answer(
            status_code=response.status_code,
            reason=response.reason_phrase,
            body=response.content,
            answer_headers=response.headers,
        )

    def close(self) -> None:
        pass

    def is_connection_error(self, exception: Exception | None) -> bool:
        return isinstance(exception, ConnectionError)


def real_exporter(encoding: str, wire: AppTransport, key: str) -> MetricExporter:
    """The official exporter; its temporality comes from the environment, as in production."""
    endpoint = f"http://testserver{METRICS}"
    headers = {"Authorization": f"Bearer {key}"}
    if encoding == "json":
        return JSONMetricExporter(
            endpoint=endpoint, headers=headers, compression=Compression.GZIP, _transport=wire
        )
    return ProtobufMetricExporter(
        endpoint=endpoint, headers=headers, compression=Compression.GZIP, _transport=wire
    )


class Shop:
    """One instance of a service, with its instruments: a counter, an up-down counter, an
    observable gauge and a histogram with explicit buckets; `flush` collects and exports as
    the periodic reader does on its timer."""

    def __init__(self, exporter: MetricExporter, instance: str | None = None) -> None:
        # An infinite interval: no timer thread, an export only when flushed.
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
        given = {"service.instance.id": instance} if instance else {}
        resource = Resource.create(
            {"service.name": SERVICE, "deployment.environment.name": ENVIRONMENT, **given}
        )
        # Without one given, the SDK makes up a service.instance.id for the process.
        self.instance = str(resource.attributes["service.instance.id"])
        self.provider = MeterProvider(
            metric_readers=[reader],
            resource=resource,
            views=[
                View(
                    instrument_name="checkout.duration",
                    aggregation=ExplicitBucketHistogramAggregation(boundaries=BOUNDS),
                )
            ],
            shutdown_on_exit=False,
        )
        meter = self.provider.get_meter("shop.checkout", "1.0")
        self.orders = meter.create_counter("orders")
        self.queue = meter.create_up_down_counter("queue.depth")
        self.duration = meter.create_histogram("checkout.duration", unit="ms")
        meter.create_observable_gauge("pool.size", callbacks=[self._pool])

    @staticmethod
    def _pool(_options: CallbackOptions) -> list[Observation]:
        return [Observation(42.5, {"pool": "main"})]

    async def flush(self) -> None:
        assert await anyio.to_thread.run_sync(self.provider.force_flush)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self.provider.shutdown)


@pytest.fixture
def wire(otlp_client: httpx.AsyncClient) -> AppTransport:
    return AppTransport(otlp_client)


def shop(
    monkeypatch: pytest.MonkeyPatch,
    encoding: str,
    wire: AppTransport,
    key: str,
    temporality: str,
    instance: str | None = None,
) -> Shop:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", temporality)
    return Shop(real_exporter(encoding, wire, key), instance)


# -- reading back what was stored ---------------------------------------------------------


async def stored(db: Database, tenant: Tenant) -> dict[str, list[tuple[int, float]]]:
    """name -> [(time_us, value)] of the service's points, in time (then value) order."""
    rows = await db.read(
        store.points,
        tenant.org.id,
        service=SERVICE,
        environment=ENVIRONMENT,
        names=NAMES,
        from_us=0,
        to_us=2**62,
    )
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in rows:  # (name, ..., time_us, value)
        out[row[0]].append((row[-2], row[-1]))
    return {name: sorted(points) for name, points in out.items()}


async def series_of(db: Database, tenant: Tenant) -> set[tuple[str, str, str]]:
    """(name, labels as JSON, kind) of every series the organization has."""

    def read(conn: Connection) -> list[Any]:
        query = "SELECT org_id, name, labels, kind FROM metric_series"
        return list(conn.exec_driver_sql(query).fetchall())

    out = set()
    for org_id, name, labels, kind in await db.read(read):
        if org_id == tenant.org.id:
            plain = json.loads(labels) if isinstance(labels, str) else labels
            out.add((name, json.dumps(plain, sort_keys=True), kind))
    return out


@dataclass(frozen=True, slots=True)
class Sent:
    """A data point as the exporter sent it."""

    time_us: int
    seconds: float  # the length of its interval

    def rate(self, value: float) -> float:
        return value / self.seconds


def sent(exchange: Exchange) -> dict[tuple[str, str], Sent]:
    """(metric name, label value or "") -> what the exporter sent, read from the wire with
    the OpenTelemetry proto classes (protobuf) or as plain JSON."""
    raw = gzip.decompress(exchange.body)
    if exchange.headers.get("content-type", "").startswith("application/json"):
        document = json.loads(raw)
    else:
        document = json_format.MessageToDict(ExportMetricsServiceRequest.FromString(raw))
    out = {}
    for resource in document["resourceMetrics"]:
        for scope in resource["scopeMetrics"]:
            for metric in scope["metrics"]:
                data = next(v for k, v in metric.items() if k in ("sum", "gauge", "histogram"))
                for point in data["dataPoints"]:
                    labels = [next(iter(a["value"].values())) for a in point.get("attributes", [])]
                    end, start = int(point["timeUnixNano"]), int(point.get("startTimeUnixNano", 0))
                    out[(metric["name"], "".join(labels))] = Sent(end // 1000, (end - start) / 1e9)
    return out


def labels(instance: str, **values: str) -> str:
    """A series' labels: the data point's attributes and its resource's service.instance.id."""
    return json.dumps({**values, "service.instance.id": instance}, sort_keys=True)


# -- the SDK's measurements, stored exactly -----------------------------------------------

FIRST_DURATIONS = (5.0, 20.0, 30.0, 70.0, 300.0, 900.0)  # one per bucket, two in (10, 50]


def measure_first(shop: Shop) -> None:
    shop.orders.add(3, {"route": "/buy"})
    shop.orders.add(2, {"route": "/buy"})
    shop.orders.add(1, {"route": "/cart"})
    shop.queue.add(5)
    shop.queue.add(-2)
    for value in FIRST_DURATIONS:
        shop.duration.record(value)


def measure_second(shop: Shop) -> None:
    shop.orders.add(4, {"route": "/buy"})
    shop.duration.record(15.0)


async def test_delta_exports_are_stored_as_rates_and_quantiles(
    monkeypatch: pytest.MonkeyPatch,
    encoding: str,
    wire: AppTransport,
    db: Database,
    tenant: Tenant,
) -> None:
    meters = shop(monkeypatch, encoding, wire, tenant.writer, "delta")
    try:
        measure_first(meters)
        await meters.flush()
        measure_second(meters)
        await meters.flush()
    finally:
        await meters.close()

    assert [(x.status, x.answer) for x in wire.exchanges] == [
        (200, b"" if encoding == "protobuf" else b"{}")
    ] * 2
    first, second = (sent(x) for x in wire.exchanges)
    buy, cart, duration = (
        first[("orders", "/buy")],
        first[("orders", "/cart")],
        first[("checkout.duration", "")],
    )
    buy2, duration2 = second[("orders", "/buy")], second[("checkout.duration", "")]
    queue, pool = first[("queue.depth", "")], first[("pool.size", "main")]
    queue2, pool2 = second[("queue.depth", "")], second[("pool.size", "main")]
    points = await stored(db, tenant)
    assert points == {
        # Counters with DELTA temporality: what changed, per second of each interval.
        "orders": sorted(
            [(buy.time_us, buy.rate(5)), (cart.time_us, cart.rate(1)), (buy2.time_us, buy2.rate(4))]
        ),
        "checkout.duration.count": [
            (duration.time_us, duration.rate(6)),
            (duration2.time_us, duration2.rate(1)),
        ],
        "checkout.duration.sum": [
            (duration.time_us, duration.rate(sum(FIRST_DURATIONS))),
            (duration2.time_us, duration2.rate(15)),
        ],
        # From the buckets; min 5 and max 900 close the open ones. Rank 3 of 6 is the top
        # of (10, 50]; ranks 5.7 and 5.94 fall in (500, 900].
        "checkout.duration.p50": [(duration.time_us, 50.0), (duration2.time_us, 15.0)],
        "checkout.duration.p95": [
            (duration.time_us, pytest.approx(780.0)),
            (duration2.time_us, 15.0),
        ],
        "checkout.duration.p99": [
            (duration.time_us, pytest.approx(876.0)),
            (duration2.time_us, 15.0),
        ],
        # The SDK keeps an UpDownCounter cumulative even when delta is preferred: a level.
        "queue.depth": [(queue.time_us, 3.0), (queue2.time_us, 3.0)],
        "pool.size": [(pool.time_us, 42.5), (pool2.time_us, 42.5)],
    }
    instance = meters.instance
    assert await series_of(db, tenant) == {
        ("orders", labels(instance, route="/buy"), "gauge"),
        ("orders", labels(instance, route="/cart"), "gauge"),
        ("queue.depth", labels(instance), "gauge"),
        ("pool.size", labels(instance, pool="main"), "gauge"),
        *(
            ("checkout.duration." + s, labels(instance), "gauge")
            for s in ("count", "sum", "p50", "p95", "p99")
        ),
    }


async def test_cumulative_exports_are_stored_as_running_totals_without_quantiles(
    monkeypatch: pytest.MonkeyPatch,
    encoding: str,
    wire: AppTransport,
    db: Database,
    tenant: Tenant,
) -> None:
    meters = shop(monkeypatch, encoding, wire, tenant.writer, "cumulative")
    try:
        measure_first(meters)
        await meters.flush()
        measure_second(meters)
        await meters.flush()
    finally:
        await meters.close()

    assert [x.status for x in wire.exchanges] == [200, 200]
    first, second = (sent(x) for x in wire.exchanges)
    t1 = first[("orders", "/buy")].time_us
    t2 = second[("orders", "/buy")].time_us
    assert {s.time_us for s in first.values()} == {t1}
    assert {s.time_us for s in second.values()} == {t2}
    assert await stored(db, tenant) == {
        "orders": [(t1, 1.0), (t1, 5.0), (t2, 1.0), (t2, 9.0)],  # /cart and /buy
        "checkout.duration.count": [(t1, 6.0), (t2, 7.0)],
        "checkout.duration.sum": [(t1, sum(FIRST_DURATIONS)), (t2, sum(FIRST_DURATIONS) + 15)],
        "queue.depth": [(t1, 3.0), (t2, 3.0)],
        "pool.size": [(t1, 42.5), (t2, 42.5)],
    }
    instance = meters.instance
    assert await series_of(db, tenant) == {
        ("orders", labels(instance, route="/buy"), "counter"),
        ("orders", labels(instance, route="/cart"), "counter"),
        ("queue.depth", labels(instance), "gauge"),
        ("pool.size", labels(instance, pool="main"), "gauge"),
        ("checkout.duration.count", labels(instance), "counter"),
        ("checkout.duration.sum", labels(instance), "counter"),
    }


async def test_two_instances_of_a_service_keep_their_own_counters_and_rates(
    monkeypatch: pytest.MonkeyPatch,
    otlp_client: httpx.AsyncClient,
    db: Database,
    tenant: Tenant,
) -> None:
    # Two processes of one service, each with its own running total; their exports
    # alternate, so that one series of both would read 10, 1000, 15, 1001.
    wires = {name: AppTransport(otlp_client) for name in ("pod-1", "pod-2")}
    pods = {
        name: shop(monkeypatch, "protobuf", wire, tenant.writer, "cumulative", instance=name)
        for name, wire in wires.items()
    }
    increments = {"pod-1": (10, 5), "pod-2": (1000, 1)}
    try:
        for step in (0, 1):
            for name, meters in pods.items():
                meters.orders.add(increments[name][step], {"route": "/buy"})
                await meters.flush()
    finally:
        for meters in pods.values():
            await meters.close()

    assert [x.status for wire in wires.values() for x in wire.exchanges] == [200] * 4
    assert {s for s in await series_of(db, tenant) if s[0] == "orders"} == {
        ("orders", labels("pod-1", route="/buy"), "counter"),
        ("orders", labels("pod-2", route="/buy"), "counter"),
    }
    expected = []
    for name, wire in wires.items():
        t1, t2 = (sent(x)[("orders", "/buy")].time_us for x in wire.exchanges)
        expected.append((t2, increments[name][1] / ((t2 - t1) / 1e6)))
    rates = (
        await PushedSource(db, tenant.org.id).fetch_many(
            ["orders"], service=SERVICE, environment=ENVIRONMENT, start_us=0, end_us=2**62
        )
    )["orders"]
    # Each instance's own increment over its own interval, and nothing else.
    assert rates.times_us == [t for t, _ in sorted(expected)]
    assert rates.values == pytest.approx([rate for _, rate in sorted(expected)])


async def test_the_same_export_sent_twice_stores_each_point_once(
    monkeypatch: pytest.MonkeyPatch,
    encoding: str,
    wire: AppTransport,
    otlp_client: httpx.AsyncClient,
    db: Database,
    tenant: Tenant,
) -> None:
    meters = shop(monkeypatch, encoding, wire, tenant.writer, "delta")
    try:
        measure_first(meters)
        await meters.flush()
    finally:
        await meters.close()
    once = await stored(db, tenant)
    assert sum(len(points) for points in once.values()) == 9
    (exchange,) = wire.exchanges
    again = await otlp_client.post(METRICS, content=exchange.body, headers=exchange.headers)
    assert (again.status_code, again.content) == (200, exchange.answer)
    assert await stored(db, tenant) == once


async def test_a_read_only_key_is_refused_and_nothing_is_stored(
    monkeypatch: pytest.MonkeyPatch, wire: AppTransport, db: Database, tenant: Tenant
) -> None:
    meters = shop(monkeypatch, "protobuf", wire, tenant.reader, "delta")
    try:
        measure_first(meters)
        await meters.flush()
    finally:
        await meters.close()
    (exchange,) = wire.exchanges  # a 403 is not retried
    assert exchange.status == 403
    body = json.loads(exchange.answer)
    assert (body["success"], body["code"]) == (False, "FORBIDDEN")
    assert await stored(db, tenant) == {}


# -- partial success: the good points are kept -------------------------------------------


def partly_bad_export() -> ExportMetricsServiceRequest:
    """Two good gauge points, one NaN, one older than any retention window."""
    now_ns = clock.to_us(clock.now()) * 1000
    old_ns = now_ns - 400 * 86_400 * 10**9
    gauge = Gauge(
        data_points=[
            number(1.0, labels={"n": "a"}, time_unix_nano=now_ns),
            number(math.nan, labels={"n": "b"}, time_unix_nano=now_ns),
            number(2.0, labels={"n": "c"}, time_unix_nano=old_ns),
            number(3.0, labels={"n": "d"}, time_unix_nano=now_ns),
        ]
    )
    request: ExportMetricsServiceRequest = export(
        Metric(name="pool.size", gauge=gauge),
        resource={"service.name": SERVICE, "deployment.environment.name": ENVIRONMENT},
    )
    return request


async def test_a_partly_bad_protobuf_export_keeps_its_good_points(
    otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    request = partly_bad_export()
    response = await otlp_client.post(
        METRICS, content=request.SerializeToString(), headers={**tenant.auth(), **PROTOBUF}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-protobuf"
    partial_success = ExportMetricsServiceResponse.FromString(response.content).partial_success
    assert partial_success.rejected_data_points == 2
    assert "nan" in partial_success.error_message
    assert "retention" in partial_success.error_message
    now_us = (
        request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].time_unix_nano
        // 1000
    )
    assert (await stored(db, tenant))["pool.size"] == [(now_us, 1.0), (now_us, 3.0)]


async def test_a_partly_bad_json_export_keeps_its_good_points(
    otlp_client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    document = json_format.MessageToDict(partly_bad_export())
    data_points = document["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"][
        "dataPoints"
    ]
    data_points[2]["asDouble"] = {"not": "a number"}  # instead of the old point
    response = await otlp_client.post(
        METRICS, content=json.dumps(document), headers={**tenant.auth(), **JSON}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    partial_success = response.json()["partialSuccess"]
    assert int(partial_success["rejectedDataPoints"]) == 2
    assert "dataPoints[2]" in partial_success["errorMessage"]
    assert [v for _, v in (await stored(db, tenant))["pool.size"]] == [1.0, 3.0]


async def test_attributes_past_the_label_limit_are_a_warning_with_nothing_rejected(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    many = {f"k{i:02d}": "v" for i in range(30)}
    point = NumberDataPoint(
        time_unix_nano=clock.to_us(clock.now()) * 1000, as_double=1.0, attributes=attributes(many)
    )
    request = export(Metric(name="m", gauge=Gauge(data_points=[point])))
    response = await otlp_client.post(
        METRICS, content=request.SerializeToString(), headers={**tenant.auth(), **PROTOBUF}
    )
    partial_success = ExportMetricsServiceResponse.FromString(response.content).partial_success
    assert partial_success.rejected_data_points == 0
    assert "first 20" in partial_success.error_message


# -- refusals, each in the one error shape ------------------------------------------------


def an_export() -> bytes:
    body: bytes = export(
        Metric(name="m", gauge=Gauge(data_points=[number(1.0)]))
    ).SerializeToString()
    return body


async def test_a_request_without_a_key_is_refused_with_401(
    otlp_client: httpx.AsyncClient,
) -> None:
    await refused(otlp_client, METRICS, an_export(), PROTOBUF, 401)


async def test_a_read_only_key_cannot_send_metrics(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = {**tenant.auth(tenant.reader), **PROTOBUF}
    await refused(otlp_client, METRICS, an_export(), headers, 403)


@pytest.mark.parametrize("content_type", ["text/plain", "application/grpc", None])
async def test_a_wrong_content_type_is_refused_with_415(
    otlp_client: httpx.AsyncClient, tenant: Tenant, content_type: str | None
) -> None:
    error = await refuses_a_wrong_content_type(otlp_client, tenant, METRICS, content_type)
    assert "metrics" in error


async def test_an_unknown_content_encoding_is_refused_with_415(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await refuses_an_unknown_content_encoding(otlp_client, tenant, METRICS)


async def test_a_body_declared_too_large_is_refused_before_it_is_read(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    error = await refuses_a_body_declared_too_large(otlp_client, tenant, METRICS)
    assert "max_export_batch_size" in error


async def test_a_gzip_bomb_is_refused_with_413(
    otlp_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await refuses_a_gzip_bomb(otlp_client, tenant, METRICS)


async def test_an_export_over_the_data_point_limit_is_refused_and_one_at_it_is_taken(
    otlp_client: httpx.AsyncClient, tenant: Tenant, encoding: str
) -> None:
    time_ns = clock.now_us() * 1000
    half = MAX_DATA_POINTS // 2
    at_limit = metrics_export([[[half, half]]], time_ns=time_ns)
    response = await otlp_client.post(
        METRICS,
        content=metrics_body(at_limit, encoding),
        headers={**tenant.auth(), **(PROTOBUF if encoding == "protobuf" else JSON)},
    )
    assert response.status_code == 200, response.text
    over = metrics_export([[[half, half + 1]]], time_ns=time_ns)
    await refuses_too_many_entries(
        otlp_client,
        tenant,
        METRICS,
        metrics_body(over, encoding),
        encoding,
        words=(
            f"more than {MAX_DATA_POINTS} data points",
            "TRAILMAP_OTLP_MAX_DATA_POINTS",
            "send_batch_max_size",
        ),
    )


async def test_an_export_over_the_metric_limit_is_refused_with_413_naming_the_limit(
    otlp_client: httpx.AsyncClient, tenant: Tenant, encoding: str
) -> None:
    # Metrics without data points: nothing to store, but each one read all the same.
    many = metrics_export([[[0] * (MAX_METRICS + 1)]])
    await refuses_too_many_entries(
        otlp_client,
        tenant,
        METRICS,
        metrics_body(many, encoding),
        encoding,
        words=(f"more than {MAX_METRICS} metrics", "TRAILMAP_OTLP_MAX_METRICS"),
    )


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (PROTOBUF, b"\xff\xff\xff\xff garbage"),
        (PROTOBUF, an_export()[:-3]),
        (JSON, b'{"resourceMetrics": [ truncated'),
        (JSON, b'{"resourceMetrics": {"not": "an array"}}'),
        ({**PROTOBUF, "Content-Encoding": "gzip"}, gzip.compress(an_export())[:20]),
        ({**JSON, "Content-Encoding": "gzip"}, b"not gzip at all"),
        ({**PROTOBUF, "Content-Length": "lots"}, b""),
    ],
)
async def test_garbage_is_refused_with_400(
    otlp_client: httpx.AsyncClient, tenant: Tenant, headers: dict[str, str], body: bytes
) -> None:
    response = await otlp_client.post(METRICS, content=body, headers={**tenant.auth(), **headers})
    assert response.status_code == 400, response.text
    assert_error_shape(response)


def test_the_route_is_documented_with_both_encodings_and_its_errors(
    settings: Settings, db: Database
) -> None:
    assert_documented(settings, db, METRICS)
