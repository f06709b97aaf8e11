"""The graph's retention: per-minute figures older than an organization's window are purged."""

from __future__ import annotations

from trailmap.storage import Database
from trailmap.storage import graph as store

__all__ = ["purge_figures_before"]


async def purge_figures_before(db: Database, org_id: str, cutoff_us: int) -> int:
    """Delete the organization's per-minute figures (and stopped servicegraph cursors) older
    than `cutoff_us`, in short transactions. Nodes and edges stay: they say what exists."""
    return await db.write_in_chunks(store.purge_before, org_id, cutoff_us)
