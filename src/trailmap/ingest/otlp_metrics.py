"""OTLP/HTTP metric exports in, Trailmap metric points out: each OTLP data point read into one
or more `Point`s of `trailmap.metrics` (docs/metrics.md, "OTLP metrics")."""

from __future__ import annotations

import base64
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson

# protobuf ships no type information (types-protobuf is not a dependency); its use here is
# confined to parse and serialize calls whose results are typed below.
from google.protobuf import json_format  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    DataPointFlags,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ScopeMetrics,
    SummaryDataPoint,
)

from trailmap import clock
from trailmap.accounts.principal import Principal
from trailmap.errors import ValidationFailed
from trailmap.graph.learn.servicegraph import EdgeSample
from trailmap.ingest.otlp_body import (
    PARSE_ERRORS,
    PROTOBUF,
    EntryCount,
    EntryLimits,
    Level,
    Signal,
    decompress,
    encode_export_response,
    json_array,
    media_type_of,
    parse_json_export,
    parse_protobuf,
)
from trailmap.ingest.servicegraph import edge_sample, latency_buckets, role_of
from trailmap.metrics.exports import record_metric_export
from trailmap.metrics.points import DEFAULT_ENVIRONMENT, MAX_LABELS, Point

if TYPE_CHECKING:
    from trailmap.storage import Database

__all__ = [
    "METRICS",
    "QUANTILES",
    "MetricPoints",
    "MetricsIngestResult",
    "Problems",
    "decode_metrics",
    "encode_metrics_response",
    "points_of",
    "store_points",
]

# The quantiles kept, from a DELTA histogram's buckets or a summary's own quantile values.
QUANTILES: tuple[tuple[float, str], ...] = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
UNKNOWN_SERVICE = "unknown_service"  # as on the traces side, when service.name is absent

_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_NO_RECORDED_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
# The limits of a pushed point (metrics/points.py) and of the metric_series columns.
_MAX_NAME = 200
_MAX_SERVICE = 200
_MAX_ENVIRONMENT = 50
_MAX_LABEL_KEY = 100
_MAX_LABEL_VALUE = 200
_SUFFIXES = {
    "gauge": 0,
    "sum": 0,
    "histogram": len(".count"),
    "exponential_histogram": len(".count"),
    "summary": len(".count"),
}
_MAX_NOTES = 20
_MESSAGE_NOTES = 5
_NS_PER_S = 1e9
METRICS = Signal(
    name="metrics",
    request="ExportMetricsServiceRequest",
    # A metrics exporter batches otherwise than the span processor.
    batch_setting=(
        "the exporter's max_export_batch_size, or the Collector batch processor's "
        "send_batch_max_size"
    ),
)


@dataclass(slots=True)
class Problems:
    """Data points refused (counted, for OTLP's `rejected_data_points`) and notes saying
    why, plus warnings that refuse nothing. Identical notes are kept once."""

    rejected: int = 0
    notes: list[str] = field(default_factory=list)

    def reject(self, why: str, *, count: int = 1) -> None:
        self.rejected += count
        self.note(why)

    def note(self, text: str) -> None:
        text = text if len(text) <= 300 else text[:297] + "..."
        if len(self.notes) < _MAX_NOTES and text not in self.notes:
            self.notes.append(text)

    @property
    def error_message(self) -> str:
        return "; ".join(self.notes[:_MESSAGE_NOTES])


@dataclass(slots=True)
class MetricPoints:
    """The points a request holds; `origins[i]` numbers the data point `points[i]` came
    from, so that a point refused later refuses its data point."""

    points: list[Point] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)
    data_points: int = 0
    # The Collector's servicegraph connector's data points, for the graph
    # (graph/learn/servicegraph.py), and the data point each came from.
    edges: list[EdgeSample] = field(default_factory=list)
    edge_origins: list[int] = field(default_factory=list)


@dataclass(slots=True)
class MetricsIngestResult:
    """How many data points were kept, how many refused, and why (for partial success)."""

    accepted_data_points: int = 0
    rejected_data_points: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def error_message(self) -> str:
        return "; ".join(self.problems[:_MESSAGE_NOTES])


