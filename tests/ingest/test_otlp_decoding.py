"""The OTLP/HTTP trace decoder on its own: what the real OpenTelemetry SDK encoders produce
goes in as it is; garbage, bombs and oddities come out as Trailmap errors, never a crash."""

from __future__ import annotations

import contextlib
import copy
import gzip
import json
import tracemalloc
import zlib
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.json.common.trace_encoder import encode_spans as json_encode
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as proto_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from trailmap.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from trailmap.ingest.otlp import decode_traces, encode_trace_response
from trailmap.ingest.otlp_body import JSON, PROTOBUF

LIMIT = 1024 * 1024


def sdk_spans(*, big_value: str = "") -> Sequence[ReadableSpan]:
    """A small real trace from the OpenTelemetry SDK: a server span calling a database."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout", "deployment.environment": "prod"}),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.ingest", "1.0")
    attributes: dict[str, Any] = {"http.route": "/cart", "retries": 2, "ratio": 0.5, "ok": True}
    if big_value:
        attributes["big"] = big_value
    with tracer.start_as_current_span(
        "GET /cart", kind=SpanKind.SERVER, attributes=attributes
    ) as root:
        root.add_event("cache miss", {"key": "cart:42"})
        with tracer.start_as_current_span(
            "SELECT carts",
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "tags": ["a", "b"]},
            links=[Link(root.get_span_context(), {"why": "test"})],
        ) as query:
            query.set_status(StatusCode.ERROR, "timeout")
    provider.shutdown()
    return exporter.get_finished_spans()


def protobuf_body(spans: Sequence[ReadableSpan]) -> bytes:
    body: bytes = proto_encode(spans).SerializeToString()
    return body


def json_body(spans: Sequence[ReadableSpan]) -> bytes:
    return json_encode(spans).to_json().encode()


def decode(
    body: bytes,
    content_type: str = JSON,
    encoding: str | None = None,
    limit: int = LIMIT,
    problems: list[str] | None = None,
) -> ExportTraceServiceRequest:
    return decode_traces(
        body,
        content_type=content_type,
        content_encoding=encoding,
        max_decoded_bytes=limit,
        problems=problems,
    )


def all_spans(request: ExportTraceServiceRequest) -> list[Any]:
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def one_span_document(**span: Any) -> dict[str, Any]:
    good = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}
    return {"resourceSpans": [{"scopeSpans": [{"spans": [{**good, "name": "ok"}, span]}]}]}


def gzip_bomb(inflated_bytes: int) -> bytes:
    """Zeros compressed in a stream, so the test never holds the inflated size either."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    chunk = bytes(1024 * 1024)
    parts = [packer.compress(chunk) for _ in range(inflated_bytes // len(chunk))]
    return b"".join([*parts, packer.flush()])


def test_a_protobuf_export_from_the_sdk_decodes_to_the_same_request() -> None:
    spans = sdk_spans()
    assert decode(protobuf_body(spans), PROTOBUF) == proto_encode(spans)


def test_otlp_json_from_the_sdk_exporter_decodes_to_what_protobuf_carries() -> None:
    spans = sdk_spans()
    decoded = decode(json_body(spans))
    assert decoded == proto_encode(spans)
    client, server = sorted(all_spans(decoded), key=lambda s: s.kind, reverse=True)
    assert len(client.trace_id) == 16
    assert len(client.span_id) == 8
    assert client.parent_span_id == server.span_id
    assert client.links[0].span_id == server.span_id


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)),
        ("identity", lambda data: data),
        ("gzip, gzip", lambda data: gzip.compress(gzip.compress(data))),
        ("", lambda data: data),
    ],
)
def test_compressed_bodies_decode_like_plain_ones(encoding: str, compress: Any) -> None:
    spans = sdk_spans()
    for content_type, body in ((PROTOBUF, protobuf_body(spans)), (JSON, json_body(spans))):
        assert decode(compress(body), content_type, encoding) == proto_encode(spans)


