"""`/api/v1/events`: push change events, query them, fetch one, summarize."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import QueryParams
from starlette.responses import Response

from trailmap.api.schemas import (
    EventBody,
    EventPageBody,
    IngestBody,
    SummaryBody,
)
from trailmap.errors import ValidationFailed
from trailmap.http.auth import CurrentPrincipal
from trailmap.http.body import read_json_body
from trailmap.http.context import context_of
from trailmap.http.errors import error_response
from trailmap.http.openapi import error_responses
from trailmap.http.responses import ok
from trailmap.timeline.ingest import ingest_events, require_some_items
from trailmap.timeline.queries import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    EventQuery,
    TimeRange,
    get_event,
    query_events,
    summarize_events,
)
from trailmap.timeline.times import format_time

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/events", tags=["events"])

_ERRORS = error_responses(400, 401, 403, 429, 503)

_BATCH_DOC = {
    "requestBody": {
        "required": True,
        "description": "One CloudEvent, or an array of up to 1,000.",
        "content": {
            media: {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/CloudEventIn"},
                        {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/CloudEventIn"},
                            "maxItems": 1000,
                        },
                    ]
                }
            }
            for media in (
                "application/json",
                "application/cloudevents+json",
                "application/cloudevents-batch+json",
            )
        },
    }
}


@router.post(
    "",
    summary="Send change events",
    description=(
        "Send one CloudEvent or a batch. Results are per item: accepted, duplicates (the same "
        "source and id was stored before) and rejected with the item's index and the reason. "
        "Valid events are stored even when others in the batch are not."
    ),
    status_code=200,
    response_model=IngestBody,
    responses={
        201: {"model": IngestBody, "description": "Every new event was stored"},
        **error_responses(413, 415, saying={415: "Not a JSON content type"}),
        **_ERRORS,
    },
    openapi_extra=_BATCH_DOC,
)
async def post_events(request: Request, principal: CurrentPrincipal) -> Response:
    ctx = context_of(request)
    principal.require_write()
    body = await read_json_body(request, max_bytes=ctx.settings.max_body_bytes)
    is_batch = isinstance(body, list)
    items: list[object] = body if isinstance(body, list) else [body]
    if is_batch:
        require_some_items(items, max_batch=ctx.settings.max_batch_events)
    result = await ingest_events(
        ctx.db, principal, items, max_event_bytes=ctx.settings.max_event_bytes
    )
    if not result.accepted and not result.duplicates:
        first = result.rejected[0]
        message = (
            first["message"]
            if not is_batch
            else (f"None of the {len(items)} events was stored; each problem is listed in details.")
        )
        return error_response(400, "VALIDATION_ERROR", message, result.rejected)
    status = 201 if result.accepted and not result.rejected and not result.duplicates else 200
    return ok(result.as_json(), status_code=status)


def _split(values: list[str]) -> list[str]:
    """`type=deployment,rollback` and `type=deployment&type=rollback` mean the same."""
    return [part for value in values for part in value.split(",") if part.strip()]


def render_range(time_range: TimeRange, note: str | None) -> dict[str, Any]:
    return {
        "from": format_time(time_range.effective_start, time_range.tz),
        "to": format_time(time_range.end, time_range.tz),
        "timezone": time_range.tz.key,
        "oldest_queryable": format_time(time_range.retention_start, time_range.tz),
        "note": note,
    }


def _parameter(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_TEXT: dict[str, Any] = {"type": "string"}
_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
# This handler reads its parameters itself (it is the hottest read path, and FastAPI's
# per-parameter machinery cost more than the query); they are documented here instead.
_QUERY_PARAMETERS = [
    _parameter(
        "from",
        "-30m, -2h, -7d, now, today, yesterday, ISO 8601 or RFC 2822 (default -24h)",
        {**_TEXT, "default": "-24h"},
    ),
    _parameter("to", "Same forms as from (default now)", {**_TEXT, "default": "now"}),
    _parameter("type", "Event type(s), any case; repeat or comma-separate", _LIST),
    _parameter("source", "Source(s), any case; repeat the parameter for several", _LIST),
    _parameter("subject", "Environment(s), any case; repeat or comma-separate", _LIST),
    _parameter("severity", "LOW, MINOR, MAJOR or CRITICAL; repeat or comma-separate", _LIST),
    _parameter("service", "Service(s), any case; repeat or comma-separate", _LIST),
    _parameter("search", "Words that must all appear", {**_TEXT, "maxLength": 200}),
    _parameter(
        "limit",
        f"Events per page, 1 to {MAX_LIMIT}",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    ),
    _parameter("cursor", "next_cursor of the previous page", {**_TEXT, "maxLength": 200}),
    _parameter("timezone", "IANA time zone, e.g. Europe/Paris", _TEXT),
]


def _event_query(params: QueryParams) -> EventQuery:
    limit_text = params.get("limit")
    limit = DEFAULT_LIMIT
    if limit_text is not None:
        try:
            limit = int(limit_text)
        except ValueError:
            raise ValidationFailed.field(
                "limit", f"limit must be a whole number from 1 to {MAX_LIMIT}"
            ) from None
    return EventQuery(
        from_=params.get("from") or "-24h",
        to=params.get("to") or "now",
        types=_split(params.getlist("type")),
        sources=params.getlist("source"),
        subjects=_split(params.getlist("subject")),
        severities=_split(params.getlist("severity")),
        services=_split(params.getlist("service")),
        search=params.get("search"),
        limit=limit,
        cursor=params.get("cursor") or None,
        timezone=params.get("timezone") or None,
    )


@router.get(
    "",
    summary="Query events, newest first",
    description=(
        "One entry per change: a deployment CI reported and the traces revealed is the CI "
        "report, naming the other source in `also_reported_by`. Type, source, subject and "
        "service match whatever their case. An empty answer to a filtered query carries a "
        "`hint`: each asked value that matches nothing, with the closest values that exist, "
        "and what the organization has in the range, by type."
    ),
    response_model=EventPageBody,
    responses=_ERRORS,
    openapi_extra={"parameters": _QUERY_PARAMETERS},
)
async def list_events(request: Request, principal: CurrentPrincipal) -> Response:
    ctx = context_of(request)
    query = _event_query(request.query_params)
    page = await query_events(
        ctx.db, principal, query, default_timezone=ctx.settings.default_timezone, full=True
    )
    return ok(
        {
            "events": page.events,
            "next_cursor": page.next_cursor,
            "range": render_range(page.range, page.note),
            "hint": page.hint,
        }
    )


@router.get(
    "/summary",
    summary="Counts by type, subject, source and severity, and the latest events",
    response_model=SummaryBody,
    responses=_ERRORS,
)
async def events_summary(
    request: Request,
    principal: CurrentPrincipal,
    from_: Annotated[str, Query(alias="from")] = "-24h",
    to: str = "now",
    timezone: str | None = None,
) -> Response:
    ctx = context_of(request)
    summary = await summarize_events(
        ctx.db,
        principal,
        from_=from_,
        to=to,
        timezone=timezone,
        default_timezone=ctx.settings.default_timezone,
    )
    return ok(
        {
            **summary.counts_json(),
            "range": render_range(summary.range, summary.note),
        }
    )


@router.get(
    "/{event_id}",
    summary="One event, with its data",
    response_model=EventBody,
    responses={
        **error_responses(404, saying={404: "No such event in this organization"}),
        **_ERRORS,
    },
)
async def get_one_event(
    request: Request,
    principal: CurrentPrincipal,
    event_id: str,
    timezone: str | None = None,
) -> Response:
    ctx = context_of(request)
    event = await get_event(
        ctx.db,
        principal,
        event_id,
        timezone=timezone,
        default_timezone=ctx.settings.default_timezone,
    )
    return ok(event)
