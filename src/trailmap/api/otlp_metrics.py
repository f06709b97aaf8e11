"""`/api/v1/otlp/v1/metrics`: the OTLP/HTTP metrics receiver, so an OpenTelemetry SDK or
Collector pointed at `<base>/api/v1/otlp` pushes metric points unchanged.

Success answers speak OTLP (an `ExportMetricsServiceResponse` in the request's encoding);
failures keep Trailmap's one JSON error shape, as INTERFACES.md requires of every endpoint.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.api.auth import CurrentPrincipal
from trailmap.api.context import context_of
from trailmap.api.schemas import ErrorBody
from trailmap.ingest.otlp import JSON, PROTOBUF, content_codings
from trailmap.ingest.otlp_metrics import (
    MetricPoints,
    Problems,
    decode_metrics,
    encode_metrics_response,
    metrics_media_type,
    points_of,
    read_metrics_body,
    store_points,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/otlp", tags=["otlp"])

_INLINE_DECODE_BYTES = 16 * 1024

_PROTO_REF = "https://github.com/open-telemetry/opentelemetry-proto"
_PROTO_DOC = (
    "opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest, "
    f"binary protobuf ({_PROTO_REF})"
)
_JSON_DOC = (
    "OTLP/JSON: the proto3 JSON mapping of ExportMetricsServiceRequest, with 64-bit "
    "integers as strings and enums as integers"
)

_METRICS_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "An OTLP metrics export. `Content-Encoding: gzip` (or deflate) is accepted; the "
            "body is limited as sent and again after decompression."
        ),
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary", "description": _PROTO_DOC}},
            JSON: {
                "schema": {
                    "type": "object",
                    "description": _JSON_DOC,
                    "properties": {
                        "resourceMetrics": {"type": "array", "items": {"type": "object"}}
                    },
                }
            },
        },
    }
}

_RESPONSE_DOC = (
    "ExportMetricsServiceResponse, in the request's encoding. Empty when every data point "
    "was stored; otherwise partialSuccess says how many data points were rejected and why "
    "(or carries a warning, such as attributes past the label limit, with 0 rejected)."
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
                                "rejectedDataPoints": {"type": "string", "format": "int64"},
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
            (400, "Not a readable OTLP metrics export: garbage, truncated, or the wrong shape"),
            (401, "Missing, malformed, revoked or expired API key"),
            (403, "The key is READ_ONLY; sending metrics needs READ_WRITE"),
            (413, "The body is over the size limit, as sent or after decompression"),
            (415, "Not application/x-protobuf or application/json, or an unknown encoding"),
            (429, "Over the plan's quota; retry after Retry-After seconds"),
            (503, "The database is not answering; retry after Retry-After seconds"),
        )
    },
}


@router.post(
    "/v1/metrics",
    summary="Receive OpenTelemetry metrics (OTLP/HTTP)",
    description=(
        "The OTLP/HTTP metrics endpoint: set `OTEL_EXPORTER_OTLP_ENDPOINT=<base>/api/v1/otlp` "
        "and `OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<key>`; prefer "
        "`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta`. Gauges, sums, histograms, "
        "exponential histograms and summaries become metric points (see docs/metrics.md); "
        "data points that cannot be used are counted in partialSuccess, the others are kept."
    ),
    response_class=Response,
    responses=_RESPONSES,
    openapi_extra=_METRICS_DOC,
)
async def post_metrics(request: Request, principal: CurrentPrincipal) -> Response:
    ctx = context_of(request)
    principal.require_write()
    # Refuse a wrong type or an unknown encoding before reading a byte of the body.
    media_type = metrics_media_type(request.headers.get("content-type"))
    encoding = request.headers.get("content-encoding")
    codings = content_codings(encoding)
    body = await read_metrics_body(request, max_bytes=ctx.settings.otlp_max_body_bytes)
    problems = Problems()

    def read() -> MetricPoints:
        export = decode_metrics(
            body,
            content_type=media_type,
            content_encoding=encoding,
            max_decoded_bytes=ctx.settings.otlp_max_decoded_bytes,
            problems=problems,
        )
        return points_of(export, problems)

    # As for traces: inflating and parsing a large body would stall the event loop; a small
    # plain one is cheaper than a thread hop.
    small = len(body) <= _INLINE_DECODE_BYTES and not codings
    points = read() if small else await anyio.to_thread.run_sync(read)
    result = await store_points(ctx.db, principal, points, problems)
    content = encode_metrics_response(
        rejected_data_points=result.rejected_data_points,
        error_message=result.error_message,
        media_type=media_type,
    )
    return Response(content, media_type=media_type)