def test_a_gzip_stream_of_several_members_decodes_whole() -> None:
    body = protobuf_body(sdk_spans())
    half = len(body) // 2
    members = gzip.compress(body[:half]) + gzip.compress(body[half:])
    assert decode(members, PROTOBUF, "gzip").SerializeToString() == body


def test_a_content_type_with_parameters_is_accepted() -> None:
    body = json_body(sdk_spans())
    assert len(all_spans(decode(body, "Application/JSON; charset=utf-8"))) == 2


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/grpc", "multipart/x"])
def test_other_content_types_are_refused_naming_the_two_accepted(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        decode(b"{}", content_type)
    assert PROTOBUF in refused.value.message
    assert JSON in refused.value.message


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, compress"])
def test_an_unknown_content_encoding_is_refused(encoding: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="gzip"):
        decode(b"{}", JSON, encoding)


def test_snake_case_keys_integer_enums_and_64_bit_numbers_are_read() -> None:
    document = {
        "resource_spans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"string_value": "a"}}]
                },
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": "0AF7651916CD43DD8448EB211C80319C",
                                "span_id": "b7ad6b7169203331",
                                "name": "n",
                                "kind": 3,
                                "start_time_unix_nano": 1700000000000000000,
                                "end_time_unix_nano": "1700000000100000000",
                                "status": {"code": 2},
                                "attributes": [{"key": "n", "value": {"intValue": "12"}}],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    (span,) = all_spans(decode(json.dumps(document).encode()))
    assert span.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert span.kind == 3
    assert span.end_time_unix_nano - span.start_time_unix_nano == 100_000_000
    assert span.status.code == 2
    assert span.attributes[0].value.int_value == 12


def test_unknown_json_fields_are_ignored() -> None:
    document = json.loads(json_body(sdk_spans()))
    document["futureField"] = {"x": 1}
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["somethingNew"] = [1, 2]
    assert len(all_spans(decode(json.dumps(document).encode()))) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("traceId", "not-hex-at-all-not-hex-at-all-xx"),
        ("spanId", "zz"),
        ("spanId", "b7ad6b716920333"),  # an odd number of digits
        ("parentSpanId", "12 34"),
        ("traceId", 12345),
    ],
)
def test_a_span_with_a_bad_id_is_emptied_and_its_neighbour_kept(field: str, value: object) -> None:
    span = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "00f067aa0ba902b7"}
    span[field] = value  # type: ignore[assignment]
    problems: list[str] = []
    good, bad = all_spans(decode(json.dumps(one_span_document(**span)).encode(), problems=problems))
    assert good.name == "ok"
    assert len(good.trace_id) == 16
    assert (bad.trace_id, bad.span_id) == (b"", b"")  # the domain rejects it and counts it
    assert len(problems) == 1
    assert "spans[1]" in problems[0]
    assert field in problems[0]


def test_a_base64_id_gets_a_hint_to_send_hex() -> None:
    problems: list[str] = []
    document = one_span_document(traceId="CvdlGRbNQ92ESOshHIAxnA==", spanId="b7ad6b7169203331")
    decode(json.dumps(document).encode(), problems=problems)
    assert "hex, not base64" in problems[0]


def test_a_span_with_a_field_of_the_wrong_type_costs_only_itself() -> None:
    problems: list[str] = []
    document = one_span_document(
        traceId="0af7651916cd43dd8448eb211c80319c", spanId="b7ad6b7169203331", name=42
    )
    document["resourceSpans"][0]["scopeSpans"][0]["spans"].append("not a span")
    spans = all_spans(decode(json.dumps(document).encode(), problems=problems))
    assert [s.name for s in spans] == ["ok", "", ""]
    assert len(problems) == 2
    assert "name" in problems[0]


def test_a_link_with_a_bad_id_is_dropped_and_its_span_kept() -> None:
    problems: list[str] = []
    links = [
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"},
        {"traceId": "oops", "spanId": "b7ad6b7169203331"},
    ]
    document = one_span_document(
        traceId="0af7651916cd43dd8448eb211c80319c", spanId="00f067aa0ba902b7", links=links
    )
    _good, span = all_spans(decode(json.dumps(document).encode(), problems=problems))
    assert span.span_id.hex() == "00f067aa0ba902b7"
    assert [link.span_id.hex() for link in span.links] == ["b7ad6b7169203331"]
    assert "links[1] was dropped" in problems[0]


