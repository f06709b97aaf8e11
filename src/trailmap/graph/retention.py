"""The graph's retention: per-minute figures older than an organization's window are purged."""

from __future__ import annotations

from trailmap.storage import Database
from trailmap.storage import declared as declared_store
from trailmap.storage import graph as store

__all__ = ["purge_figures_before"]


async def purge_figures_before(db: Database, org_id: str, cutoff_us: int) -> int:
    """Delete the organization's per-minute figures (and stopped servicegraph cursors) older
    than `cutoff_us`, in short transactions, and declarations removed before then. Nodes and
    edges stay: they say what exists."""
    purged = await db.write_in_chunks(store.purge_before, org_id, cutoff_us)
    return purged + await db.write(declared_store.purge_removed_before, org_id, cutoff_us)