class _Refused(Exception):
    """One data point cannot be used; the message says why."""


# -- the body ----------------------------------------------------------------------------


def decode_metrics(
    body: bytes,
    *,
    content_type: str,
    content_encoding: str | None,
    max_decoded_bytes: int,
    problems: Problems | None = None,
    limits: EntryLimits | None = None,
) -> ExportMetricsServiceRequest:
    """Decode one OTLP/HTTP metrics export body.

    A JSON data point that cannot be read is left out, counted and explained in `problems`
    when given. Anything that sinks the whole body raises `ValidationFailed`,
    `PayloadTooLarge` or `UnsupportedMediaType`; with `limits`, so does a body holding more
    resources, scopes, metrics or data points than they allow (before it is parsed).
    """
    kind = media_type_of(content_type, METRICS)
    raw = decompress(body, content_encoding, max_decoded_bytes=max_decoded_bytes, signal=METRICS)
    count = _count(limits)
    if kind == PROTOBUF:
        if count is not None:
            count.scan(raw)
        request: ExportMetricsServiceRequest = parse_protobuf(
            raw, ExportMetricsServiceRequest, METRICS
        )
        return request
    return _from_json(raw, problems if problems is not None else Problems(), count)


# Metric.gauge = 5, sum = 7, histogram = 9, exponential_histogram = 10, summary = 11; each
# holds its data_points as field 1.
_METRIC_DATA = frozenset({5, 7, 9, 10, 11})
_DATA_POINTS_LEVEL = 4


def _count(limits: EntryLimits | None) -> EntryCount | None:
    """The entries an export may hold, level by level as the wire nests them
    (ExportMetricsServiceRequest.resource_metrics = 1, ResourceMetrics.scope_metrics = 2,
    ScopeMetrics.metrics = 2, a metric's data, its data_points = 1)."""
    if limits is None:
        return None
    levels = (
        Level(
            frozenset({1}),
            "resource entries (resourceMetrics)",
            limits.resources,
            "TRAILMAP_OTLP_MAX_RESOURCES",
        ),
        Level(
            frozenset({2}),
            "scope entries (scopeMetrics)",
            limits.scopes,
            "TRAILMAP_OTLP_MAX_SCOPES",
        ),
        Level(frozenset({2}), "metrics", limits.metrics, "TRAILMAP_OTLP_MAX_METRICS"),
        Level(_METRIC_DATA),
        Level(frozenset({1}), "data points", limits.data_points, "TRAILMAP_OTLP_MAX_DATA_POINTS"),
    )
    return EntryCount(levels, METRICS)


# -- OTLP/JSON, one data point at a time --------------------------------------------------

# Metric.data: (OTLP/JSON name, proto field name), in the proto's order.
_DATA_FIELDS = (
    ("gauge", "gauge"),
    ("sum", "sum"),
    ("histogram", "histogram"),
    ("exponentialHistogram", "exponential_histogram"),
    ("summary", "summary"),
)


def _from_json(
    raw: bytes, problems: Problems, count: EntryCount | None
) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    parse_json_export(
        raw,
        request,
        resources=("resourceMetrics", "resource_metrics"),
        scopes=("scopeMetrics", "scope_metrics"),
        items=("metrics", "metrics"),
        add_item=partial(_add_metric, problems=problems, count=count),
        count=count,
    )
    return request


