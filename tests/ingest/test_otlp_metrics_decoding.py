"""The OTLP/HTTP metrics decoder on its own: OTLP data points built with the
opentelemetry-proto classes (and exported by the real SDK encoders) go in, Trailmap `Point`s
come out, one metric type at a time; a bad data point costs only itself, and garbage or
bombs are Trailmap errors, never a crash."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.json.common.metrics_encoder import (
    encode_metrics as json_encode,
)
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import (
    encode_metrics as proto_encode,
)
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    DataPointFlags,
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
    Summary,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource as SDKResource

from tests.ingest.test_otlp_decoding import gzip_bomb
from trailmap.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from trailmap.ingest.otlp_body import JSON, PROTOBUF
from trailmap.ingest.otlp_metrics import (
    Problems,
    decode_metrics,
    encode_metrics_response,
    points_of,
)
from trailmap.metrics.points import MAX_LABELS, Point

LIMIT = 1024 * 1024
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
START_NS = 1_700_000_000_000_000_000
TEN_SECONDS_NS = 10 * 10**9
TIME_NS = START_NS + TEN_SECONDS_NS
TIME_US = TIME_NS // 1000


# -- building OTLP by hand ----------------------------------------------------------------


def value_of(value: object) -> AnyValue:
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[value_of(v) for v in value]))
    if isinstance(value, dict):
        pairs = [KeyValue(key=k, value=value_of(v)) for k, v in value.items()]
        return AnyValue(kvlist_value=KeyValueList(values=pairs))
    if isinstance(value, bool):  # before int: True is an int too
        return AnyValue(bool_value=value)
    if isinstance(value, int | float):
        return AnyValue(int_value=value) if isinstance(value, int) else AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    return AnyValue(string_value=str(value))


def attributes(values: Mapping[str, object]) -> list[KeyValue]:
    return [KeyValue(key=key, value=value_of(value)) for key, value in values.items()]


def number(value: float, *, labels: Mapping[str, object] | None = None, **fields: Any) -> Any:
    times = {"start_time_unix_nano": START_NS, "time_unix_nano": TIME_NS}
    point = NumberDataPoint(attributes=attributes(labels or {}), **{**times, **fields})
    if isinstance(value, int):
        point.as_int = value
    else:
        point.as_double = value
    return point


def histogram_point(
    counts: Sequence[int], bounds: Sequence[float], total: float, **fields: Any
) -> HistogramDataPoint:
    return HistogramDataPoint(
        start_time_unix_nano=START_NS,
        time_unix_nano=TIME_NS,
        count=sum(counts),
        sum=total,
        bucket_counts=list(counts),
        explicit_bounds=list(bounds),
        **fields,
    )


def export(*metrics: Metric, resource: Mapping[str, object] | None = None) -> Any:
    if resource is None:
        resource = {"service.name": "checkout", "deployment.environment.name": "production"}
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=attributes(resource)),
                scope_metrics=[ScopeMetrics(metrics=list(metrics))],
            )
        ]
    )


def read(request: ExportMetricsServiceRequest) -> tuple[list[Point], Problems]:
    problems = Problems()
    return points_of(request, problems).points, problems


def figures(points: Sequence[Point]) -> dict[str, tuple[float, str]]:
    """name -> (value, kind), for points of one data point."""
    return {p.name: (p.value, p.kind) for p in points}


def decode(
    body: bytes,
    content_type: str = JSON,
    encoding: str | None = None,
    limit: int = LIMIT,
    problems: Problems | None = None,
) -> ExportMetricsServiceRequest:
    return decode_metrics(
        body,
        content_type=content_type,
        content_encoding=encoding,
        max_decoded_bytes=limit,
        problems=problems,
    )


# -- what the real SDK encoders produce ---------------------------------------------------


def sdk_metrics() -> MetricsData:
    """A counter, an up-down counter, a histogram and an observable gauge from the SDK."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader],
        resource=SDKResource.create({"service.name": "checkout"}),
        shutdown_on_exit=False,
    )
    meter = provider.get_meter("tests.ingest", "1.0")
    meter.create_counter("orders").add(3, {"route": "/buy", "retries": 2, "ok": True})
    meter.create_up_down_counter("queue.depth").add(-2)
    meter.create_histogram("checkout.duration", unit="ms").record(7)

    def pool(_options: CallbackOptions) -> list[Observation]:
        return [Observation(42.5, {"pool": "main"})]

    meter.create_observable_gauge("pool.size", callbacks=[pool])
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


def test_otlp_json_from_the_sdk_decodes_to_what_protobuf_carries() -> None:
    data = sdk_metrics()
    decoded = decode(json_encode(data).to_json().encode())
    assert decoded == proto_encode(data)
    body = proto_encode(data).SerializeToString()
    assert decode(body, PROTOBUF) == proto_encode(data)


