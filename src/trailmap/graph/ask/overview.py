"""What the graph knows, in a line: how many services, nodes and edges, and how fresh it is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from trailmap import clock
from trailmap.accounts.principal import Principal
from trailmap.graph.ask.snapshots import snapshot_for
from trailmap.storage import Database

__all__ = ["GraphOverview", "graph_overview"]

_DAY_US = 86_400_000_000


@dataclass(frozen=True, slots=True)
class GraphOverview:
    services: int
    nodes: int
    edges: int
    # The newest minute any node or edge was seen in a trace; None for an empty graph.
    last_seen: datetime | None


async def graph_overview(
    db: Database, principal: Principal, *, stale_after_days: int = 7
) -> GraphOverview:
    """The organization's graph now, counted (the snapshot the graph questions use)."""
    snapshot = await snapshot_for(
        db, principal.org_id, at_us=None, stale_after_us=stale_after_days * _DAY_US
    )
    seen = [n.last_seen_us for n in snapshot.nodes] + [e.last_seen_us for e in snapshot.edges]
    return GraphOverview(
        services=sum(1 for n in snapshot.nodes if n.kind == "service"),
        nodes=len(snapshot.nodes),
        edges=len(snapshot.edges),
        last_seen=clock.from_us(max(seen)) if seen else None,
    )
