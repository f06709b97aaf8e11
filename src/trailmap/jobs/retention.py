"""The retention purge: each domain deletes what is past each organization's window, and
OAuth, invitations, reset links and rate-limit counters what is past its time."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio

from trailmap import clock
from trailmap.accounts.audit import purge_audit_before
from trailmap.accounts.organizations import list_orgs
from trailmap.accounts.rate_limits import purge_rate_limits
from trailmap.accounts.team import purge_ended_links
from trailmap.errors import TrailmapError
from trailmap.graph.retention import purge_figures_before
from trailmap.integrations.deliveries import purge_deliveries_before
from trailmap.integrations.notifications import purge_notifications_before
from trailmap.metrics.retention import purge_points_before
from trailmap.oauth.retention import OAuthPurge, purge_oauth
from trailmap.storage import Database
from trailmap.timeline.retention import purge_events_before

__all__ = ["PurgeReport", "purge_expired", "run_retention_purges"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    organizations: int
    deleted: int  # events
    deleted_points: int = 0  # metric points and per-minute span figures
    oauth: OAuthPurge = field(default_factory=OAuthPurge)  # OAuth's rows past their time
    audit: int = 0  # audit log entries past their organization's window
    deliveries: int = 0  # integrations' delivery records past their organization's window
    upkeep: int = 0  # ended invitations and reset links, old rate-limit and throttle rows
    notifications: int = 0  # notification deliveries past their organization's window


async def purge_expired(db: Database, *, now: datetime | None = None) -> PurgeReport:
    """Delete, organization by organization and in small chunks (so ingestion goes on while
    a purge runs), the events, metric points, graph figures, audit entries, integration
    deliveries and notification deliveries past its window; then OAuth's requests, codes,
    tokens and clients past their time."""
    now = now or clock.now()
    oauth = await purge_oauth(db, clock.to_us(now))
    if oauth.total:
        log.info(
            "retention purge deleted %d expired OAuth requests, %d codes, %d tokens and "
            "%d unused clients",
            oauth.requests,
            oauth.codes,
            oauth.tokens,
            oauth.clients,
        )
    orgs = await list_orgs(db)
    deleted = deleted_points = audit = deliveries = notifications = 0
    for org in orgs:
        cutoff_us = clock.to_us(now - timedelta(days=org.retention_days))
        deleted += await purge_events_before(db, org.id, cutoff_us)
        deleted_points += await purge_points_before(db, org.id, cutoff_us)
        deleted_points += await purge_figures_before(db, org.id, cutoff_us)
        audit += await purge_audit_before(db, org.id, cutoff_us)
        deliveries += await purge_deliveries_before(db, org.id, cutoff_us)
        notifications += await purge_notifications_before(db, org.id, cutoff_us)
    day_ago_us = clock.to_us(now - timedelta(days=1))
    upkeep = await purge_ended_links(db, day_ago_us) + await purge_rate_limits(db, day_ago_us)
    if deleted_points:
        log.info("retention purge deleted %d metric points and span minutes", deleted_points)
    if deleted:
        log.info("retention purge deleted %d events across %d organizations", deleted, len(orgs))
    return PurgeReport(
        organizations=len(orgs),
        deleted=deleted,
        deleted_points=deleted_points,
        oauth=oauth,
        audit=audit,
        deliveries=deliveries,
        upkeep=upkeep,
        notifications=notifications,
    )


async def run_retention_purges(db: Database, *, interval_seconds: float) -> None:
    """Purge now and then every `interval_seconds`; a failure is logged and retried next
    time. Every node may run this: the deletes are idempotent."""
    while True:
        try:
            await purge_expired(db)
        except TrailmapError as error:
            log.warning("retention purge skipped: %s", error.message)
        except Exception:
            log.exception("retention purge failed; trying again at the next interval")
        await anyio.sleep(interval_seconds)