def test_what_the_sdk_measured_becomes_points_of_its_service() -> None:
    data = sdk_metrics()
    points, problems = read(proto_encode(data))
    assert problems == Problems()
    # The SDK gives every process a service.instance.id; each point carries it as a label.
    instance = str(data.resource_metrics[0].resource.attributes["service.instance.id"])
    assert instance
    by_name = {p.name: p for p in points}
    assert set(by_name) == {
        "orders",
        "queue.depth",
        "checkout.duration.count",
        "checkout.duration.sum",
        "pool.size",
    }
    assert {(p.service, p.environment) for p in points} == {("checkout", "default")}
    orders = by_name["orders"]
    assert (orders.value, orders.kind) == (3.0, "counter")
    assert orders.labels == {
        "route": "/buy",
        "retries": "2",
        "ok": "true",
        "service.instance.id": instance,
    }
    assert (by_name["queue.depth"].value, by_name["queue.depth"].kind) == (-2.0, "gauge")
    assert by_name["queue.depth"].labels == {"service.instance.id": instance}
    assert (by_name["pool.size"].value, by_name["pool.size"].labels) == (
        42.5,
        {"pool": "main", "service.instance.id": instance},
    )
    assert {p.labels["service.instance.id"] for p in points} == {instance}
    assert by_name["checkout.duration.count"].value == 1.0
    assert by_name["checkout.duration.sum"].value == 7.0


# -- each metric type ---------------------------------------------------------------------


def test_a_gauge_is_one_gauge_point_per_data_point() -> None:
    gauge = Metric(
        name="pool.size",
        gauge=Gauge(data_points=[number(42.5, labels={"pool": "a"}), number(7, labels={})]),
    )
    points, problems = read(export(gauge))
    assert points == [
        Point("pool.size", 42.5, TIME_US, "checkout", "production", {"pool": "a"}, "gauge"),
        Point("pool.size", 7.0, TIME_US, "checkout", "production", {}, "gauge"),
    ]
    assert problems.rejected == 0


@pytest.mark.parametrize(
    ("resource", "service", "environment"),
    [
        ({"service.name": "a", "deployment.environment.name": "prod"}, "a", "prod"),
        ({"service.name": "a", "deployment.environment": "stage"}, "a", "stage"),
        (
            {
                "service.name": "a",
                "deployment.environment.name": "new",
                "deployment.environment": "x",
            },
            "a",
            "new",
        ),
        ({"service.name": "a"}, "a", "default"),
        ({"host.name": "box"}, "unknown_service", "default"),
        ({"service.name": ""}, "unknown_service", "default"),
    ],
)
def test_service_and_environment_are_read_from_the_resource_as_for_traces(
    resource: dict[str, object], service: str, environment: str
) -> None:
    points, _ = read(
        export(Metric(name="m", gauge=Gauge(data_points=[number(1.0)])), resource=resource)
    )
    assert [(p.service, p.environment) for p in points] == [(service, environment)]


def test_the_resources_service_instance_id_is_a_label_of_every_point() -> None:
    resource = {"service.name": "checkout", "service.instance.id": "pod-7", "host.name": "box"}
    points, problems = read(
        export(
            Metric(name="pool.size", gauge=Gauge(data_points=[number(1.0, labels={"pool": "a"})])),
            delta_histogram(histogram_point([1, 1], [10], 12.0)),
            resource=resource,
        )
    )
    assert [(p.name, p.labels) for p in points] == [
        ("pool.size", {"pool": "a", "service.instance.id": "pod-7"}),
        *(
            (f"checkout.duration.{s}", {"service.instance.id": "pod-7"})
            for s in ("count", "sum", "p50", "p95", "p99")
        ),
    ]
    assert problems == Problems()


@pytest.mark.parametrize(
    "resource",
    [
        {"service.name": "checkout"},
        {"service.name": "checkout", "host.name": "box", "service.instance": "pod-7"},
        {"service.name": "checkout", "service.instance.id": ""},
    ],
)
def test_a_resource_without_a_service_instance_id_adds_no_label(
    resource: dict[str, object],
) -> None:
    (point,), _ = read(
        export(
            Metric(name="m", gauge=Gauge(data_points=[number(1.0, labels={"pool": "a"})])),
            resource=resource,
        )
    )
    assert point.labels == {"pool": "a"}


def test_a_data_points_own_service_instance_id_is_kept() -> None:
    (point,), _ = read(
        export(
            Metric(
                name="m",
                gauge=Gauge(data_points=[number(1.0, labels={"service.instance.id": "mine"})]),
            ),
            resource={"service.name": "checkout", "service.instance.id": "pod-7"},
        )
    )
    assert point.labels == {"service.instance.id": "mine"}


