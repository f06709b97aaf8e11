"""How many entries one OTLP export may hold (resources, scopes, spans; metrics and data
points): counted before the body is parsed, refused with 413 naming the limit and the
exporter setting that makes batches smaller; nothing under the limits is refused."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from trailmap.errors import PayloadTooLarge, ValidationFailed
from trailmap.ingest.otlp import decode_span_batch, decode_traces
from trailmap.ingest.otlp_body import JSON, PROTOBUF, EntryLimits
from trailmap.ingest.otlp_metrics import decode_metrics
from trailmap.settings import Settings

_DECODED = 64 * 1024 * 1024
_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_DEFAULTS = EntryLimits.of(Settings())
_TRACE_ID = bytes(range(1, 17))


def _limits(**most: int) -> EntryLimits:
    """Limits as given, the others out of reach."""
    return EntryLimits(
        **{
            "resources": 10**6,
            "scopes": 10**6,
            "spans": 10**6,
            "metrics": 10**6,
            "data_points": 10**6,
            **most,
        }
    )


def spans_export(shape: list[list[int]], *, start_ns: int = 1) -> ExportTraceServiceRequest:
    """`shape[r][s]` spans in scope s of resource r, each with the fields an SDK sets."""
    n = 0
    request = ExportTraceServiceRequest()
    for r, scopes in enumerate(shape):
        resource = ResourceSpans(
            resource=Resource(
                attributes=[KeyValue(key="service.name", value=AnyValue(string_value=f"s{r}"))]
            ),
            schema_url="https://opentelemetry.io/schemas/1.26.0",
        )
        for count in scopes:
            scope = ScopeSpans(scope=InstrumentationScope(name="tests", version="1"))
            for _ in range(count):
                n += 1
                scope.spans.append(
                    Span(
                        trace_id=_TRACE_ID,
                        span_id=n.to_bytes(8, "big"),
                        name="GET /",
                        kind=Span.SPAN_KIND_SERVER,
                        start_time_unix_nano=start_ns,
                        end_time_unix_nano=start_ns + 1000,
                    )
                )
            resource.scope_spans.append(scope)
        request.resource_spans.append(resource)
    return request


def _trace_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON of `request`: the proto3 JSON mapping, with ids as hex."""
    document = json_format.MessageToDict(request)
    for resource in document.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for key in ("traceId", "spanId"):
                    span[key] = bytes(json_format.base64.b64decode(span[key])).hex()
    return json.dumps(document).encode()


def trace_body(request: ExportTraceServiceRequest, encoding: str) -> bytes:
    if encoding == "protobuf":
        body: bytes = request.SerializeToString()
        return body
    return _trace_json(request)


def _decode_spans(body: bytes, encoding: str, limits: EntryLimits, gzipped: bool = False) -> Any:
    return decode_span_batch(
        body,
        content_type=PROTOBUF if encoding == "protobuf" else JSON,
        content_encoding="gzip" if gzipped else None,
        max_decoded_bytes=_DECODED,
        limits=limits,
    )


def metrics_export(
    shape: list[list[list[int]]], *, time_ns: int = 2
) -> ExportMetricsServiceRequest:
    """`shape[r][s][m]` data points in metric m of scope s of resource r: gauges, sums and
    histograms in turn."""
    request = ExportMetricsServiceRequest()
    for r, scopes in enumerate(shape):
        resource = ResourceMetrics(
            resource=Resource(
                attributes=[KeyValue(key="service.name", value=AnyValue(string_value=f"s{r}"))]
            )
        )
        for metrics in scopes:
            scope = ScopeMetrics(scope=InstrumentationScope(name="tests"))
            for m, count in enumerate(metrics):
                numbers = [
                    NumberDataPoint(time_unix_nano=time_ns, as_double=float(i))
                    for i in range(count)
                ]
                metric = Metric(name=f"m{m}", unit="ms", description="a metric")
                if m % 3 == 0:
                    metric.gauge.CopyFrom(Gauge(data_points=numbers))
                elif m % 3 == 1:
                    metric.sum.CopyFrom(Sum(data_points=numbers, aggregation_temporality=_DELTA))
                else:
                    histograms = [
                        HistogramDataPoint(time_unix_nano=time_ns, count=1, bucket_counts=[1])
                        for _ in range(count)
                    ]
                    metric.histogram.CopyFrom(
                        Histogram(data_points=histograms, aggregation_temporality=_DELTA)
                    )
                scope.metrics.append(metric)
            resource.scope_metrics.append(scope)
        request.resource_metrics.append(resource)
    return request


def metrics_body(request: ExportMetricsServiceRequest, encoding: str) -> bytes:
    if encoding == "protobuf":
        body: bytes = request.SerializeToString()
        return body
    return json.dumps(json_format.MessageToDict(request)).encode()