def _add_metric(
    target: ScopeMetrics,
    entry: object,
    where: str,
    problems: Problems,
    count: EntryCount | None = None,
) -> None:
    if not isinstance(entry, dict):
        raise ValidationFailed.field(where, "must be an object")
    found = [(c, s) for c, s in _DATA_FIELDS if entry.get(c, entry.get(s)) is not None]
    if len(found) > 1:
        raise ValidationFailed.field(where, "holds more than one of gauge, sum, histogram, ...")
    if not found:  # a metric without data has nothing to read and nothing to refuse
        return
    camel, snake = found[0]
    container = entry.get(camel, entry.get(snake))
    points_where = f"{where}.{camel}"
    if not isinstance(container, dict):
        raise ValidationFailed.field(points_where, "must be an object")
    data_points = json_array(container, "dataPoints", "data_points", points_where)
    if count is not None:
        count.add(_DATA_POINTS_LEVEL, len(data_points))
    metric = target.metrics.add()
    data = getattr(metric, snake)
    try:
        rest = {k: v for k, v in entry.items() if k not in (camel, snake)}
        json_format.ParseDict(rest, metric, ignore_unknown_fields=True)
        data.SetInParent()  # a gauge with no points is still a gauge
        settings = {k: v for k, v in container.items() if k not in ("dataPoints", "data_points")}
        json_format.ParseDict(settings, data, ignore_unknown_fields=True)
    except PARSE_ERRORS as e:
        # The name or the temporality is unreadable: none of its data points can be used.
        del target.metrics[-1]
        problems.reject(f"{where} was rejected: {str(e)[:200]}", count=len(data_points))
        return
    for n, point in enumerate(data_points):
        added = data.data_points.add()
        try:
            if not isinstance(point, dict):
                raise TypeError("must be an object")
            point.pop("exemplars", None)  # not read; their hex ids would be taken for base64
            json_format.ParseDict(point, added, ignore_unknown_fields=True)
        except PARSE_ERRORS as e:
            del data.data_points[-1]
            problems.reject(f"{points_where}.dataPoints[{n}] was rejected: {str(e)[:200]}")


# -- data points into points --------------------------------------------------------------


def points_of(
    request: ExportMetricsServiceRequest, problems: Problems, *, received_us: int | None = None
) -> MetricPoints:
    """Every point the request's data points make; the refused ones counted in `problems`.
    `received_us` (default: now) is when the export arrived, which stamps the one kind of
    data point read without a time of its own (`_edge_sample`)."""
    out = MetricPoints()
    received_us = clock.now_us() if received_us is None else received_us
    for resource_metrics in request.resource_metrics:
        attributes = resource_metrics.resource.attributes
        service, environment = _resource(attributes)
        instance = next(
            (
                _clean(_text(kv.value), _MAX_LABEL_VALUE)
                for kv in attributes
                if kv.key == "service.instance.id"
            ),
            "",
        )
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                _read_metric(metric, service, environment, instance, out, problems, received_us)
    return out


def _read_metric(
    metric: Metric,
    service: str,
    environment: str,
    instance: str,
    out: MetricPoints,
    problems: Problems,
    received_us: int,
) -> None:
    which = metric.WhichOneof("data")
    if which is None:
        return
    data = getattr(metric, which)
    name = metric.name
    named = f"metric {name[:100]!r}"
    trouble = _name_trouble(name, _MAX_NAME - _SUFFIXES[which])
    temporality = getattr(data, "aggregation_temporality", _CUMULATIVE)
    if trouble is None and temporality not in (_DELTA, _CUMULATIVE):
        trouble = "aggregationTemporality is unspecified; send DELTA or CUMULATIVE"
    if trouble is not None:
        out.data_points += len(data.data_points)
        problems.reject(f"{named}: {trouble}", count=len(data.data_points))
        return
    delta = temporality == _DELTA
    if role_of(name) is not None:
        _read_service_graph(
            metric, which, data, environment, instance, out, problems, received_us, delta=delta
        )
        return
    for data_point in data.data_points:
        origin = out.data_points
        out.data_points += 1
        try:
            values = _values(which, data, data_point, delta=delta)
            time_us = data_point.time_unix_nano // 1000
            labels = _labels(data_point.attributes, named, problems)
            # Each instance of a service keeps its own running totals: a series per
            # instance, or the rates read from interleaved totals would be nonsense.
            if instance and len(labels) < MAX_LABELS:
                labels.setdefault("service.instance.id", instance)
        except _Refused as why:
            problems.reject(f"{named}: {why}")
            continue
        for suffix, value, kind in values:
            out.points.append(
                Point(
                    name=name + suffix,
                    value=value,
                    time_us=time_us,
                    service=service,
                    environment=environment,
                    labels=labels,
                    kind=kind,
                )
            )
            out.origins.append(origin)