def test_the_instance_label_is_added_only_below_the_label_limit() -> None:
    below = {f"k{i:02d}": "v" for i in range(MAX_LABELS - 1)}
    at_limit = {f"k{i:02d}": "v" for i in range(MAX_LABELS)}
    points, problems = read(
        export(
            Metric(
                name="m",
                gauge=Gauge(data_points=[number(1.0, labels=below), number(2.0, labels=at_limit)]),
            ),
            resource={"service.name": "checkout", "service.instance.id": "pod-7"},
        )
    )
    assert [p.labels for p in points] == [{**below, "service.instance.id": "pod-7"}, at_limit]
    assert problems.rejected == 0


def test_attribute_values_of_every_type_become_strings() -> None:
    labels: dict[str, object] = {
        "s": "text",
        "i": 42,
        "d": 1.5,
        "whole": 2.0,
        "b": False,
        "bytes": b"\x01\x02",
        "list": ["a", 1],
        "map": {"k": "v"},
    }
    (point,), _ = read(
        export(Metric(name="m", gauge=Gauge(data_points=[number(1.0, labels=labels)])))
    )
    assert point.labels == {
        "s": "text",
        "i": "42",
        "d": "1.5",
        "whole": "2.0",
        "b": "false",
        "bytes": "AQI=",
        "list": '["a",1]',
        "map": '{"k":"v"}',
    }


def test_a_cumulative_monotonic_sum_is_a_counter_of_its_running_total() -> None:
    total = Metric(
        name="orders",
        sum=Sum(aggregation_temporality=CUMULATIVE, is_monotonic=True, data_points=[number(120)]),
    )
    (point,), _ = read(export(total))
    assert (point.name, point.value, point.kind, point.time_us) == (
        "orders",
        120.0,
        "counter",
        TIME_US,
    )


def test_a_delta_monotonic_sum_is_a_rate_per_second_over_its_interval() -> None:
    delta = Metric(
        name="orders",
        sum=Sum(aggregation_temporality=DELTA, is_monotonic=True, data_points=[number(30)]),
    )
    (point,), _ = read(export(delta))
    assert (point.name, point.value, point.kind) == ("orders", 3.0, "gauge")  # 30 in 10 s


def test_a_non_monotonic_cumulative_sum_is_a_gauge_of_its_level() -> None:
    level = Metric(
        name="queue.depth",
        sum=Sum(aggregation_temporality=CUMULATIVE, is_monotonic=False, data_points=[number(-4)]),
    )
    (point,), _ = read(export(level))
    assert (point.value, point.kind) == (-4.0, "gauge")


def test_a_non_monotonic_delta_sum_is_a_rate_of_change() -> None:
    change = Metric(
        name="queue.depth",
        sum=Sum(aggregation_temporality=DELTA, is_monotonic=False, data_points=[number(-5.0)]),
    )
    (point,), _ = read(export(change))
    assert (point.value, point.kind) == (-0.5, "gauge")


def delta_histogram(*points: HistogramDataPoint, name: str = "checkout.duration") -> Metric:
    return Metric(name=name, histogram=Histogram(aggregation_temporality=DELTA, data_points=points))


def test_a_delta_histogram_is_count_and_sum_rates_and_quantiles_from_its_buckets() -> None:
    # 20 observations: 10 under 10 ms, 8 in (10, 50], 2 in (50, 100]; summing 400 ms.
    point = histogram_point([10, 8, 2, 0], [10, 50, 100], 400.0)
    points, problems = read(export(delta_histogram(point)))
    assert figures(points) == {
        "checkout.duration.count": (2.0, "gauge"),  # 20 in 10 s
        "checkout.duration.sum": (40.0, "gauge"),
        "checkout.duration.p50": (10.0, "gauge"),  # rank 10: the top of the first bucket
        "checkout.duration.p95": (pytest.approx(75.0), "gauge"),  # rank 19: half into (50, 100]
        "checkout.duration.p99": (pytest.approx(95.0), "gauge"),  # rank 19.8
    }
    assert {p.time_us for p in points} == {TIME_US}
    assert problems.rejected == 0


