"""OTLP/HTTP trace bodies in, `ExportTraceServiceRequest` out: protobuf or OTLP/JSON, plain or
compressed, refused early and clearly when too large or malformed.

Plain functions, so the benchmark and the demo decode exactly what the HTTP receiver does.
The receiver itself takes `decode_span_batch`: the same body read as the graph reads it
(graph/spans.py's `SpanBatch`, only the fields its rules use), so that a protobuf body is
parsed once, into what the rules read fastest.
"""

from __future__ import annotations

import json
import re
import zlib
from typing import Any

import orjson

# protobuf ships no type information (types-protobuf is not a dependency); its use here is
# confined to parse and serialize calls whose results are typed below.
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from starlette.requests import Request

from trailmap.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from trailmap.graph.spans import SpanBatch

__all__ = [
    "JSON",
    "PROTOBUF",
    "content_codings",
    "decode_span_batch",
    "decode_traces",
    "decompress",
    "encode_trace_response",
    "media_type_of",
    "read_otlp_body",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ENCODINGS = ("gzip", "deflate", "identity")
# At most this many notes about refused spans are kept; the domain counts every one.
_MAX_NOTES = 20
_HEX = re.compile(r"[0-9a-fA-F]*")
# What json_format raises on input of the wrong shape (ParseError mostly; the rest to be safe).
_PARSE_ERRORS = (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError)


def media_type_of(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json`; refuses any other type."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(
            f"Send OTLP traces as {PROTOBUF} or {JSON}; got {kind or 'no Content-Type header'}."
        )
    return kind


async def read_otlp_body(request: Request, *, max_bytes: int) -> bytes:
    """The body as sent, refused by its Content-Length or as soon as the stream passes
    `max_bytes`, so an oversized request costs no more than the limit."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ValidationFailed.field("Content-Length", "must be a number of bytes") from None
        if size > max_bytes:
            raise PayloadTooLarge(_too_large(max_bytes, f" ({size} bytes)"))
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise PayloadTooLarge(_too_large(max_bytes, ""))
        chunks.append(chunk)
    return b"".join(chunks)


def decode_traces(
    body: bytes,
    *,
    content_type: str,
    content_encoding: str | None,
    max_decoded_bytes: int,
    problems: list[str] | None = None,
) -> ExportTraceServiceRequest:
    """Decode one OTLP/HTTP trace export body.

    A JSON span that cannot be read (a bad hex id, a field of the wrong type) is left in
    place with no ids, so the domain rejects that span alone and counts it; a note saying
    why is appended to `problems` when given. Anything that sinks the whole body raises
    `ValidationFailed`, `PayloadTooLarge` or `UnsupportedMediaType`.
    """
    kind = media_type_of(content_type)
    raw = decompress(body, content_encoding, max_decoded_bytes=max_decoded_bytes)
    if kind == PROTOBUF:
        request: ExportTraceServiceRequest = _from_protobuf(raw)
        return request
    return _from_json(raw, problems if problems is not None else [])


def decode_span_batch(
    body: bytes,
    *,
    content_type: str,
    content_encoding: str | None,
    max_decoded_bytes: int,
    problems: list[str] | None = None,
) -> Any:
    """`decode_traces`, as a `SpanBatch`: a protobuf body is parsed straight into one (fields
    no rule reads are skipped unread, so their contents are not checked either); an OTLP/JSON
    body is decoded as `decode_traces` does, then converted."""
    kind = media_type_of(content_type)
    raw = decompress(body, content_encoding, max_decoded_bytes=max_decoded_bytes)
    if kind == PROTOBUF:
        return _from_protobuf(raw, SpanBatch)
    request = _from_json(raw, problems if problems is not None else [])
    return SpanBatch.FromString(request.SerializeToString())


def content_codings(content_encoding: str | None) -> list[str]:
    """The Content-Encoding codings, refused up front when one is not supported."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    for coding in codings:
        if coding not in (*_ENCODINGS, "x-gzip"):
            raise UnsupportedMediaType(
                f"Content-Encoding {coding!r} is not supported; send the body as "
                f"{', '.join(_ENCODINGS)} (OTEL_EXPORTER_OTLP_COMPRESSION=gzip)."
            )
    return codings


def decompress(body: bytes, content_encoding: str | None, *, max_decoded_bytes: int) -> bytes:
    """Undo Content-Encoding (applied in the order listed), never inflating past the limit."""
    for coding in reversed(content_codings(content_encoding)):
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, zlib.MAX_WBITS | 16, coding, max_decoded_bytes)
        elif coding == "deflate":
            # HTTP's deflate is zlib-wrapped, but some clients send raw deflate: accept both.
            wrapped = len(body) >= 2 and body[0] & 0x0F == 8 and int.from_bytes(body[:2]) % 31 == 0
            wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
            body = _inflate(body, wbits, coding, max_decoded_bytes)
    if len(body) > max_decoded_bytes:
        raise PayloadTooLarge(_too_large(max_decoded_bytes, ""))
    return body


def _inflate(data: bytes, wbits: int, coding: str, limit: int) -> bytes:
    """Decompress `max_length` at a time: a small bomb stops at limit + 1 bytes of output."""
    out = bytearray()
    while True:  # one pass per gzip member; a gzip stream may hold several
        inflater = zlib.decompressobj(wbits)
        try:
            while data and not inflater.eof:
                out += inflater.decompress(data, limit - len(out) + 1)
                if len(out) > limit:
                    raise PayloadTooLarge(_too_large(limit, " after decompression"))
                data = inflater.unconsumed_tail
            out += inflater.flush(limit - len(out) + 1)
        except zlib.error as error:
            raise ValidationFailed.field(
                "body", f"the body is not valid {coding} data ({error}); check Content-Encoding"
            ) from None
        if len(out) > limit:
            raise PayloadTooLarge(_too_large(limit, " after decompression"))
        if not inflater.eof:
            raise ValidationFailed.field(
                "body", f"the {coding} data ends early; the body was cut off in transit"
            )
        data = inflater.unused_data
        if not data or wbits < 0 or not data.startswith(b"\x1f\x8b"):
            return bytes(out)


def _too_large(limit: int, how: str) -> str:
    # Compressing helps only with the limit as sent; past decompression, batches must shrink.
    gzip = "" if how == " after decompression" else " or compress them with gzip"
    return (
        f"The body is larger than {limit} bytes{how}; export smaller batches "
        f"(OTEL_BSP_MAX_EXPORT_BATCH_SIZE){gzip}."
    )


def _from_protobuf(raw: bytes, message: Any = ExportTraceServiceRequest) -> Any:
    request = message()
    try:
        request.ParseFromString(raw)
    except DecodeError:
        hint = (
            "; it looks like JSON, so send it as application/json"
            if raw.lstrip()[:1] in (b"{", b"[")
            else "; check that it is not truncated and that Content-Encoding is right"
        )
        raise ValidationFailed.field(
            "body", f"the body is not a valid protobuf ExportTraceServiceRequest{hint}"
        ) from None
    return request


def _from_json(raw: bytes, problems: list[str]) -> ExportTraceServiceRequest:
    document = _parse_json(raw)
    if not isinstance(document, dict):
        raise ValidationFailed.field(
            "body", "an OTLP/JSON body is an object with a resourceSpans array"
        )
    entries = _array(document, "resourceSpans", "resource_spans", "body")
    if not entries and ("resourceMetrics" in document or "resourceLogs" in document):
        raise ValidationFailed.field(
            "body", "this is OTLP metrics or logs; send it to its own endpoint"
        )
    request = ExportTraceServiceRequest()
    for i, entry in enumerate(entries):
        where = f"resourceSpans[{i}]"
        scopes = _array(entry, "scopeSpans", "scope_spans", where)
        resource_spans = request.resource_spans.add()
        _parse_part(entry, resource_spans, where, skip=("scopeSpans", "scope_spans"))
        for j, scope_entry in enumerate(scopes):
            scope_where = f"{where}.scopeSpans[{j}]"
            spans = _array(scope_entry, "spans", "spans", scope_where)
            scope_spans = resource_spans.scope_spans.add()
            _parse_part(scope_entry, scope_spans, scope_where, skip=("spans",))
            for k, span in enumerate(spans):
                _add_span(scope_spans, span, f"{scope_where}.spans[{k}]", problems)
    return request


def _parse_json(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        fast_error = error
    try:  # integers beyond 64 bits: read them here so they cost only their own span
        return json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):
        pass
    raise ValidationFailed.field(
        "body", f"the body is not valid JSON ({fast_error}); check that it is not truncated"
    )


def _not_json(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def _array(entry: object, camel: str, snake: str, where: str) -> list[Any]:
    """The list under `camel` (or its snake_case twin) of an object; absent or null is empty."""
    if not isinstance(entry, dict):
        raise ValidationFailed.field(where, "must be an object")
    value = entry.get(camel, entry.get(snake))
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationFailed.field(f"{where}.{camel}", "must be an array")
    return value


def _parse_part(
    entry: dict[str, Any], target: ResourceSpans | ScopeSpans, where: str, skip: tuple[str, ...]
) -> None:
    rest = {key: value for key, value in entry.items() if key not in skip}
    try:
        json_format.ParseDict(rest, target, ignore_unknown_fields=True)
    except _PARSE_ERRORS as e:
        raise ValidationFailed.field(where, f"is not valid OTLP/JSON ({str(e)[:200]})") from None


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
    except _PARSE_ERRORS as e:
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
    except _PARSE_ERRORS as e:
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
    response = ExportTraceServiceResponse()
    if rejected_spans or error_message:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = error_message
    if media_type == PROTOBUF:
        encoded: bytes = response.SerializeToString()
        return encoded
    return orjson.dumps(json_format.MessageToDict(response))