def test_an_integer_beyond_64_bits_costs_only_its_span() -> None:
    document = one_span_document(
        traceId="0af7651916cd43dd8448eb211c80319c", startTimeUnixNano="BIG"
    )
    raw = json.dumps(document).replace('"BIG"', "123456789012345678901234567890")
    problems: list[str] = []
    good, bad = all_spans(decode(raw.encode(), problems=problems))
    assert good.name == "ok"
    assert bad.trace_id == b""
    assert "startTimeUnixNano" in problems[0]


def test_a_gzip_bomb_is_refused_without_inflating_past_the_limit() -> None:
    bomb = gzip_bomb(64 * LIMIT)
    assert len(bomb) < 100 * 1024  # a few dozen KB as sent
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge, match="after decompression"):
            decode(bomb, PROTOBUF, "gzip")
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * LIMIT


def test_a_bomb_inside_a_bomb_is_refused_too() -> None:
    nested = gzip.compress(gzip_bomb(8 * LIMIT))
    with pytest.raises(PayloadTooLarge):
        decode(nested, PROTOBUF, "gzip, gzip")


def test_a_body_over_the_decoded_limit_is_refused_even_uncompressed() -> None:
    with pytest.raises(PayloadTooLarge):
        decode(b" " * (LIMIT + 1), JSON)


def test_a_body_exactly_at_the_limit_is_decoded() -> None:
    body = protobuf_body(sdk_spans())
    assert decode(gzip.compress(body), PROTOBUF, "gzip", limit=len(body)) == decode(body, PROTOBUF)


