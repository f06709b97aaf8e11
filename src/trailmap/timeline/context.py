"""What an assistant should know of an organization before it asks: plan, window, usage, facets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from trailmap import clock
from trailmap.accounts import Principal, quotas
from trailmap.errors import ValidationFailed
from trailmap.storage import Database
from trailmap.timeline.queries import list_facet
from trailmap.timeline.times import TimeExpressionError, format_time, resolve_timezone

__all__ = ["OrganizationContext", "organization_context"]

_FACETS = 20  # values listed per facet


@dataclass(frozen=True, slots=True)
class OrganizationContext:
    organization: str
    plan: str
    retention_days: int
    oldest_queryable: str
    server_time: str
    timezone: str
    quotas: dict[str, int | None]
    usage_this_month: dict[str, int]
    event_types: list[dict[str, Any]]
    subjects: list[dict[str, Any]]
    sources: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "organization": self.organization,
            "plan": self.plan,
            "retention_days": self.retention_days,
            "oldest_queryable": self.oldest_queryable,
            "server_time": self.server_time,
            "timezone": self.timezone,
            "quotas": self.quotas,
            "usage_this_month": self.usage_this_month,
            "event_types": self.event_types,
            "subjects": self.subjects,
            "sources": self.sources,
        }


async def organization_context(
    db: Database,
    principal: Principal,
    *,
    timezone: str | None = None,
    default_timezone: str = "UTC",
    now: datetime | None = None,
) -> OrganizationContext:
    """The organization's plan, retention window, quotas and this month's usage, the server
    time, and which event types, environments (subjects) and sources it has."""
    try:
        tz = resolve_timezone(timezone, default=default_timezone)
    except TimeExpressionError as error:
        raise ValidationFailed.field("timezone", str(error)) from None
    now = now or clock.now()
    facets = {
        facet: await list_facet(db, principal, facet, default_timezone=tz.key, limit=_FACETS)
        for facet in ("type", "subject", "source")
    }
    used = await quotas.usage_this_month(db, principal.org_id, now)
    plan = principal.plan
    return OrganizationContext(
        organization=principal.org_slug,
        plan=plan.name,
        retention_days=principal.retention_days,
        oldest_queryable=format_time(now - timedelta(days=principal.retention_days), tz),
        server_time=format_time(now, tz),
        timezone=tz.key,
        quotas={
            "events_per_month": plan.events_per_month,
            "events_per_day": plan.events_per_day,
            "mcp_calls_per_month": plan.mcp_calls_per_month,
        },
        usage_this_month={"events": used["events"], "mcp_calls": used["mcp_calls"]},
        event_types=facets["type"],
        subjects=facets["subject"],
        sources=facets["source"],
    )
