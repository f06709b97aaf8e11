"""The timeline's retention: events older than an organization's window are purged."""

from __future__ import annotations

from trailmap.storage import Database
from trailmap.storage import events as store

__all__ = ["purge_events_before"]


async def purge_events_before(db: Database, org_id: str, cutoff_us: int) -> int:
    """Delete the organization's events older than `cutoff_us`, in short transactions."""
    return await db.write_in_chunks(store.purge_before, org_id, cutoff_us)
