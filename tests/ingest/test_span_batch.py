"""The receiver's own reading of a trace export (`decode_span_batch`, graph/learn/spans.py's
`SpanBatch`): the same bytes as `ExportTraceServiceRequest`, with only the fields the graph's
rules read, and each span's attributes as a map to their encoded values. What the real
OpenTelemetry SDK encodes must read exactly as the full request does."""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as json_encode
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as proto_encode
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from trailmap.errors import PayloadTooLarge, ValidationFailed
from trailmap.graph.learn.spans import observe_request, payload_of
from trailmap.ingest.otlp import decode_span_batch
from trailmap.ingest.otlp_body import JSON, PROTOBUF

_LIMIT = 1024 * 1024
_FAR_FUTURE_US = 2**62
_SERVER, _CLIENT = 2, 3  # OTLP's Span.SpanKind numbers


def _sdk_spans() -> Sequence[ReadableSpan]:
    """Spans of every kind, with attributes of every type the SDK sends."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "orders", "service.version": "2.1.0", "k8s.cluster.name": "eu"}
        ),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.span_batch")
    with tracer.start_as_current_span(
        "POST /orders",
        kind=SpanKind.SERVER,
        attributes={"http.response.status_code": 503, "ratio": 0.5, "tags": ["a", "b"]},
    ):
        with tracer.start_as_current_span(
            "INSERT",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql", "server.address": "orders-db"},
        ) as query:
            query.set_status(StatusCode.ERROR, "deadlock")
        with tracer.start_as_current_span(
            "send",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": "orders"},
        ):
            pass
        with tracer.start_as_current_span(
            "GET", kind=SpanKind.CLIENT, attributes={"url.full": "https://api.example.com/x"}
        ):
            pass
        with tracer.start_as_current_span("work", attributes={"cached": True}):
            pass
    with tracer.start_as_current_span(
        "process", kind=SpanKind.CONSUMER, attributes={"messaging.system": "kafka"}
    ):
        pass
    provider.shutdown()
    return exporter.get_finished_spans()


def _read(body: bytes, content_type: str = PROTOBUF, encoding: str | None = None) -> Any:
    return decode_span_batch(
        body, content_type=content_type, content_encoding=encoding, max_decoded_bytes=_LIMIT
    )


def _spans(request: Any) -> list[Any]:
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def test_every_field_a_rule_reads_is_what_the_full_request_carries() -> None:
    full = proto_encode(_sdk_spans())
    batch = _read(full.SerializeToString())
    assert len(_spans(batch)) == len(_spans(full)) == 6
    for read, span in zip(_spans(batch), _spans(full), strict=True):
        fields = ("trace_id", "span_id", "parent_span_id", "kind")
        assert [getattr(read, f) for f in fields] == [getattr(span, f) for f in fields]
        assert (read.start_time_unix_nano, read.end_time_unix_nano) == (
            span.start_time_unix_nano,
            span.end_time_unix_nano,
        )
        assert read.status.code == span.status.code
        assert dict(read.attributes) == {
            kv.key: kv.value.SerializeToString() for kv in span.attributes
        }
    resource = full.resource_spans[0].resource
    assert dict(batch.resource_spans[0].resource.attributes) == {
        kv.key: kv.value.SerializeToString() for kv in resource.attributes
    }


def test_a_span_batch_says_what_the_full_request_read_as_one_says() -> None:
    full = proto_encode(_sdk_spans())
    from_full = observe_request(full, oldest_us=0, newest_us=_FAR_FUTURE_US)
    from_batch = observe_request(
        _read(full.SerializeToString()), oldest_us=0, newest_us=_FAR_FUTURE_US
    )
    assert from_batch == from_full
    assert {key[1][2] for key in from_batch.edges} == {"orders-db", "orders"}
    # The SERVER and CONSUMER spans are roots here: only the outbound spans wait.
    assert {payload_of(half)["k"] for half in from_batch.halves} == {"client", "producer"}


def test_json_and_compressed_bodies_read_like_plain_protobuf() -> None:
    spans = _sdk_spans()
    plain = _read(proto_encode(spans).SerializeToString())
    assert _read(json_encode(spans).to_json().encode(), JSON) == plain
    assert _read(gzip.compress(proto_encode(spans).SerializeToString()), PROTOBUF, "gzip") == plain


def test_the_last_of_two_attributes_with_one_key_counts_as_in_the_full_request() -> None:
    request = proto_encode(_sdk_spans())
    server = next(s for s in _spans(request) if s.kind == _SERVER)
    server.attributes.append(
        KeyValue(key="http.response.status_code", value=AnyValue(int_value=200))
    )
    observed = observe_request(
        _read(request.SerializeToString()), oldest_us=0, newest_us=_FAR_FUTURE_US
    )
    # The service's own statistics: its SERVER span (now a 200) and its CONSUMER span.
    served = [stats for (subject, _), stats in observed.minutes.items() if subject[0] == "service"]
    assert (sum(s.calls for s in served), sum(s.errors for s in served)) == (2, 0)


def test_an_attribute_value_nested_too_deep_reads_as_absent() -> None:
    any_value = _field(1, b"leaf")
    for _ in range(200):  # AnyValue.kvlist_value -> KeyValueList.values -> KeyValue.value
        any_value = _field(6, _field(1, _field(2, any_value)))
    request = proto_encode(_sdk_spans())
    client = next(s for s in _spans(request) if s.kind == _CLIENT and not s.status.code)
    span = client.SerializeToString() + _field(9, _field(1, b"peer.service") + _field(2, any_value))
    body = _field(1, _field(2, _field(2, span)))  # resource_spans, scope_spans, spans
    observed = observe_request(_read(body), oldest_us=0, newest_us=_FAR_FUTURE_US)
    assert observed.accepted == 1
    # Its peer comes from the next attribute that names one, its URL.
    assert [payload_of(half)["p"] for half in observed.halves] == ["api.example.com"]


def _field(number: int, message: bytes) -> bytes:
    """One length-delimited protobuf field, written by hand to build what no encoder would."""
    size, prefix = len(message), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        prefix.append(byte | (0x80 if size else 0))
        if not size:
            return bytes([number << 3 | 2]) + bytes(prefix) + message


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x05ab", b'{"resourceSpans": []}'])
def test_a_body_that_is_not_protobuf_is_a_validation_error(body: bytes) -> None:
    with pytest.raises(ValidationFailed):
        _read(body)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=512),
    content_type=st.sampled_from([PROTOBUF, JSON]),
    encoding=st.sampled_from([None, "gzip"]),
)
def test_any_bytes_read_or_fail_with_a_trailmap_error(
    body: bytes, content_type: str, encoding: str | None
) -> None:
    with contextlib.suppress(ValidationFailed, PayloadTooLarge):
        observe_request(_read(body, content_type, encoding), oldest_us=0, newest_us=_FAR_FUTURE_US)