@pytest.mark.parametrize(
    ("counts", "bounds", "expected"),
    [
        # histogram_quantile's own cases: the lowest bucket starts at 0 when its top is above 0,
        ([4, 0, 0], [8, 16], {"p50": 4.0, "p95": 7.6, "p99": 7.92}),
        # the overflow bucket gives the highest finite bound,
        ([0, 1, 99], [1, 2], {"p50": 2.0, "p95": 2.0, "p99": 2.0}),
        # a bucket entirely below zero gives its top,
        ([10, 0], [-5], {"p50": -5.0, "p95": -5.0, "p99": -5.0}),
        # and the rank falls in the first bucket whose running count reaches it.
        ([1, 1, 1, 1], [1, 2, 3], {"p50": 2.0, "p95": 3.0, "p99": 3.0}),
    ],
)
def test_quantiles_are_interpolated_as_prometheus_histogram_quantile_does(
    counts: list[int], bounds: list[float], expected: dict[str, float]
) -> None:
    points, _ = read(export(delta_histogram(histogram_point(counts, bounds, 1.0))))
    quantiles = {p.name.rsplit(".", 1)[1]: p.value for p in points if ".p" in p.name}
    assert quantiles == {k: pytest.approx(v) for k, v in expected.items()}


def test_min_and_max_close_the_open_buckets_and_bound_the_estimates() -> None:
    # 10 observations between 2 and 400: 5 at most 10, 5 above 100.
    point = histogram_point([5, 0, 5], [10, 100], 1500.0, min=2.0, max=400.0)
    values = figures(read(export(delta_histogram(point)))[0])
    assert values["checkout.duration.p50"] == (10.0, "gauge")
    assert values["checkout.duration.p95"][0] == pytest.approx(370.0)  # 100 + 300 * 0.9
    assert values["checkout.duration.p99"][0] == pytest.approx(394.0)
    one_value = histogram_point([0, 3, 0], [10, 100], 75.0, min=25.0, max=25.0)
    values = figures(read(export(delta_histogram(one_value)))[0])
    assert [values[f"checkout.duration.{q}"][0] for q in ("p50", "p95", "p99")] == [25.0] * 3


def test_a_histogram_without_bounds_has_quantiles_only_between_its_min_and_max() -> None:
    with_range = histogram_point([4], [], 20.0, min=0.0, max=10.0)
    values = figures(read(export(delta_histogram(with_range)))[0])
    assert values["checkout.duration.p50"] == (5.0, "gauge")
    without = histogram_point([4], [], 20.0)
    assert sorted(figures(read(export(delta_histogram(without)))[0])) == [
        "checkout.duration.count",
        "checkout.duration.sum",
    ]


def test_an_empty_delta_histogram_is_zero_rates_and_no_quantiles() -> None:
    empty = histogram_point([0, 0], [10], 0.0)
    assert figures(read(export(delta_histogram(empty)))[0]) == {
        "checkout.duration.count": (0.0, "gauge"),
        "checkout.duration.sum": (0.0, "gauge"),
    }


def test_a_cumulative_histogram_is_count_and_sum_counters_without_quantiles() -> None:
    point = histogram_point([10, 8, 2, 0], [10, 50, 100], 400.0)
    running = Metric(
        name="checkout.duration",
        histogram=Histogram(aggregation_temporality=CUMULATIVE, data_points=[point]),
    )
    assert figures(read(export(running))[0]) == {
        "checkout.duration.count": (20.0, "counter"),
        "checkout.duration.sum": (400.0, "counter"),
    }


def test_a_histogram_without_a_sum_has_no_sum_point() -> None:
    point = HistogramDataPoint(
        start_time_unix_nano=START_NS,
        time_unix_nano=TIME_NS,
        count=3,
        bucket_counts=[3],
        min=1.0,
        max=1.0,
    )
    assert sorted(figures(read(export(delta_histogram(point)))[0])) == [
        "checkout.duration.count",
        "checkout.duration.p50",
        "checkout.duration.p95",
        "checkout.duration.p99",
    ]


def exponential(point: ExponentialHistogramDataPoint, temporality: Any = DELTA) -> Metric:
    return Metric(
        name="rpc.duration",
        exponential_histogram=ExponentialHistogram(
            aggregation_temporality=temporality, data_points=[point]
        ),
    )


def test_an_exponential_histogram_gives_quantiles_from_its_exponential_buckets() -> None:
    # Scale 0: base 2, bucket i holds (2**i, 2**(i+1)]. Offset 1: (2, 4] holds 6, (4, 8] 4.
    point = ExponentialHistogramDataPoint(
        start_time_unix_nano=START_NS,
        time_unix_nano=TIME_NS,
        count=10,
        sum=45.0,
        scale=0,
        positive=ExponentialHistogramDataPoint.Buckets(offset=1, bucket_counts=[6, 4]),
    )
    assert figures(read(export(exponential(point)))[0]) == {
        "rpc.duration.count": (1.0, "gauge"),
        "rpc.duration.sum": (4.5, "gauge"),
        "rpc.duration.p50": (pytest.approx(2 + 2 * 5 / 6), "gauge"),
        "rpc.duration.p95": (pytest.approx(4 + 4 * 3.5 / 4), "gauge"),
        "rpc.duration.p99": (pytest.approx(4 + 4 * 3.9 / 4), "gauge"),
    }