# A servicegraph latency histogram's unit, in milliseconds: seconds unless it says otherwise
# (the connector's default; Collectors with the legacyLatencyUnitMs gate send "ms").
_LATENCY_UNITS_MS = {"": 1000.0, "s": 1000.0, "ms": 1.0, "us": 0.001, "ns": 0.000001}


def _read_service_graph(
    metric: Metric,
    which: str,
    data: Any,
    environment: str,
    instance: str,
    out: MetricPoints,
    problems: Problems,
    received_us: int,
    *,
    delta: bool,
) -> None:
    """The connector's metric as edge samples: counters as sums, latencies as histograms."""
    name = metric.name
    counter = role_of(name) in ("calls", "failed")
    wanted = ("sum",) if counter else ("histogram", "exponential_histogram")
    unit_ms = _LATENCY_UNITS_MS.get(metric.unit)
    trouble = None
    if which not in wanted:
        trouble = f"the servicegraph connector sends it as a {' or '.join(wanted)}, not a {which}"
    elif not counter and unit_ms is None:
        trouble = f"unit {metric.unit[:20]!r} is not a unit of time (s, ms, us, ns)"
    if trouble is not None:
        out.data_points += len(data.data_points)
        problems.reject(f"metric {name!r}: {trouble}", count=len(data.data_points))
        return
    for data_point in data.data_points:
        origin = out.data_points
        out.data_points += 1
        try:
            sample = _edge_sample(
                name, data_point, environment, instance, unit_ms, received_us, delta=delta
            )
        except (_Refused, ValueError) as why:
            problems.reject(f"metric {name!r}: {why}")
            continue
        out.edges.append(sample)
        out.edge_origins.append(origin)


def _edge_sample(
    name: str,
    point: NumberDataPoint | _Histogram,
    environment: str,
    instance: str,
    unit_ms: float | None,
    received_us: int,
    *,
    delta: bool,
) -> EdgeSample:
    time_us = point.time_unix_nano // 1000
    if _unstamped_client_latency(name, point):
        # The connector's exponential client-latency points carry no timeUnixNano (fixed in
        # collector-contrib#48049, spring 2026); it stamps its other metrics at the flush, so
        # the export's arrival is within a flush interval of the time left out.
        time_us = received_us
    else:
        _require_recorded(point)
    if isinstance(point, NumberDataPoint):
        figures: dict[str, Any] = {"count": _number(point)}
    else:
        unit_ms = unit_ms or 1.0
        buckets = (
            _explicit_buckets(point, None, None)
            if isinstance(point, HistogramDataPoint)
            else _exponential_buckets(point)
        )
        figures = {
            "count": float(point.count),
            "sum_ms": _finite(point.sum, "the sum") * unit_ms,
            "buckets": latency_buckets(buckets, unit_ms=unit_ms),
        }
    return edge_sample(
        metric_name=name,
        attributes={kv.key: _plain(kv.value) for kv in point.attributes},
        resource_environment=environment,
        instance=instance,
        start_us=point.start_time_unix_nano // 1000,
        time_us=time_us,
        cumulative=not delta,
        **figures,
    )


def _unstamped_client_latency(name: str, point: NumberDataPoint | _Histogram) -> bool:
    return (
        point.time_unix_nano == 0
        and point.start_time_unix_nano > 0
        and not point.flags & _NO_RECORDED_VALUE
        and isinstance(point, ExponentialHistogramDataPoint)
        and role_of(name) == "client"
    )


def _name_trouble(name: str, limit: int) -> str | None:
    if not name:
        return "a metric needs a name"
    if any(ord(ch) < 32 for ch in name):
        return "the name must not contain control characters"
    if len(name) > limit:
        return f"the name is {len(name)} characters; at most {limit} are allowed"
    return None


