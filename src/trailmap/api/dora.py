"""`GET /api/v1/dora`: DORA's four key metrics over a range, by week (docs/dora.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from trailmap.http.auth import CurrentPrincipal
from trailmap.http.context import context_of
from trailmap.http.openapi import error_responses
from trailmap.http.responses import ok
from trailmap.timeline.dora import DEFAULT_EVIDENCE, MAX_EVIDENCE, get_dora_metrics

__all__ = ["router"]

router = APIRouter(tags=["dora"])


class DoraAnswer(BaseModel):
    success: bool
    data: dict[str, Any]


@router.get(
    "/api/v1/dora",
    summary="DORA metrics: deployment frequency, lead time, change failure rate, restore time",
    description=(
        "Over the range (at most 400 days), for the organization or one service and one "
        "environment: each figure with the events it was computed from (capped at "
        "`evidence_limit`, with their total), its performance level (elite, high, medium, "
        "low) in the bands of the edition named in `edition`, and the same figures by week "
        "(weeks start on Monday in `timezone`). Any key may ask (READ_ONLY included)."
    ),
    response_model=DoraAnswer,
    responses=error_responses(400, 401, 403, 503),
)
async def dora_metrics(
    request: Request,
    principal: CurrentPrincipal,
    from_: Annotated[
        str, Query(alias="from", description="-90d, 2026-10-01, ISO 8601 ...", max_length=100)
    ] = "-90d",
    to: Annotated[str, Query(description="now, ISO 8601 ...", max_length=100)] = "now",
    service: Annotated[str | None, Query(max_length=200)] = None,
    environment: Annotated[str | None, Query(max_length=200)] = None,
    timezone: Annotated[
        str | None, Query(description="IANA name: where weeks start", max_length=100)
    ] = None,
    evidence_limit: Annotated[
        int, Query(ge=0, le=MAX_EVIDENCE, description="Event ids listed per figure, at most")
    ] = DEFAULT_EVIDENCE,
) -> Response:
    ctx = context_of(request)
    return ok(
        await get_dora_metrics(
            ctx.db,
            principal,
            from_=from_,
            to=to,
            service=service,
            environment=environment,
            timezone=timezone,
            default_timezone=ctx.settings.default_timezone,
            evidence_limit=evidence_limit,
        )
    )