def test_exponential_negative_and_zero_buckets_come_before_the_positive_ones() -> None:
    # Scale 1: base sqrt(2). Negative bucket 0 holds [-sqrt(2), -1): 5; zero bucket 4; one above.
    point = ExponentialHistogramDataPoint(
        start_time_unix_nano=START_NS,
        time_unix_nano=TIME_NS,
        count=10,
        sum=-3.0,
        scale=1,
        zero_count=4,
        negative=ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[5]),
        positive=ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[1]),
    )
    values = figures(read(export(exponential(point)))[0])
    assert values["rpc.duration.p50"] == (-1.0, "gauge")  # rank 5 is the top of the negatives
    assert values["rpc.duration.p95"][0] == pytest.approx(1 + (math.sqrt(2) - 1) * 0.5)
    assert values["rpc.duration.p99"][0] == pytest.approx(1 + (math.sqrt(2) - 1) * 0.9)
    running = figures(read(export(exponential(point, CUMULATIVE)))[0])
    assert running == {
        "rpc.duration.count": (10.0, "counter"),
        "rpc.duration.sum": (-3.0, "counter"),
    }


def test_a_summary_gives_its_matching_quantiles_and_count_and_sum_counters() -> None:
    quantiles = [
        SummaryDataPoint.ValueAtQuantile(quantile=q, value=v)
        for q, v in ((0.0, 1.0), (0.5, 12.0), (0.9, 30.0), (0.95, 41.0), (0.99, 80.0), (1.0, 99.0))
    ]
    point = SummaryDataPoint(
        start_time_unix_nano=START_NS,
        time_unix_nano=TIME_NS,
        count=50,
        sum=900.0,
        quantile_values=quantiles,
    )
    assert figures(
        read(export(Metric(name="gc.pause", summary=Summary(data_points=[point]))))[0]
    ) == {
        "gc.pause.count": (50.0, "counter"),
        "gc.pause.sum": (900.0, "counter"),
        "gc.pause.p50": (12.0, "gauge"),
        "gc.pause.p95": (41.0, "gauge"),
        "gc.pause.p99": (80.0, "gauge"),
    }


# -- what is refused, and what is kept beside it ------------------------------------------


def good_and(bad: Any, kind: str = "gauge") -> Metric:
    """A metric with a good data point before and after `bad`."""
    points = [number(1.0, labels={"n": "first"}), bad, number(2.0, labels={"n": "last"})]
    if kind == "gauge":
        return Metric(name="m", gauge=Gauge(data_points=points))
    return Metric(
        name="m", sum=Sum(aggregation_temporality=DELTA, is_monotonic=True, data_points=points)
    )


@pytest.mark.parametrize(
    ("bad", "kind", "why"),
    [
        (number(math.nan), "gauge", "nan"),
        (number(math.inf), "gauge", "inf"),
        (number(-math.inf), "sum", "inf"),
        (
            number(5.0, flags=DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK),
            "gauge",
            "NO_RECORDED_VALUE",
        ),
        (
            NumberDataPoint(start_time_unix_nano=START_NS, time_unix_nano=TIME_NS),
            "gauge",
            "asDouble",
        ),
        (NumberDataPoint(as_double=1.0), "gauge", "timeUnixNano"),
        (number(5.0, start_time_unix_nano=0), "sum", "startTimeUnixNano"),
        (number(5.0, start_time_unix_nano=TIME_NS), "sum", "startTimeUnixNano"),
    ],
)
def test_a_data_point_that_cannot_be_used_is_refused_and_its_neighbours_kept(
    bad: NumberDataPoint, kind: str, why: str
) -> None:
    points, problems = read(export(good_and(bad, kind)))
    assert [p.labels["n"] for p in points] == ["first", "last"]
    assert problems.rejected == 1
    assert why in problems.error_message
    assert "'m'" in problems.error_message


@pytest.mark.parametrize(
    ("point", "why"),
    [
        (histogram_point([1, 2], [10, 20], 5.0), "one more"),
        (histogram_point([1, 2, 3], [20, 10], 5.0), "strictly increasing"),
        (histogram_point([1, 2, 3], [10, math.inf], 5.0), "finite"),
        (
            HistogramDataPoint(
                start_time_unix_nano=START_NS,
                time_unix_nano=TIME_NS,
                count=9,
                bucket_counts=[1, 1],
                explicit_bounds=[1],
            ),
            "add up to 2",
        ),
        (histogram_point([1, 1], [10], math.nan), "nan"),
        (histogram_point([1, 1], [10], 5.0, min=math.nan), "min"),
    ],
)
def test_a_malformed_histogram_point_costs_only_itself(point: HistogramDataPoint, why: str) -> None:
    good = histogram_point([1, 1], [10], 5.0)
    points, problems = read(export(delta_histogram(point, good)))
    assert {p.name for p in points} == {
        f"checkout.duration.{s}" for s in ("count", "sum", "p50", "p95", "p99")
    }
    assert problems.rejected == 1
    assert why in problems.error_message