# (name suffix, value, kind) of each point a data point makes.
_Values = list[tuple[str, float, str]]
_Histogram = HistogramDataPoint | ExponentialHistogramDataPoint
_DataPoint = NumberDataPoint | _Histogram | SummaryDataPoint


def _values(which: str, data: Any, point: _DataPoint, *, delta: bool) -> _Values:
    _require_recorded(point)
    if which == "gauge":
        return [("", _number(point), "gauge")]
    if which == "sum":
        return _sum(point, monotonic=data.is_monotonic, delta=delta)
    if which == "histogram":
        return _histogram(point, delta=delta)
    if which == "exponential_histogram":
        return _exponential_histogram(point, delta=delta)
    return _summary(point)


def _require_recorded(point: _DataPoint) -> None:
    if point.flags & _NO_RECORDED_VALUE:
        raise _Refused("a data point flagged NO_RECORDED_VALUE has no value to store")
    if point.time_unix_nano <= 0:
        raise _Refused("a data point needs timeUnixNano")


def _number(point: NumberDataPoint) -> float:
    which = point.WhichOneof("value")
    if which is None:
        raise _Refused("a data point has neither asDouble nor asInt")
    return _finite(float(point.as_int if which == "as_int" else point.as_double), "the value")


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise _Refused(f"{what} is {value}; NaN and infinite values are not stored")
    return value


def _per_second(value: float, point: _DataPoint) -> float:
    """A DELTA value as a rate: its change over the seconds its interval lasted."""
    start: int = point.start_time_unix_nano
    end: int = point.time_unix_nano
    if not 0 < start < end:
        raise _Refused(
            "a DELTA data point needs startTimeUnixNano before timeUnixNano, to be read as a "
            "rate per second"
        )
    return value / ((end - start) / _NS_PER_S)


def _sum(point: NumberDataPoint, *, monotonic: bool, delta: bool) -> _Values:
    value = _number(point)
    if delta:
        # What changed over the interval, per second. A non-monotonic DELTA sum says how much
        # a level moved, not the level, so it is a rate too.
        return [("", _per_second(value, point), "gauge")]
    # A running total since startTimeUnixNano, read back as a rate; a non-monotonic
    # cumulative sum (an UpDownCounter) is a level, read as it is.
    return [("", value, "counter" if monotonic else "gauge")]


def _count_and_sum(point: _Histogram, sum_value: float | None, *, delta: bool) -> _Values:
    figures = [(".count", float(point.count))]
    if sum_value is not None:
        figures.append((".sum", _finite(sum_value, "the sum")))
    if delta:
        return [(suffix, _per_second(value, point), "gauge") for suffix, value in figures]
    return [(suffix, value, "counter") for suffix, value in figures]


def _histogram(point: HistogramDataPoint, *, delta: bool) -> _Values:
    values = _count_and_sum(point, point.sum if point.HasField("sum") else None, delta=delta)
    # Quantiles only from DELTA points: a cumulative histogram holds every observation since
    # the process started, so its p95 would mostly describe the past and hardly move after a
    # change; a before/after comparison around an event would read it as "no effect".
    if delta:
        low = _finite(point.min, "min") if point.HasField("min") else None
        high = _finite(point.max, "max") if point.HasField("max") else None
        buckets = _explicit_buckets(point, low, high)
        values += _quantiles(buckets, low, high)
    return values