def test_huge_attribute_values_decode_intact() -> None:
    big = "x" * (LIMIT // 2)
    spans = sdk_spans(big_value=big)
    for content_type, body in ((PROTOBUF, protobuf_body(spans)), (JSON, json_body(spans))):
        decoded = decode(gzip.compress(body), content_type, "gzip", limit=2 * LIMIT)
        values = [a.value.string_value for s in all_spans(decoded) for a in s.attributes]
        assert big in values
        with pytest.raises(PayloadTooLarge):
            decode(gzip.compress(body), content_type, "gzip", limit=LIMIT // 4)


def test_a_truncated_gzip_body_is_a_validation_error() -> None:
    body = gzip.compress(protobuf_body(sdk_spans()))
    with pytest.raises(ValidationFailed, match="cut off"):
        decode(body[: len(body) // 2], PROTOBUF, "gzip")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_data_that_is_not_compressed_is_a_validation_error(encoding: str) -> None:
    with pytest.raises(ValidationFailed, match=encoding):
        decode(b"plainly not compressed", PROTOBUF, encoding)


def test_a_truncated_protobuf_body_is_a_validation_error() -> None:
    body = protobuf_body(sdk_spans())
    with pytest.raises(ValidationFailed, match="truncated"):
        decode(body[:-3], PROTOBUF)


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", b"hello world", bytes(range(256))])
def test_garbage_protobuf_is_a_validation_error(garbage: bytes) -> None:
    with pytest.raises(ValidationFailed, match="not a valid protobuf"):
        decode(garbage, PROTOBUF)


def test_json_sent_as_protobuf_gets_a_hint() -> None:
    with pytest.raises(ValidationFailed, match="send it as application/json"):
        decode(json_body(sdk_spans()), PROTOBUF)


@pytest.mark.parametrize("body", [b"", b"not json", b'{"resourceSpans": [', b'{"a": NaN}'])
def test_invalid_json_is_a_validation_error(body: bytes) -> None:
    with pytest.raises(ValidationFailed, match="not valid JSON"):
        decode(body)


@pytest.mark.parametrize(
    "document",
    [
        [],
        "resourceSpans",
        {"resourceSpans": {}},
        {"resourceSpans": [1]},
        {"resourceSpans": [{"scopeSpans": "x"}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": {}}]}]},
        {"resourceSpans": [{"resource": {"attributes": 7}}]},
    ],
)
def test_json_of_the_wrong_shape_is_a_validation_error(document: object) -> None:
    with pytest.raises(ValidationFailed) as refused:
        decode(json.dumps(document).encode())
    assert refused.value.details[0].field


def test_otlp_metrics_sent_to_the_traces_decoder_are_told_where_to_go() -> None:
    with pytest.raises(ValidationFailed, match="metrics"):
        decode(b'{"resourceMetrics": [{"scopeMetrics": []}]}')


def test_an_empty_protobuf_body_is_an_empty_export() -> None:
    assert decode(b"", PROTOBUF) == ExportTraceServiceRequest()


def test_deep_nesting_is_refused_without_crashing() -> None:
    with pytest.raises(ValidationFailed):
        decode(b"[" * 100_000 + b"]" * 100_000)
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(150):  # 600 levels of JSON: past json_format's limit of 100 messages
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    problems: list[str] = []
    document = one_span_document(
        traceId="0af7651916cd43dd8448eb211c80319c",
        spanId="b7ad6b7169203331",
        attributes=[{"key": "deep", "value": value}],
    )
    _good, bad = all_spans(decode(json.dumps(document).encode(), problems=problems))
    assert bad.span_id == b""
    assert problems
    any_value = b""
    for _ in range(200):  # AnyValue.kvlist_value -> KeyValueList.values -> KeyValue.value
        any_value = _field(6, _field(1, _field(2, any_value)))
    span = _field(9, _field(1, b"k") + _field(2, any_value))  # Span.attributes
    request = _field(1, _field(2, _field(2, span)))  # resource_spans, scope_spans, spans
    with pytest.raises(ValidationFailed):
        decode(request, PROTOBUF)


def _field(number: int, message: bytes) -> bytes:
    """One length-delimited protobuf field, written by hand to build what no encoder would."""
    size, prefix = len(message), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        prefix.append(byte | (0x80 if size else 0))
        if not size:
            return bytes([number << 3 | 2]) + bytes(prefix) + message


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=512),
    content_type=st.sampled_from([PROTOBUF, JSON]),
    encoding=st.sampled_from([None, "gzip", "deflate"]),
)
def test_any_bytes_decode_or_fail_with_a_trailmap_error(
    body: bytes, content_type: str, encoding: str | None
) -> None:
    # Anything but a 400 or 413 (a crash most of all) fails the test.
    with contextlib.suppress(ValidationFailed, PayloadTooLarge):
        decode(body, content_type, encoding)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceSpans",
                    "scopeSpans",
                    "spans",
                    "traceId",
                    "spanId",
                    "name",
                    "kind",
                    "attributes",
                    "key",
                    "value",
                    "stringValue",
                    "links",
                    "status",
                    "code",
                    "x",
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
    skeleton = {"resourceSpans": [{"scopeSpans": [{"spans": [copy.deepcopy(document)]}]}]}
    for candidate in (document, skeleton):
        with contextlib.suppress(ValidationFailed):
            decode(json.dumps(candidate).encode(), problems=[])


def test_the_response_is_empty_when_nothing_was_rejected() -> None:
    assert encode_trace_response(rejected_spans=0, error_message="", media_type=PROTOBUF) == b""
    assert encode_trace_response(rejected_spans=0, error_message="", media_type=JSON) == b"{}"


def test_partial_success_is_encoded_in_the_request_encoding() -> None:
    binary = encode_trace_response(rejected_spans=3, error_message="bad ids", media_type=PROTOBUF)
    response = ExportTraceServiceResponse.FromString(binary)
    assert response.partial_success.rejected_spans == 3
    assert response.partial_success.error_message == "bad ids"
    text = encode_trace_response(rejected_spans=3, error_message="bad ids", media_type=JSON)
    assert json.loads(text) == {"partialSuccess": {"rejectedSpans": "3", "errorMessage": "bad ids"}}
