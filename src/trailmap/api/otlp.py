"""`/api/v1/otlp/v1/traces`: the OTLP/HTTP trace receiver, so an OpenTelemetry SDK or
Collector pointed at `<base>/api/v1/otlp` feeds the graph unchanged.

Success answers speak OTLP (an `ExportTraceServiceResponse` in the request's encoding);
failures keep Trailmap's one JSON error shape, as INTERFACES.md requires of every endpoint.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.api.auth import CurrentPrincipal
from trailmap.api.context import context_of
from trailmap.api.schemas import ErrorBody
from trailmap.graph.pairing import TraceIngestion
from trailmap.ingest.otlp import (
    JSON,
    PROTOBUF,
    content_codings,
    decode_span_batch,
    encode_trace_response,
    media_type_of,
    read_otlp_body,
)
from trailmap.telemetry import count_spans

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/otlp", tags=["otlp"])

_INLINE_DECODE_BYTES = 16 * 1024
_INLINE_PROTOBUF_BYTES = 1024 * 1024

_PROTO_REF = "https://github.com/open-telemetry/opentelemetry-proto"
_PROTO_DOC = (
    "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest, "
    f"binary protobuf ({_PROTO_REF})"
)
_JSON_DOC = (
    "OTLP/JSON: the proto3 JSON mapping of ExportTraceServiceRequest, with trace and span "
    "ids as hex strings and enums as integers"
)

_TRACES_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "An OTLP trace export. `Content-Encoding: gzip` (or deflate) is accepted; the "
            "body is limited as sent and again after decompression."
        ),
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary", "description": _PROTO_DOC}},
            JSON: {
                "schema": {
                    "type": "object",
                    "description": _JSON_DOC,
                    "properties": {"resourceSpans": {"type": "array", "items": {"type": "object"}}},
                }
            },
        },
    }
}

_RESPONSE_DOC = (
    "ExportTraceServiceResponse, in the request's encoding. Empty when every span was "
    "accepted; otherwise partialSuccess says how many spans were rejected and why."
)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": _RESPONSE_DOC,
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "partialSuccess": {
                            "type": "object",
                            "properties": {
                                "rejectedSpans": {"type": "string", "format": "int64"},
                                "errorMessage": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
    },
    **{
        code: {"model": ErrorBody, "description": text}
        for code, text in (
            (400, "Not a readable OTLP trace export: garbage, truncated, or the wrong shape"),
            (401, "Missing, malformed, revoked or expired API key"),
            (403, "The key is READ_ONLY; sending traces needs READ_WRITE"),
            (413, "The body is over the size limit, as sent or after decompression"),
            (415, "Not application/x-protobuf or application/json, or an unknown encoding"),
            (429, "Over the plan's quota; retry after Retry-After seconds"),
            (503, "The database is not answering; retry after Retry-After seconds"),
        )
    },
}


@router.post(
    "/v1/traces",
    summary="Receive OpenTelemetry traces (OTLP/HTTP)",
    description=(
        "The OTLP/HTTP trace endpoint: set `OTEL_EXPORTER_OTLP_ENDPOINT=<base>/api/v1/otlp` "
        "and `OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<key>`. Spans that cannot be "
        "used are counted in partialSuccess; the others are kept."
    ),
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra=_TRACES_DOC,
)
async def post_traces(request: Request, principal: CurrentPrincipal) -> Response:
    ctx = context_of(request)
    principal.require_write()
    # Refuse a wrong type or an unknown encoding before reading a byte of the body.
    media_type = media_type_of(request.headers.get("content-type"))
    encoding = request.headers.get("content-encoding")
    codings = content_codings(encoding)
    body = await read_otlp_body(request, max_bytes=ctx.settings.otlp_max_body_bytes)
    notes: list[str] = []
    decode = partial(
        decode_span_batch,
        body,
        content_type=media_type,
        content_encoding=encoding,
        max_decoded_bytes=ctx.settings.otlp_max_decoded_bytes,
        problems=notes,
    )
    # Inflating and parsing a large body takes long enough (OTLP/JSON above all) to stall
    # every other request on the event loop; a small plain one is cheaper than a thread hop,
    # and so is plain protobuf up to a megabyte (upb parses it in well under a millisecond).
    inline = not codings and (
        len(body) <= _INLINE_DECODE_BYTES
        or (media_type == PROTOBUF and len(body) <= _INLINE_PROTOBUF_BYTES)
    )
    export = decode() if inline else await anyio.to_thread.run_sync(decode)
    result = await _ingestion(request).ingest(principal, export)
    count_spans(accepted=result.accepted_spans, rejected=result.rejected_spans)
    # The decoder's notes say why a span arrived empty; the domain's say the rest.
    message = "; ".join([*notes, *result.problems][:5])
    content = encode_trace_response(
        rejected_spans=result.rejected_spans, error_message=message, media_type=media_type
    )
    return Response(content, media_type=media_type)


def _ingestion(request: Request) -> TraceIngestion:
    # The app's (app.py): it pairs spans in memory while the app's lifespan runs.
    ingestion = request.app.state.trace_ingestion
    assert isinstance(ingestion, TraceIngestion)
    return ingestion