def _explicit_buckets(
    point: HistogramDataPoint, low: float | None, high: float | None
) -> list[tuple[float, float, int]]:
    """(lower, upper, count) of each bucket, ascending, with the open ends closed as
    Prometheus' histogram_quantile closes them, or by min and max when the point has them."""
    counts, bounds = list(point.bucket_counts), list(point.explicit_bounds)
    if not counts:
        return []
    if len(counts) != len(bounds) + 1:
        raise _Refused(
            f"bucketCounts has {len(counts)} entries for {len(bounds)} explicitBounds; "
            "it needs one more than the bounds"
        )
    if any(not math.isfinite(b) for b in bounds) or any(
        a >= b for a, b in itertools.pairwise(bounds)
    ):
        raise _Refused("explicitBounds must be finite and strictly increasing")
    if sum(counts) != point.count:
        raise _Refused(f"the bucket counts add up to {sum(counts)}, not to count {point.count}")
    if not bounds:  # one bucket holding everything: only min and max say where
        return [(low, high, counts[0])] if low is not None and high is not None else []
    # Prometheus takes 0 as the lowest bucket's lower end when its upper end is above 0,
    # and the highest finite bound as the upper end of the overflow bucket.
    first_low = bounds[0] if bounds[0] <= 0 else 0.0
    if low is not None and low <= bounds[0]:
        first_low = low
    last_high = high if high is not None and high >= bounds[-1] else bounds[-1]
    edges = [first_low, *bounds, last_high]
    return [(edges[i], edges[i + 1], counts[i]) for i in range(len(counts))]


def _exponential_histogram(point: ExponentialHistogramDataPoint, *, delta: bool) -> _Values:
    values = _count_and_sum(point, point.sum if point.HasField("sum") else None, delta=delta)
    if delta:  # as for explicit buckets: quantiles from DELTA points only
        low = _finite(point.min, "min") if point.HasField("min") else None
        high = _finite(point.max, "max") if point.HasField("max") else None
        values += _quantiles(_exponential_buckets(point), low, high)
    return values


def _exponential_buckets(point: ExponentialHistogramDataPoint) -> list[tuple[float, float, int]]:
    """Bucket `i` holds (base**i, base**(i+1)] with base = 2**(2**-scale); negative
    buckets mirror it; the zero bucket holds [-zero_threshold, zero_threshold]."""
    positive, negative = list(point.positive.bucket_counts), list(point.negative.bucket_counts)
    total = point.zero_count + sum(positive) + sum(negative)
    if total != point.count:
        raise _Refused(f"the bucket counts add up to {total}, not to count {point.count}")
    if not -10 <= point.scale <= 20:
        raise _Refused(f"scale {point.scale} is outside OTLP's -10 to 20")
    step = 2.0**-point.scale

    def bound(index: int) -> float:
        try:
            power: float = 2.0 ** (index * step)
        except OverflowError:
            return math.inf
        return power

    zero = abs(point.zero_threshold) if math.isfinite(point.zero_threshold) else 0.0
    buckets = [
        (-bound(point.negative.offset + k + 1), -bound(point.negative.offset + k), count)
        for k, count in reversed(list(enumerate(negative)))
    ]
    buckets.append((-zero, zero, point.zero_count))
    buckets += [
        (bound(point.positive.offset + k), bound(point.positive.offset + k + 1), count)
        for k, count in enumerate(positive)
    ]
    return buckets


def _quantiles(
    buckets: Sequence[tuple[float, float, int]], low: float | None, high: float | None
) -> _Values:
    """p50, p95 and p99 by linear interpolation inside the bucket that holds each rank, as
    Prometheus' histogram_quantile does, kept within [min, max] when the point has them."""
    total = sum(count for _, _, count in buckets)
    if total == 0:
        return []
    out: _Values = []
    for q, suffix in QUANTILES:
        estimate = _quantile(q * total, buckets)
        if low is not None:
            estimate = max(estimate, low)
        if high is not None:
            estimate = min(estimate, high)
        if math.isfinite(estimate):  # an overflowing exponential bucket says nothing usable
            out.append((f".{suffix}", estimate, "gauge"))
    return out


def _quantile(rank: float, buckets: Sequence[tuple[float, float, int]]) -> float:
    seen = 0
    for lower, upper, count in buckets:
        if count and seen + count >= rank:
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return buckets[-1][1]


