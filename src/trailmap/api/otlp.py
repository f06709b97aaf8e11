"""`/api/v1/otlp/v1/traces`: the OTLP/HTTP trace receiver, so an OpenTelemetry SDK or
Collector pointed at `<base>/api/v1/otlp` feeds the graph unchanged (docs/internals.md)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.accounts import Principal
from trailmap.graph.learn.pairing import TraceIngestion
from trailmap.http.auth import CurrentPrincipal
from trailmap.http.body import read_body
from trailmap.http.context import context_of
from trailmap.http.openapi import error_responses
from trailmap.ingest.otlp import TRACES, decode_span_batch, encode_trace_response
from trailmap.ingest.otlp_body import (
    JSON,
    PROTOBUF,
    EntryLimits,
    Signal,
    content_codings,
    media_type_of,
    too_large,
)
from trailmap.telemetry import count_spans

__all__ = [
    "ReceivedExport",
    "export_request_doc",
    "export_responses_doc",
    "export_workers",
    "receive_export",
    "router",
]

router = APIRouter(prefix="/api/v1/otlp", tags=["otlp"])

_PROTO_REF = "https://github.com/open-telemetry/opentelemetry-proto"


@dataclass(frozen=True, slots=True)
class ReceivedExport:
    """An OTLP export body as sent, with what its headers say about it."""

    media_type: str
    content_encoding: str | None
    compressed: bool
    body: bytes


async def receive_export(request: Request, principal: Principal, signal: Signal) -> ReceivedExport:
    """The export's body, once the key may write, read within the size limit."""
    principal.require_write()
    # Refuse a wrong type or an unknown encoding before reading a byte of the body.
    media_type = media_type_of(request.headers.get("content-type"), signal)
    encoding = request.headers.get("content-encoding")
    codings = content_codings(encoding)
    max_bytes = context_of(request).settings.otlp_max_body_bytes
    body = await read_body(
        request,
        max_bytes=max_bytes,
        too_large=lambda limit, size: too_large(
            limit, "" if size is None else f" ({size} bytes)", signal
        ),
    )
    return ReceivedExport(media_type, encoding, bool(codings), body)


def export_request_doc(
    signal: Signal, *, package: str, json_note: str, top_field: str
) -> dict[str, Any]:
    """The OpenAPI `requestBody` of an export endpoint. `package` is the signal's OTLP
    package ("trace", "metrics"), `json_note` how OTLP/JSON writes what proto3 JSON would
    not, `top_field` the body's array ("resourceSpans")."""
    proto_doc = (
        f"opentelemetry.proto.collector.{package}.v1.{signal.request}, "
        f"binary protobuf ({_PROTO_REF})"
    )
    json_doc = f"OTLP/JSON: the proto3 JSON mapping of {signal.request}, with {json_note}"
    return {
        "requestBody": {
            "required": True,
            "description": (
                f"An OTLP {package} export. `Content-Encoding: gzip` (or deflate) is accepted; "
                "the body is limited as sent and again after decompression."
            ),
            "content": {
                PROTOBUF: {
                    "schema": {"type": "string", "format": "binary", "description": proto_doc}
                },
                JSON: {
                    "schema": {
                        "type": "object",
                        "description": json_doc,
                        "properties": {top_field: {"type": "array", "items": {"type": "object"}}},
                    }
                },
            },
        }
    }


def export_responses_doc(
    signal: Signal, *, package: str, answer: str, rejected_field: str
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of an export endpoint: `answer` describes the success answer,
    whose partialSuccess counts what was refused in `rejected_field` ("rejectedSpans")."""
    return {
        200: {
            "description": answer,
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                JSON: {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "partialSuccess": {
                                "type": "object",
                                "properties": {
                                    rejected_field: {"type": "string", "format": "int64"},
                                    "errorMessage": {"type": "string"},
                                },
                            }
                        },
                    }
                },
            },
        },
        **error_responses(
            400,
            401,
            403,
            413,
            415,
            429,
            503,
            saying={
                400: f"Not a readable OTLP {package} export: garbage, truncated or wrong shape",
                403: f"The key is READ_ONLY; sending {signal.name} needs READ_WRITE",
                413: (
                    "The body is over the size limit, as sent or after decompression, or "
                    "holds more entries (resources, scopes, spans, metrics, data points) "
                    "than one export may (TRAILMAP_OTLP_MAX_*)"
                ),
                415: "Not application/x-protobuf or application/json, or an unknown encoding",
            },
        ),
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
    responses=export_responses_doc(
        TRACES,
        package="trace",
        answer=(
            "ExportTraceServiceResponse, in the request's encoding. Empty when every span was "
            "accepted; otherwise partialSuccess says how many spans were rejected and why."
        ),
        rejected_field="rejectedSpans",
    ),
    openapi_extra=export_request_doc(
        TRACES,
        package="trace",
        json_note="trace and span ids as hex strings and enums as integers",
        top_field="resourceSpans",
    ),
)
async def post_traces(request: Request, principal: CurrentPrincipal) -> Response:
    export = await receive_export(request, principal, TRACES)
    media_type = export.media_type
    settings = context_of(request).settings
    notes: list[str] = []
    decode = partial(
        decode_span_batch,
        export.body,
        content_type=media_type,
        content_encoding=export.content_encoding,
        max_decoded_bytes=settings.otlp_max_decoded_bytes,
        problems=notes,
        limits=EntryLimits.of(settings),
    )
    # Decoding, reading the spans and pairing them run on one worker thread, whatever the
    # body's size: even a small body can hold thousands of entries, and a few kilobytes of
    # gzip millions, each a step of Python that would stall every other request.
    result = await _ingestion(request).ingest_export(principal, decode)
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


def export_workers(request: Request) -> anyio.CapacityLimiter:
    """The app's limiter of OTLP exports being read at once (TRAILMAP_OTLP_WORKERS), shared
    by traces and metrics (app.py)."""
    workers = request.app.state.otlp_workers
    assert isinstance(workers, anyio.CapacityLimiter)
    return workers
