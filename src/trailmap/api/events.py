"""`/api/v1/events`: push change events, query them, fetch one, summarize."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from trailmap.api.auth import CurrentPrincipal
from trailmap.api.body import read_json_body
from trailmap.api.context import context_of
from trailmap.api.errors import error_response
from trailmap.api.responses import ok
from trailmap.api.schemas import (
    CloudEventIn,
    ErrorBody,
    EventBody,
    EventPageBody,
    IngestBody,
    SummaryBody,
)
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

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "Invalid input: each problem is listed in details, with its field"),
        (401, "Missing, malformed, revoked or expired API key"),
        (403, "The key's scope does not allow this"),
        (429, "Over the plan's quota; retry after Retry-After seconds"),
        (503, "The database is not answering; retry after Retry-After seconds"),
    )
}

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
        413: {"model": ErrorBody, "description": "The body is over the size limit"},
        415: {"model": ErrorBody, "description": "Not a JSON content type"},
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


def render_range(time_range: TimeRange, empty: bool) -> dict[str, Any]:
    note = None
    if time_range.before_retention:
        note = (
            "The whole range is older than this organization's retention window; the oldest "
            f"time that can be asked is {format_time(time_range.retention_start, time_range.tz)}."
        )
    elif time_range.clipped:
        note = (
            "The range starts before the retention window; it was shortened to start at "
            f"{format_time(time_range.retention_start, time_range.tz)}."
        )
    elif empty:
        note = "No events match in this range."
    return {
        "from": format_time(time_range.effective_start, time_range.tz),
        "to": format_time(time_range.end, time_range.tz),
        "timezone": time_range.tz.key,
        "oldest_queryable": format_time(time_range.retention_start, time_range.tz),
        "note": note,
    }


TextList = Annotated[list[str], Query()]


@router.get(
    "",
    summary="Query events, newest first",
    response_model=EventPageBody,
    responses=_ERRORS,
)
async def list_events(
    request: Request,
    principal: CurrentPrincipal,
    from_: Annotated[
        str,
        Query(alias="from", description="-30m, -2h, -7d, now, today, yesterday, or ISO 8601"),
    ] = "-24h",
    to: Annotated[str, Query(description="Same forms as from")] = "now",
    type_: Annotated[
        list[str], Query(alias="type", description="Event type(s); repeat or comma-separate")
    ] = [],  # noqa: B006 - FastAPI copies defaults
    source: Annotated[list[str], Query()] = [],  # noqa: B006
    subject: Annotated[list[str], Query(description="Environment(s)")] = [],  # noqa: B006
    severity: Annotated[list[str], Query(description="LOW, MINOR, MAJOR, CRITICAL")] = [],  # noqa: B006
    service: Annotated[list[str], Query()] = [],  # noqa: B006
    search: Annotated[
        str | None, Query(max_length=200, description="Words that must all appear")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
    timezone: Annotated[str | None, Query(description="IANA time zone, e.g. Europe/Paris")] = None,
) -> Response:
    ctx = context_of(request)
    query = EventQuery(
        from_=from_,
        to=to,
        types=_split(type_),
        sources=source,
        subjects=_split(subject),
        severities=_split(severity),
        services=_split(service),
        search=search,
        limit=limit,
        cursor=cursor,
        timezone=timezone,
    )
    page = await query_events(
        ctx.db, principal, query, default_timezone=ctx.settings.default_timezone, full=True
    )
    return ok(
        {
            "events": page.events,
            "next_cursor": page.next_cursor,
            "range": render_range(page.range, empty=not page.events),
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
            "total": summary.total,
            "by_type": summary.by_type,
            "by_subject": summary.by_subject,
            "by_source": summary.by_source,
            "by_severity": summary.by_severity,
            "latest": summary.latest,
            "range": render_range(summary.range, empty=summary.total == 0),
        }
    )


@router.get(
    "/{event_id}",
    summary="One event, with its data",
    response_model=EventBody,
    responses={
        404: {"model": ErrorBody, "description": "No such event in this organization"},
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


# Referenced from the request body's documentation above.
__schema_models__ = (CloudEventIn,)