def test_a_malformed_exponential_point_costs_only_itself() -> None:
    wrong_count = ExponentialHistogramDataPoint(
        start_time_unix_nano=START_NS,
        time_unix_nano=TIME_NS,
        count=3,
        positive=ExponentialHistogramDataPoint.Buckets(bucket_counts=[1]),
    )
    points, problems = read(export(exponential(wrong_count)))
    assert points == []
    assert problems.rejected == 1
    assert "add up to 1" in problems.error_message


def test_a_summary_quantile_that_is_nan_refuses_its_data_point() -> None:
    point = SummaryDataPoint(
        time_unix_nano=TIME_NS,
        count=0,
        sum=0.0,
        quantile_values=[SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=math.nan)],
    )
    points, problems = read(export(Metric(name="gc.pause", summary=Summary(data_points=[point]))))
    assert (points, problems.rejected) == ([], 1)
    assert "quantile 0.5" in problems.error_message


def test_unspecified_temporality_refuses_every_data_point_of_the_metric() -> None:
    unspecified = Metric(
        name="orders", sum=Sum(is_monotonic=True, data_points=[number(1), number(2)])
    )
    points, problems = read(export(unspecified))
    assert (points, problems.rejected) == ([], 2)
    assert "aggregationTemporality" in problems.error_message


@pytest.mark.parametrize(
    ("name", "why"),
    [("", "needs a name"), ("a\nb", "control characters"), ("x" * 201, "at most 200")],
)
def test_a_metric_without_a_usable_name_refuses_its_data_points(name: str, why: str) -> None:
    points, problems = read(export(Metric(name=name, gauge=Gauge(data_points=[number(1.0)]))))
    assert (points, problems.rejected) == ([], 1)
    assert why in problems.error_message


def test_a_histogram_name_leaves_room_for_its_suffixes() -> None:
    fits, too_long = "h" * 194, "h" * 195
    points, problems = read(
        export(
            delta_histogram(histogram_point([1], [], 1.0), name=fits),
            delta_histogram(histogram_point([1], [], 1.0), name=too_long),
        )
    )
    assert {p.name for p in points} == {fits + ".count", fits + ".sum"}
    assert problems.rejected == 1


def test_past_the_label_limit_the_first_attributes_by_name_are_kept_with_a_warning() -> None:
    many = {f"k{i:02d}": i for i in range(MAX_LABELS + 5)}
    (point,), problems = read(
        export(Metric(name="m", gauge=Gauge(data_points=[number(1.0, labels=many)])))
    )
    assert point.labels == {f"k{i:02d}": str(i) for i in range(MAX_LABELS)}
    assert problems.rejected == 0
    assert f"first {MAX_LABELS}" in problems.error_message


def test_long_values_are_cut_and_nul_characters_dropped() -> None:
    labels = {"k" * 150: "v" * 300, "nul": "a\x00b", "": "no key"}
    resource = {"service.name": "s" * 250 + "\x00", "deployment.environment.name": "e" * 80}
    (point,), problems = read(
        export(
            Metric(name="m", gauge=Gauge(data_points=[number(1.0, labels=labels)])),
            resource=resource,
        )
    )
    assert point.labels == {"k" * 100: "v" * 200, "nul": "ab"}
    assert (point.service, point.environment) == ("s" * 200, "e" * 50)
    assert problems.rejected == 0


def test_several_resources_keep_their_own_service() -> None:
    first = export(
        Metric(name="m", gauge=Gauge(data_points=[number(1.0)])), resource={"service.name": "a"}
    )
    second = export(
        Metric(name="m", gauge=Gauge(data_points=[number(2.0)])), resource={"service.name": "b"}
    )
    first.resource_metrics.extend(second.resource_metrics)
    points, _ = read(first)
    assert [(p.service, p.value) for p in points] == [("a", 1.0), ("b", 2.0)]


def test_each_point_knows_the_data_point_it_came_from() -> None:
    request = export(
        Metric(name="g", gauge=Gauge(data_points=[number(1.0), number(math.nan), number(2.0)])),
        delta_histogram(histogram_point([1], [], 1.0)),
    )
    read_points = points_of(request, Problems())
    assert read_points.data_points == 4
    assert read_points.origins == [0, 2, 3, 3]


