"""A metric export stored whole: its points, and the servicegraph samples the graph learns."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from trailmap.accounts.principal import Principal
from trailmap.graph.learn.servicegraph import EdgeSample, record_edge_samples
from trailmap.metrics.points import Point, record_points
from trailmap.storage import Database

__all__ = ["Refusal", "record_metric_export"]

# What was refused of an export: the index of the item (point or sample), its metric, why.
Refusal = tuple[int, str, str]


async def record_metric_export(
    db: Database,
    principal: Principal,
    *,
    points: Sequence[Point],
    edges: Sequence[EdgeSample],
    now: datetime | None = None,
) -> tuple[list[Refusal], list[Refusal]]:
    """Store an export's points (metrics) and servicegraph samples (the graph); returns
    what each refused (outside the retention window, too far ahead), points then samples."""
    stored = await record_points(db, principal, list(points), now=now)
    refused_points = [
        (r["index"], points[r["index"]].name, str(r["message"])) for r in stored.rejected
    ]
    graph = await record_edge_samples(db, principal, list(edges), now=now)
    refused_edges = [(index, edges[index].metric, why) for index, why in graph.rejected]
    return refused_points, refused_edges