def _decode_metrics(body: bytes, encoding: str, limits: EntryLimits) -> Any:
    return decode_metrics(
        body,
        content_type=PROTOBUF if encoding == "protobuf" else JSON,
        content_encoding=None,
        max_decoded_bytes=_DECODED,
        limits=limits,
    )


@pytest.fixture(params=["protobuf", "json"])
def encoding(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


# -- the audit's bomb ---------------------------------------------------------------------


def test_a_gzip_bomb_of_empty_resource_entries_is_refused_before_it_is_parsed() -> None:
    # 6 MiB of empty ResourceSpans in 6 KB of gzip: three million entries, each a pass of the
    # graph's Python before. Counting stops at the first entry past the limit.
    bomb = gzip.compress(b"\x0a\x00" * (3 * 1024 * 1024), 9)
    assert len(bomb) < 8 * 1024
    with pytest.raises(PayloadTooLarge) as refused:
        _decode_spans(bomb, "protobuf", _DEFAULTS, gzipped=True)
    message = refused.value.message
    assert f"more than {_DEFAULTS.resources} resource entries (resourceSpans)" in message
    assert "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" in message
    assert "TRAILMAP_OTLP_MAX_RESOURCES" in message


def test_the_same_bomb_in_otlp_json_is_refused_too() -> None:
    bomb = b'{"resourceSpans": [' + b",".join([b"{}"] * (_DEFAULTS.resources + 1)) + b"]}"
    with pytest.raises(PayloadTooLarge, match="TRAILMAP_OTLP_MAX_RESOURCES"):
        _decode_spans(bomb, "json", _DEFAULTS)


def test_the_defaults_take_what_sdks_and_collectors_send() -> None:
    # The SDK's BatchSpanProcessor sends up to 512 spans, a Collector's batch processor
    # 8,192 by default (more when an incoming request is larger): room for several times that.
    assert _DEFAULTS.spans >= 4 * 8192
    assert _DEFAULTS.data_points >= 4 * 8192
    assert _DEFAULTS.resources >= 8192
    assert _DEFAULTS.scopes >= _DEFAULTS.resources


# -- traces: each level, exactly at its limit and one past it ------------------------------


_TRACE_SHAPE = [[3, 1], [2], [0, 0, 4]]  # 3 resources, 6 scopes, 10 spans
_TRACE_COUNTS = {"resources": 3, "scopes": 6, "spans": 10}
_TRACE_WORDS = {
    "resources": ("resource entries (resourceSpans)", "TRAILMAP_OTLP_MAX_RESOURCES"),
    "scopes": ("scope entries (scopeSpans)", "TRAILMAP_OTLP_MAX_SCOPES"),
    "spans": ("spans", "TRAILMAP_OTLP_MAX_SPANS"),
}


def test_an_export_exactly_at_every_limit_is_read_whole(encoding: str) -> None:
    body = trace_body(spans_export(_TRACE_SHAPE), encoding)
    batch = _decode_spans(body, encoding, _limits(**_TRACE_COUNTS))
    spans = [s for r in batch.resource_spans for sc in r.scope_spans for s in sc.spans]
    assert len(batch.resource_spans) == 3
    assert len(spans) == 10


@pytest.mark.parametrize("level", sorted(_TRACE_COUNTS))
def test_an_export_one_entry_past_a_limit_is_refused_naming_it(level: str, encoding: str) -> None:
    body = trace_body(spans_export(_TRACE_SHAPE), encoding)
    most = _TRACE_COUNTS[level] - 1
    with pytest.raises(PayloadTooLarge) as refused:
        _decode_spans(body, encoding, _limits(**{**_TRACE_COUNTS, level: most}))
    what, setting = _TRACE_WORDS[level]
    message = refused.value.message
    assert f"more than {most} {what}" in message
    assert setting in message
    assert "OTEL_BSP_MAX_EXPORT_BATCH_SIZE" in message
    assert refused.value.status == 413


def test_the_full_trace_decoder_counts_as_the_receivers_does() -> None:
    body = spans_export(_TRACE_SHAPE).SerializeToString()
    with pytest.raises(PayloadTooLarge, match="more than 9 spans"):
        decode_traces(
            body,
            content_type=PROTOBUF,
            content_encoding=None,
            max_decoded_bytes=_DECODED,
            limits=_limits(spans=9),
        )


def test_fields_that_are_no_entries_cannot_stand_in_for_them() -> None:
    # Unknown fields cost a step each to step over; a body made of nothing else is no export.
    limits = _limits(resources=10, scopes=10, spans=10)
    with pytest.raises(ValidationFailed, match="not an OTLP export"):
        _decode_spans(b"\x08\x00" * 100_000, "protobuf", limits)


@pytest.mark.parametrize(
    "tail",
    [
        b"\x0a\x05\x12\x00",  # an entry longer than the body
        b"\x0a",  # a tag without its length
        b"\x0b\x08\x01",  # a group that never ends
        b"\x0b\x14",  # a group ended as another
        b"\x0c",  # the end of a group never begun
        b"\x0f",  # wire type 7
        b"\x08" + b"\xff" * 11,  # a varint of 11 bytes
    ],
)
def test_a_body_the_count_cannot_read_is_refused_as_the_parser_would(tail: bytes) -> None:
    body = b"\x1a\x00" * 8 + tail  # long enough to be counted (schema_url fields first)
    for limits in (_limits(resources=1), _limits()):
        with pytest.raises(ValidationFailed, match="not a valid protobuf"):
            _decode_spans(body, "protobuf", limits)


_SHAPES = st.lists(st.lists(st.integers(0, 4), max_size=4), max_size=5)


@settings(max_examples=100, deadline=None)
@given(shape=_SHAPES, encoding=st.sampled_from(["protobuf", "json"]))
def test_the_count_is_exact_at_every_level(shape: list[list[int]], encoding: str) -> None:
    counts = {
        "resources": len(shape),
        "scopes": sum(len(scopes) for scopes in shape),
        "spans": sum(sum(scopes) for scopes in shape),
    }
    body = trace_body(spans_export(shape), encoding)
    _decode_spans(body, encoding, _limits(**{k: max(1, v) for k, v in counts.items()}))
    for level, count in counts.items():
        if count:
            with pytest.raises(PayloadTooLarge, match=_TRACE_WORDS[level][1]):
                _decode_spans(body, encoding, _limits(**{level: count - 1}))


def _most_entries(batch: Any) -> int:
    resources = batch.resource_spans
    scopes = [scope for resource in resources for scope in resource.scope_spans]
    return max(len(resources), len(scopes), sum(len(scope.spans) for scope in scopes))


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=160))
def test_counting_changes_no_answer_of_the_parser(body: bytes) -> None:
    """Whatever the bytes: refused as the parser refuses them, refused for its count only
    when it holds more, or read the same."""
    try:
        unlimited = _decode_spans(body, "protobuf", _limits())
    except ValidationFailed:
        unlimited = None
    try:
        counted = _decode_spans(body, "protobuf", _limits(resources=3, scopes=3, spans=3))
    except PayloadTooLarge:
        assert unlimited is not None
        assert _most_entries(unlimited) > 3
    except ValidationFailed:
        assert unlimited is None
    else:
        assert counted == unlimited


