"""`/api/v1/otlp/v1/metrics`: the OTLP/HTTP metrics receiver, so an OpenTelemetry SDK or
Collector pointed at `<base>/api/v1/otlp` pushes metric points unchanged (docs/internals.md)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.api.otlp import (
    export_request_doc,
    export_responses_doc,
    export_workers,
    receive_export,
)
from trailmap.http.auth import CurrentPrincipal
from trailmap.http.context import context_of
from trailmap.ingest.otlp_body import EntryLimits
from trailmap.ingest.otlp_metrics import (
    METRICS,
    MetricsIngestResult,
    Problems,
    decode_metrics,
    encode_metrics_response,
    points_of,
    store_points,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/otlp", tags=["otlp"])


@router.post(
    "/v1/metrics",
    summary="Receive OpenTelemetry metrics (OTLP/HTTP)",
    description=(
        "The OTLP/HTTP metrics endpoint: set `OTEL_EXPORTER_OTLP_ENDPOINT=<base>/api/v1/otlp` "
        "and `OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<key>`; prefer "
        "`OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta`. Gauges, sums, histograms, "
        "exponential histograms and summaries become metric points (see docs/metrics.md); "
        "the Collector servicegraph connector's `traces_service_graph_*` metrics become "
        "edges of the architecture graph (docs/opentelemetry.md). Data points that cannot be "
        "used are counted in partialSuccess, the others are kept."
    ),
    response_class=Response,
    responses=export_responses_doc(
        METRICS,
        package="metrics",
        answer=(
            "ExportMetricsServiceResponse, in the request's encoding. Empty when every data "
            "point was stored; otherwise partialSuccess says how many data points were rejected "
            "and why (or carries a warning, such as attributes past the label limit, with 0 "
            "rejected)."
        ),
        rejected_field="rejectedDataPoints",
    ),
    openapi_extra=export_request_doc(
        METRICS,
        package="metrics",
        json_note="64-bit integers as strings and enums as integers",
        top_field="resourceMetrics",
    ),
)
async def post_metrics(request: Request, principal: CurrentPrincipal) -> Response:
    ctx = context_of(request)
    export = await receive_export(request, principal, METRICS)
    media_type = export.media_type
    limits = EntryLimits.of(ctx.settings)

    def ingest() -> MetricsIngestResult:
        problems = Problems()
        decoded = decode_metrics(
            export.body,
            content_type=media_type,
            content_encoding=export.content_encoding,
            max_decoded_bytes=ctx.settings.otlp_max_decoded_bytes,
            problems=problems,
            limits=limits,
        )
        return store_points(ctx.db, principal, points_of(decoded, problems), problems)

    # As for traces: the whole export, from decoding to the write, on one worker thread.
    result = await anyio.to_thread.run_sync(ingest, limiter=export_workers(request))
    content = encode_metrics_response(
        rejected_data_points=result.rejected_data_points,
        error_message=result.error_message,
        media_type=media_type,
    )
    return Response(content, media_type=media_type)