# -- OTLP/JSON ----------------------------------------------------------------------------


def json_export(*metrics: dict[str, Any]) -> bytes:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]}
    return json.dumps(
        {"resourceMetrics": [{"resource": resource, "scopeMetrics": [{"metrics": list(metrics)}]}]}
    ).encode()


def json_point(value: object, **fields: object) -> dict[str, object]:
    return {
        "timeUnixNano": str(TIME_NS),
        "startTimeUnixNano": str(START_NS),
        "asDouble": value,
        **fields,
    }


def test_a_json_data_point_of_the_wrong_type_costs_only_itself() -> None:
    body = json_export(
        {
            "name": "m",
            "gauge": {
                "dataPoints": [
                    json_point(1.0),
                    json_point("lots"),
                    "not a data point",
                    json_point(2.0, timeUnixNano="123456789012345678901234567890"),
                    json_point(3.0),
                ]
            },
        }
    )
    problems = Problems()
    points = points_of(decode(body, problems=problems), problems).points
    assert [p.value for p in points] == [1.0, 3.0]
    assert problems.rejected == 3
    assert "gauge.dataPoints[1]" in problems.error_message
    assert "dataPoints[3]" in problems.error_message


def test_a_json_metric_that_cannot_be_read_refuses_its_data_points() -> None:
    body = json_export(
        {"name": 42, "gauge": {"dataPoints": [json_point(1.0), json_point(2.0)]}},
        {
            "name": "sum",
            "sum": {"aggregationTemporality": "sideways", "dataPoints": [json_point(1.0)]},
        },
        {"name": "ok", "gauge": {"dataPoints": [json_point(5.0)]}},
    )
    problems = Problems()
    points = points_of(decode(body, problems=problems), problems).points
    assert [(p.name, p.value) for p in points] == [("ok", 5.0)]
    assert problems.rejected == 3
    assert "metrics[0]" in problems.error_message


def test_json_nan_and_enum_names_are_read_as_the_proto3_mapping_writes_them() -> None:
    body = json_export(
        {
            "name": "orders",
            "sum": {
                "aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                "isMonotonic": True,
                "dataPoints": [json_point("NaN"), {"timeUnixNano": str(TIME_NS), "asInt": "7"}],
            },
        }
    )
    problems = Problems()
    points = points_of(decode(body, problems=problems), problems).points
    assert [(p.value, p.kind) for p in points] == [(7.0, "counter")]
    assert problems.rejected == 1
    assert "nan" in problems.error_message


def test_json_exemplars_and_unknown_fields_are_ignored() -> None:
    exemplar = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b716920333",
        "asDouble": 1,
    }
    body = json_export(
        {
            "name": "m",
            "futureField": 1,
            "gauge": {"dataPoints": [json_point(4.0, exemplars=[exemplar], somethingNew=[1])]},
        }
    )
    problems = Problems()
    points = points_of(decode(body, problems=problems), problems).points
    assert [p.value for p in points] == [4.0]
    assert problems.rejected == 0


