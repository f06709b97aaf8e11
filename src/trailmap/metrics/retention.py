"""Metric retention: points older than an organization's window are purged."""

from __future__ import annotations

from trailmap.storage import Database
from trailmap.storage import metrics as store

__all__ = ["purge_points_before"]


async def purge_points_before(db: Database, org_id: str, cutoff_us: int) -> int:
    """Delete the organization's metric points older than `cutoff_us`, in short transactions."""
    return await db.write_in_chunks(store.purge_before, org_id, cutoff_us)
