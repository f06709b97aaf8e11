"""OTLP/HTTP trace bodies in, `ExportTraceServiceRequest` out: protobuf or OTLP/JSON, plain or
compressed, refused early and clearly when too large or malformed (docs/internals.md)."""

from __future__ import annotations

import re
from functools import partial
from typing import Any

# protobuf ships no type information (types-protobuf is not a dependency); its use here is
# confined to parse calls whose results are typed below.
from google.protobuf import json_format  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from trailmap.graph.learn.spans import SpanBatch
from trailmap.ingest.otlp_body import (
    PARSE_ERRORS,
    PROTOBUF,
    EntryCount,
    EntryLimits,
    Level,
    Signal,
    decompress,
    encode_export_response,
    media_type_of,
    parse_json_export,
    parse_protobuf,
)

__all__ = ["TRACES", "decode_span_batch", "decode_traces", "encode_trace_response"]

TRACES = Signal(
    name="traces",
    request="ExportTraceServiceRequest",
    batch_setting="OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
)


def _count(limits: EntryLimits | None) -> EntryCount | None:
    """The entries an export may hold, level by level as the wire nests them
    (ExportTraceServiceRequest.resource_spans = 1, ResourceSpans.scope_spans = 2,
    ScopeSpans.spans = 2)."""
    if limits is None:
        return None
    levels = (
        Level(
            frozenset({1}),
            "resource entries (resourceSpans)",
            limits.resources,
            "TRAILMAP_OTLP_MAX_RESOURCES",
        ),
        Level(
            frozenset({2}), "scope entries (scopeSpans)", limits.scopes, "TRAILMAP_OTLP_MAX_SCOPES"
        ),
        Level(frozenset({2}), "spans", limits.spans, "TRAILMAP_OTLP_MAX_SPANS"),
    )
    return EntryCount(levels, TRACES)


# At most this many notes about refused spans are kept; the domain counts every one.
_MAX_NOTES = 20
_HEX = re.compile(r"[0-9a-fA-F]*")


def decode_traces(
    body: bytes,
    *,
    content_type: str,
    content_encoding: str | None,
    max_decoded_bytes: int,
    problems: list[str] | None = None,
    limits: EntryLimits | None = None,
) -> ExportTraceServiceRequest:
    """Decode one OTLP/HTTP trace export body.

    A JSON span that cannot be read (a bad hex id, a field of the wrong type) is left in
    place with no ids, so the domain rejects that span alone and counts it; a note saying
    why is appended to `problems` when given. Anything that sinks the whole body raises
    `ValidationFailed`, `PayloadTooLarge` or `UnsupportedMediaType`; with `limits`, so does
    a body holding more resources, scopes or spans than they allow (before it is parsed).
    """
    kind = media_type_of(content_type, TRACES)
    raw = decompress(body, content_encoding, max_decoded_bytes=max_decoded_bytes, signal=TRACES)
    count = _count(limits)
    if kind == PROTOBUF:
        if count is not None:
            count.scan(raw)
        request: ExportTraceServiceRequest = parse_protobuf(raw, ExportTraceServiceRequest, TRACES)
        return request
    return _from_json(raw, problems if problems is not None else [], count)


def decode_span_batch(
    body: bytes,
    *,
    content_type: str,
    content_encoding: str | None,
    max_decoded_bytes: int,
    problems: list[str] | None = None,
    limits: EntryLimits | None = None,
) -> Any:
    """`decode_traces`, as a `SpanBatch`: a protobuf body is parsed straight into one (fields
    no rule reads are skipped unread, so their contents are not checked either); an OTLP/JSON
    body is decoded as `decode_traces` does, then converted."""
    kind = media_type_of(content_type, TRACES)
    raw = decompress(body, content_encoding, max_decoded_bytes=max_decoded_bytes, signal=TRACES)
    count = _count(limits)
    if kind == PROTOBUF:
        if count is not None:
            count.scan(raw)
        return parse_protobuf(raw, SpanBatch, TRACES)
    request = _from_json(raw, problems if problems is not None else [], count)
    return SpanBatch.FromString(request.SerializeToString())


def _from_json(
    raw: bytes, problems: list[str], count: EntryCount | None
) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    parse_json_export(
        raw,
        request,
        resources=("resourceSpans", "resource_spans"),
        scopes=("scopeSpans", "scope_spans"),
        items=("spans", "spans"),
        add_item=partial(_add_span, problems=problems),
        count=count,
    )
    return request


_SPAN_IDS = (("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id"))
_LINK_IDS = (("traceId", "trace_id"), ("spanId", "span_id"))


def _add_span(target: ScopeSpans, entry: object, where: str, problems: list[str]) -> None:
    """Parse one span; on any problem leave an empty span behind for the domain to reject."""
    span = target.spans.add()
    try:
        if not isinstance(entry, dict):
            raise TypeError("must be an object")
        ids = _take_ids(entry, _SPAN_IDS)
        links = entry.pop("links", None)  # the document is ours: popping spares a copy
        json_format.ParseDict(entry, span, ignore_unknown_fields=True)
        span.trace_id, span.span_id, span.parent_span_id = ids
        if links is not None and not isinstance(links, list):
            raise ValueError("links must be an array")
        for n, link_entry in enumerate(links or []):
            _add_link(span, link_entry, f"{where}.links[{n}]", problems)
    except PARSE_ERRORS as e:
        span.Clear()
        _note(problems, f"{where} was rejected: {e}")


def _note(problems: list[str], text: str) -> None:
    if len(problems) < _MAX_NOTES:
        problems.append(text if len(text) <= 300 else text[:297] + "...")


def _add_link(span: Span, entry: object, where: str, problems: list[str]) -> None:
    """A link with a bad id is dropped; its span still counts."""
    link = Span.Link()
    try:
        if not isinstance(entry, dict):
            raise TypeError("must be an object")
        trace_id, span_id = _take_ids(entry, _LINK_IDS)
        json_format.ParseDict(entry, link, ignore_unknown_fields=True)
    except PARSE_ERRORS as e:
        _note(problems, f"{where} was dropped: {e}")
        return
    link.trace_id, link.span_id = trace_id, span_id
    span.links.append(link)


def _take_ids(entry: dict[str, Any], names: tuple[tuple[str, str], ...]) -> tuple[bytes, ...]:
    """Pop the id fields out of `entry` (json_format would read them as base64) as bytes."""
    ids = []
    for camel, snake in names:
        value = entry.pop(camel, None)
        snake_value = entry.pop(snake, None)
        ids.append(_hex_id(camel, value if value is not None else snake_value))
    return tuple(ids)


def _hex_id(name: str, value: object) -> bytes:
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a hex string, not {type(value).__name__}")
    if len(value) % 2 or not _HEX.fullmatch(value):
        hint = " (OTLP/JSON sends ids as hex, not base64)" if value.endswith("=") else ""
        raise ValueError(f"{name} {value[:40]!r} is not a hex string{hint}")
    return bytes.fromhex(value)


def encode_trace_response(*, rejected_spans: int, error_message: str, media_type: str) -> bytes:
    """The OTLP success answer, in the request's encoding; `partial_success` only when there
    is something to say (spans refused, or a warning)."""
    return encode_export_response(
        ExportTraceServiceResponse(),
        rejected_field="rejected_spans",
        rejected=rejected_spans,
        error_message=error_message,
        media_type=media_type,
    )