# -- metrics --------------------------------------------------------------------------------


_METRIC_SHAPE = [[[2, 1, 3], [0]], [[4, 2]]]  # 2 resources, 3 scopes, 6 metrics, 12 points
_METRIC_COUNTS = {"resources": 2, "scopes": 3, "metrics": 6, "data_points": 12}
_METRIC_WORDS = {
    "resources": ("resource entries (resourceMetrics)", "TRAILMAP_OTLP_MAX_RESOURCES"),
    "scopes": ("scope entries (scopeMetrics)", "TRAILMAP_OTLP_MAX_SCOPES"),
    "metrics": ("metrics", "TRAILMAP_OTLP_MAX_METRICS"),
    "data_points": ("data points", "TRAILMAP_OTLP_MAX_DATA_POINTS"),
}


def test_a_metrics_export_exactly_at_every_limit_is_read_whole(encoding: str) -> None:
    request = metrics_export(_METRIC_SHAPE)
    decoded = _decode_metrics(metrics_body(request, encoding), encoding, _limits(**_METRIC_COUNTS))
    assert decoded == request


@pytest.mark.parametrize("level", sorted(_METRIC_COUNTS))
def test_a_metrics_export_one_entry_past_a_limit_is_refused_naming_it(
    level: str, encoding: str
) -> None:
    body = metrics_body(metrics_export(_METRIC_SHAPE), encoding)
    most = _METRIC_COUNTS[level] - 1
    with pytest.raises(PayloadTooLarge) as refused:
        _decode_metrics(body, encoding, _limits(**{**_METRIC_COUNTS, level: most}))
    what, setting = _METRIC_WORDS[level]
    message = refused.value.message
    assert f"more than {most} {what}" in message
    assert setting in message
    assert "send_batch_max_size" in message


def test_a_gzip_bomb_of_empty_data_points_is_refused_before_it_is_parsed() -> None:
    # One gauge holding a million empty data points (Gauge.data_points = 1).
    points = b"\x0a\x00" * 1_000_000
    gauge = b"\x2a" + _varint(len(points)) + points
    scope = b"\x12" + _varint(len(gauge)) + gauge
    resource = b"\x12" + _varint(len(scope)) + scope
    body = gzip.compress(b"\x0a" + _varint(len(resource)) + resource, 9)
    with pytest.raises(PayloadTooLarge, match="TRAILMAP_OTLP_MAX_DATA_POINTS"):
        decode_metrics(
            body,
            content_type=PROTOBUF,
            content_encoding="gzip",
            max_decoded_bytes=_DECODED,
            limits=_DEFAULTS,
        )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
