"""`/api/v1/metrics`: push metric points, set where each metric comes from, and compare a
service's metrics before and after an event (`/api/v1/events/{id}/metrics`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from trailmap.errors import ValidationFailed
from trailmap.http.auth import CurrentPrincipal, key_actor
from trailmap.http.body import read_json_body
from trailmap.http.context import context_of
from trailmap.http.errors import error_response
from trailmap.http.openapi import error_responses
from trailmap.http.responses import ok
from trailmap.metrics import around
from trailmap.metrics.points import pushed_metric_names, record_points
from trailmap.metrics.settings import read_settings, render_settings, update_settings
from trailmap.settings import Settings

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


class MetricsAnswer(BaseModel):
    success: bool
    data: dict[str, Any]


_ERRORS = error_responses(400, 401, 403, 503)

_POINT = {
    "type": "object",
    "required": ["name", "value", "time"],
    "properties": {
        "name": {"type": "string", "maxLength": 200, "examples": ["error_rate"]},
        "value": {"type": "number"},
        "time": {"type": "string", "examples": ["2026-11-20T10:00:00Z", "NOW"]},
        "service": {"type": "string", "maxLength": 200},
        "subject": {"type": "string", "maxLength": 50, "description": "The environment"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


def _secret(settings: Settings) -> str | None:
    return settings.encryption_secret


@router.post(
    "/api/v1/metrics",
    summary="Send metric points",
    description=(
        "One point or an array of points `{name, value, time, service?, subject?, labels?}`. "
        "A point is stored once per series (name, service, subject, labels) and time: sending "
        "it again changes nothing, and a new value for the same time replaces the old one. "
        "Results are per item: valid points are stored even when others are not."
    ),
    response_model=MetricsAnswer,
    responses={201: {"model": MetricsAnswer, "description": "Every point was stored"}, **_ERRORS},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [_POINT, {"type": "array", "items": _POINT}]}
                }
            },
        }
    },
)
async def post_metrics(request: Request, principal: CurrentPrincipal) -> Response:
    ctx = context_of(request)
    principal.require_write()
    body = await read_json_body(
        request, max_bytes=ctx.settings.max_body_bytes, accepted=("application/json",)
    )
    is_batch = isinstance(body, list)
    items: list[object] = body if isinstance(body, list) else [body]
    if not items:
        raise ValidationFailed("The batch is empty; send at least one point.")
    if len(items) > ctx.settings.max_batch_points:
        raise ValidationFailed.field(
            "body",
            f"a batch holds at most {ctx.settings.max_batch_points} points; "
            f"this one has {len(items)}",
        )
    result = await record_points(ctx.db, principal, items)
    if not result.accepted:
        message = (
            f"None of the {len(items)} points was stored; each problem is listed in details."
            if is_batch
            else result.rejected[0]["message"]
        )
        return error_response(400, "VALIDATION_ERROR", message, result.rejected)
    return ok(result.as_json(), status_code=201 if not result.rejected else 200)


@router.get(
    "/api/v1/metrics/names",
    summary="The metric names pushed for a service and environment",
    response_model=MetricsAnswer,
    responses=_ERRORS,
)
async def metric_names(
    request: Request,
    principal: CurrentPrincipal,
    service: Annotated[str, Query(max_length=200)],
    subject: Annotated[str, Query(max_length=50, description="The environment")] = "default",
) -> Response:
    names = await pushed_metric_names(
        context_of(request).db, principal, service=service, environment=subject
    )
    return ok({"service": service, "subject": subject, "names": names})


@router.get(
    "/api/v1/metrics/settings",
    summary="Which source serves each metric, and the Prometheus-compatible API",
    response_model=MetricsAnswer,
    responses=_ERRORS,
)
async def get_settings(request: Request, principal: CurrentPrincipal) -> Response:
    ctx = context_of(request)
    settings = await read_settings(ctx.db, principal.org_id, secret_key=None)
    return ok(render_settings(settings))


@router.put(
    "/api/v1/metrics/settings",
    summary="Choose the source of each metric; connect a Prometheus-compatible API",
    description=(
        'Body: `{"sources": {"error_rate": "pushed|spans|prometheus|auto"}, "prometheus": '
        '{"base_url": "http://prometheus:9090", "auth_header": {"name": "Authorization", '
        '"value": "Bearer ..."}, "queries": {"error_rate": "PromQL with $service and '
        '$environment"}, "timeout_seconds": 10}}`. Parts left out are kept; `"prometheus": '
        "null` disconnects it. The auth header is stored encrypted with TRAILMAP_SECRET_KEY "
        "and never shown again; a `base_url` on another scheme, host or port drops it unless "
        "the request sends one (`notices` in the answer says so). A `base_url` whose host is, "
        "or resolves to, an address TRAILMAP_OUTBOUND_ALLOWED_NETWORKS refuses (loopback by "
        "default; link-local and cloud metadata addresses always) is a 400."
    ),
    response_model=MetricsAnswer,
    responses=_ERRORS,
)
async def put_settings(request: Request, principal: CurrentPrincipal) -> Response:
    ctx = context_of(request)
    principal.require("manage_settings")
    body = await read_json_body(request, max_bytes=64 * 1024, accepted=("application/json",))
    answer = await update_settings(
        ctx.db,
        principal,
        body,
        secret_key=_secret(ctx.settings),
        outbound=ctx.settings.outbound,
        actor=key_actor(request, principal),
    )
    return ok(answer)


@router.get(
    "/api/v1/events/{event_id:path}/metrics",
    summary="Did the service's metrics change after this event?",
    description=(
        "For each metric of the event's service and environment: mean, median, p95 and "
        "point count before and after the event, the change, a two-sided Mann-Whitney U test "
        "and a verdict (increased, decreased, no significant change, not enough data)."
    ),
    response_model=MetricsAnswer,
    responses={**error_responses(404, saying={404: "No such event"}), **_ERRORS},
)
async def metrics_around_event(
    request: Request,
    principal: CurrentPrincipal,
    event_id: str,
    window: Annotated[
        str, Query(description="Each side's length: 1h, 2h, 4h, 6h, 12h or 24h")
    ] = "2h",
    metric: Annotated[
        list[str] | None,
        Query(description="Metric names (default: the five standard ones)", max_length=200),
    ] = None,
    source: Annotated[
        str | None,
        Query(description="The producer's source, when its id alone names several events"),
    ] = None,
) -> Response:
    ctx = context_of(request)
    return ok(
        await around.get_metrics_around_event(
            ctx.db,
            principal,
            event_id,
            source=source,
            window=window,
            metrics=metric,
            outbound=ctx.settings.outbound,
            secret_key=_secret(ctx.settings),
            default_timezone=ctx.settings.default_timezone,
        )
    )
