"""Retention: events, metric points and per-minute span figures older than an
organization's window are never shown and are purged."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from trailmap import clock
from trailmap.accounts.organizations import retention_days_for
from trailmap.accounts.plans import get_plan
from trailmap.storage import Database
from trailmap.storage import events as store
from trailmap.storage import metrics as metric_store

__all__ = ["PurgeReport", "purge_expired_events"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeReport:
    organizations: int
    deleted: int  # events
    deleted_points: int = 0  # metric points and per-minute span figures


async def purge_expired_events(db: Database, *, now: datetime | None = None) -> PurgeReport:
    """Delete, organization by organization and in small chunks, what is past its window.

    Small chunks keep each write transaction short, so ingestion goes on while a purge runs.
    """
    now = now or clock.now()
    orgs = await db.read(store.org_retention_rows)
    deleted = deleted_points = 0
    for org in orgs:
        days = retention_days_for(get_plan(org["plan"]), org["retention_days"])
        cutoff_us = clock.to_us(now - timedelta(days=days))
        while True:
            removed = await db.write(store.purge_before, org["id"], cutoff_us)
            deleted += removed
            if removed == 0:
                break
        while True:
            removed = await db.write(metric_store.purge_before, org["id"], cutoff_us)
            deleted_points += removed
            if removed == 0:
                break
    if deleted_points:
        log.info("retention purge deleted %d metric points and span minutes", deleted_points)
    if deleted:
        log.info("retention purge deleted %d events across %d organizations", deleted, len(orgs))
    return PurgeReport(organizations=len(orgs), deleted=deleted, deleted_points=deleted_points)
