"""A metric export stored whole: its points, and the servicegraph samples the graph learns."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from trailmap import clock
from trailmap.accounts.principal import Principal
from trailmap.errors import ErrorDetail
from trailmap.graph.learn.record import accepted_window
from trailmap.graph.learn.servicegraph import EdgeSample, ServiceGraphResult, record_samples
from trailmap.metrics.points import Point, counted, sort_points, write_points
from trailmap.storage import Connection, Database

__all__ = ["Refusal", "record_metric_export"]

# What was refused of an export: the index of the item (point or sample), its metric, why.
Refusal = tuple[int, str, str]


def record_metric_export(
    db: Database,
    principal: Principal,
    *,
    points: Sequence[Point],
    edges: Sequence[EdgeSample],
    now: datetime | None = None,
) -> tuple[list[Refusal], list[Refusal]]:
    """Store an export's points (metrics) and servicegraph samples (the graph) in one
    transaction; returns what each refused (outside the retention window, too far ahead),
    points then samples.

    It blocks: the OTLP receiver runs it on a worker thread, with the rest of an export's
    work, since its passes over every point would stall the event loop."""
    principal.require_write()
    now = now or clock.now()
    stored, valid, indexes = sort_points(principal, list(points), now=now)
    now_us, oldest_us, newest_us = accepted_window(principal, now)
    org_id = principal.org_id
    refused: list[ErrorDetail] = []

    def write(conn: Connection) -> ServiceGraphResult:
        refused.clear()  # a transaction tried again starts afresh
        if valid:
            refused.extend(write_points(conn, principal, valid, indexes, now))
        if not edges:
            return ServiceGraphResult()
        return record_samples(
            conn, org_id, list(edges), now_us, oldest_us=oldest_us, newest_us=newest_us
        )

    graph = db.write_sync(write) if valid or edges else ServiceGraphResult()
    counted(stored, valid, refused)
    refused_points = [
        (r["index"], points[r["index"]].name, str(r["message"])) for r in stored.rejected
    ]
    refused_edges = [(index, edges[index].metric, why) for index, why in graph.rejected]
    return refused_points, refused_edges