def _summary(point: SummaryDataPoint) -> _Values:
    # A summary's count and sum are running totals since startTimeUnixNano.
    values = [
        (".count", float(point.count), "counter"),
        (".sum", _finite(point.sum, "the sum"), "counter"),
    ]
    for quantile in point.quantile_values:
        for q, suffix in QUANTILES:
            if math.isclose(quantile.quantile, q, abs_tol=1e-9):
                value = _finite(quantile.value, f"quantile {q}")
                values.append((f".{suffix}", value, "gauge"))
    return values


# -- resource and attributes --------------------------------------------------------------


def _resource(attributes: Iterable[KeyValue]) -> tuple[str, str]:
    """(service, environment), read as the traces side reads them."""
    values = {kv.key: kv.value for kv in attributes}
    service = _clean(_scalar_text(values.get("service.name")), _MAX_SERVICE)
    environment = _clean(
        _scalar_text(values.get("deployment.environment.name"))
        or _scalar_text(values.get("deployment.environment")),
        _MAX_ENVIRONMENT,
    )
    return service or UNKNOWN_SERVICE, environment or DEFAULT_ENVIRONMENT


def _scalar_text(value: AnyValue | None) -> str:
    if value is None or value.WhichOneof("value") in (None, "array_value", "kvlist_value"):
        return ""
    return _text(value)


def _clean(text: str, limit: int) -> str:
    # PostgreSQL refuses NUL in text and in JSON; over-long values are cut, not refused.
    return text.replace("\x00", "")[:limit].strip()


def _labels(attributes: Sequence[KeyValue], named: str, problems: Problems) -> dict[str, str]:
    labels: dict[str, str] = {}
    for kv in attributes:
        key = _clean(kv.key, _MAX_LABEL_KEY)
        if key:
            labels[key] = _clean(_text(kv.value), _MAX_LABEL_VALUE)
    if len(labels) > MAX_LABELS:
        problems.note(
            f"{named}: data points with more than {MAX_LABELS} attributes keep the first "
            f"{MAX_LABELS} by name"
        )
        labels = dict(sorted(labels.items())[:MAX_LABELS])
    return labels


def _text(value: AnyValue) -> str:
    """An attribute value as a label: strings as they are, other values as JSON would
    write them (true, 42, 1.5, ["a","b"]), bytes in base64 as OTLP/JSON sends them."""
    plain = _plain(value)
    if isinstance(plain, str):
        return plain
    if isinstance(plain, float) and not math.isfinite(plain):
        return str(plain)
    return orjson.dumps(plain).decode()


def _plain(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which in ("string_value", "bool_value", "int_value", "double_value"):
        return getattr(value, which)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if which == "array_value":
        return [_plain(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in value.kvlist_value.values}
    return ""


# -- storing, and the answer --------------------------------------------------------------


def store_points(
    db: Database,
    principal: Principal,
    read: MetricPoints,
    problems: Problems,
    *,
    now: datetime | None = None,
) -> MetricsIngestResult:
    """Store what `points_of` read; a point or sample the domain refuses (outside the
    retention window, too far ahead) refuses its data point. It blocks, as
    `record_metric_export` does: run it on a worker thread."""
    refused_points, refused_edges = record_metric_export(
        db, principal, points=read.points, edges=read.edges, now=now
    )
    refused: set[int] = set()
    for origins, refusals in ((read.origins, refused_points), (read.edge_origins, refused_edges)):
        for index, metric, why in refusals:
            refused.add(origins[index])
            problems.note(f"metric {metric[:100]!r}: {why}")
    return MetricsIngestResult(
        accepted_data_points=len(set(read.origins) | set(read.edge_origins)) - len(refused),
        rejected_data_points=problems.rejected + len(refused),
        problems=list(problems.notes),
    )


def encode_metrics_response(
    *, rejected_data_points: int, error_message: str, media_type: str
) -> bytes:
    """The OTLP success answer, in the request's encoding; `partial_success` only when there
    is something to say (data points refused, or a warning)."""
    return encode_export_response(
        ExportMetricsServiceResponse(),
        rejected_field="rejected_data_points",
        rejected=rejected_data_points,
        error_message=error_message,
        media_type=media_type,
    )