def test_snake_case_json_keys_are_read() -> None:
    body = json.dumps(
        {
            "resource_metrics": [
                {
                    "scope_metrics": [
                        {
                            "metrics": [
                                {
                                    "name": "m",
                                    "exponential_histogram": {
                                        "aggregation_temporality": 2,
                                        "data_points": [
                                            {"time_unix_nano": TIME_NS, "count": 2, "zero_count": 2}
                                        ],
                                    },
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    ).encode()
    points, _ = read(decode(body))
    assert figures(points) == {"m.count": (2.0, "counter")}


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"resourceMetrics": {}},
        {"resourceMetrics": [1]},
        {"resourceMetrics": [{"scopeMetrics": "x"}]},
        {"resourceMetrics": [{"scopeMetrics": [{"metrics": {}}]}]},
        {"resourceMetrics": [{"scopeMetrics": [{"metrics": ["x"]}]}]},
        {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": []}]}]}]},
        {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": {"dataPoints": {}}}]}]}]},
        {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": {}, "sum": {}}]}]}]},
        {"resourceMetrics": [{"resource": {"attributes": 7}}]},
    ],
)
def test_json_of_the_wrong_shape_is_a_validation_error(document: object) -> None:
    with pytest.raises(ValidationFailed) as refused:
        decode(json.dumps(document).encode())
    assert refused.value.details[0].field


def test_traces_sent_to_the_metrics_decoder_are_told_where_to_go() -> None:
    with pytest.raises(ValidationFailed, match="traces"):
        decode(b'{"resourceSpans": [{"scopeSpans": []}]}')


# -- the body: types, encodings, limits, garbage ------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
        ("identity", lambda data: data),
        (None, lambda data: data),
    ],
)
def test_compressed_bodies_decode_like_plain_ones(
    encoding: str | None, compress: Callable[[bytes], bytes]
) -> None:
    data = sdk_metrics()
    expected = proto_encode(data)
    for content_type, body in (
        (PROTOBUF, expected.SerializeToString()),
        (JSON, json_encode(data).to_json().encode()),
    ):
        assert decode(compress(body), content_type, encoding) == expected


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/grpc"])
def test_other_content_types_are_refused_naming_the_two_accepted(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        decode(b"{}", content_type)
    assert "metrics" in refused.value.message
    assert PROTOBUF in refused.value.message
    assert JSON in refused.value.message


def test_a_gzip_bomb_is_refused_with_advice_for_metric_exporters() -> None:
    with pytest.raises(PayloadTooLarge, match="after decompression") as refused:
        decode(gzip_bomb(64 * LIMIT), PROTOBUF, "gzip")
    assert "max_export_batch_size" in refused.value.message
    assert "OTEL_BSP" not in refused.value.message


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", b"hello world", bytes(range(256))])
def test_garbage_protobuf_is_a_validation_error(garbage: bytes) -> None:
    with pytest.raises(ValidationFailed, match="not a valid protobuf ExportMetricsServiceRequest"):
        decode(garbage, PROTOBUF)


def test_a_truncated_protobuf_body_is_a_validation_error() -> None:
    body = proto_encode(sdk_metrics()).SerializeToString()
    with pytest.raises(ValidationFailed, match="truncated"):
        decode(body[:-3], PROTOBUF)


def test_json_sent_as_protobuf_gets_a_hint() -> None:
    with pytest.raises(ValidationFailed, match="send it as application/json"):
        decode(json_encode(sdk_metrics()).to_json().encode(), PROTOBUF)


@pytest.mark.parametrize("body", [b"", b"not json", b'{"resourceMetrics": [', b'{"a": NaN}'])
def test_invalid_json_is_a_validation_error(body: bytes) -> None:
    with pytest.raises(ValidationFailed, match="not valid JSON"):
        decode(body)


def test_an_empty_protobuf_body_is_an_empty_export() -> None:
    request = decode(b"", PROTOBUF)
    assert request == ExportMetricsServiceRequest()
    assert read(request) == ([], Problems())


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=512),
    content_type=st.sampled_from([PROTOBUF, JSON]),
    encoding=st.sampled_from([None, "gzip", "deflate"]),
)
def test_any_bytes_decode_or_fail_with_a_trailmap_error(
    body: bytes, content_type: str, encoding: str | None
) -> None:
    with contextlib.suppress(ValidationFailed, PayloadTooLarge):
        read(decode(body, content_type, encoding))


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "gauge",
                    "sum",
                    "histogram",
                    "summary",
                    "dataPoints",
                    "asDouble",
                    "asInt",
                    "timeUnixNano",
                    "startTimeUnixNano",
                    "bucketCounts",
                    "explicitBounds",
                    "aggregationTemporality",
                    "isMonotonic",
                    "attributes",
                    "flags",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(document=_JSON_VALUES)
def test_any_json_document_decodes_or_fails_with_a_trailmap_error(document: object) -> None:
    skeleton = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [document]}]}]}
    for candidate in (document, skeleton):
        with contextlib.suppress(ValidationFailed):
            read(decode(json.dumps(candidate).encode()))


# -- the answer ---------------------------------------------------------------------------


def test_the_response_is_empty_when_nothing_was_rejected() -> None:
    assert (
        encode_metrics_response(rejected_data_points=0, error_message="", media_type=PROTOBUF)
        == b""
    )
    assert (
        encode_metrics_response(rejected_data_points=0, error_message="", media_type=JSON) == b"{}"
    )


def test_partial_success_is_encoded_in_the_request_encoding() -> None:
    binary = encode_metrics_response(
        rejected_data_points=3, error_message="NaN", media_type=PROTOBUF
    )
    response = ExportMetricsServiceResponse.FromString(binary)
    assert (
        response.partial_success.rejected_data_points,
        response.partial_success.error_message,
    ) == (3, "NaN")
    text = encode_metrics_response(rejected_data_points=3, error_message="NaN", media_type=JSON)
    assert json.loads(text) == {
        "partialSuccess": {"rejectedDataPoints": "3", "errorMessage": "NaN"}
    }


def test_a_warning_alone_is_sent_with_no_rejections() -> None:
    text = encode_metrics_response(
        rejected_data_points=0, error_message="labels cut", media_type=JSON
    )
    assert json.loads(text) == {"partialSuccess": {"errorMessage": "labels cut"}}
