"""Each app node's in-memory graphs: one per organization, rebuilt when its version moves
(docs/internals.md)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable

import anyio.to_thread

from trailmap import clock
from trailmap.graph.joined import Declaration, join
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import Edge, Node
from trailmap.storage import Connection, Database
from trailmap.storage import declared as declared_store
from trailmap.storage import graph as store

__all__ = ["clear_snapshots", "snapshot_for"]

_HOUR_US = 3_600_000_000
_MINUTE_US = 60_000_000
_TRAFFIC_TTL_S = 60.0
_KEEP = 64  # snapshots kept per process, across organizations and times

_lock = threading.Lock()
_cache: OrderedDict[Hashable, tuple[float, GraphSnapshot]] = OrderedDict()


def clear_snapshots() -> None:
    with _lock:
        _cache.clear()


async def snapshot_for(
    db: Database, org_id: str, *, at_us: int | None, stale_after_us: int
) -> GraphSnapshot:
    """The organization's graph now (at_us None) or as it was at `at_us`."""
    version = await db.read(store.graph_version, org_id)
    if at_us is None:
        key: Hashable = (db.url, org_id, version, "now")
    else:
        key = (db.url, org_id, version, at_us - at_us % _MINUTE_US)
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
    if cached is not None:
        built, snapshot = cached
        if at_us is not None or time.monotonic() - built < _TRAFFIC_TTL_S:
            return snapshot
        traffic = await db.read(_traffic, org_id, clock.now_us())
        fresh = snapshot.with_traffic(traffic)
    else:
        moment = clock.now_us() if at_us is None else at_us
        nodes, edges, traffic = await db.read(_load, org_id, moment, stale_after_us)
        fresh = await anyio.to_thread.run_sync(
            lambda: GraphSnapshot(nodes, edges, traffic, version=version)
        )
    with _lock:
        _cache[key] = (time.monotonic(), fresh)
        _cache.move_to_end(key)
        while len(_cache) > _KEEP:
            _cache.popitem(last=False)
    return fresh


def _traffic(conn: Connection, org_id: str, moment_us: int) -> dict[str, float]:
    calls = store.traffic(conn, org_id, moment_us - _HOUR_US, moment_us)
    return {subject: count / 60 for subject, count in calls.items()}


def _load(
    conn: Connection, org_id: str, moment_us: int, stale_after_us: int
) -> tuple[list[Node], list[Edge], dict[str, float]]:
    """Nodes and edges that existed at the moment: observed by then and not gone stale, or
    declared then (graph/joined.py joins the two)."""
    oldest = moment_us - stale_after_us
    observed_nodes = [
        Node(
            id=row.id,
            kind=row.kind,
            name=row.name,
            environment=row.environment,
            first_seen_us=row.first_seen_us,
            last_seen_us=row.last_seen_us,
            attributes=row.attributes or {},
            sources=tuple(row.sources or ()),
        )
        for row in store.node_rows(conn, org_id)
        if row.first_seen_us <= moment_us
    ]
    fresh_nodes = {n.id for n in observed_nodes if n.last_seen_us >= oldest}
    observed_edges = [
        Edge(
            id=row.id,
            source_id=row.source_id,
            target_id=row.target_id,
            kind=row.kind,
            first_seen_us=row.first_seen_us,
            last_seen_us=row.last_seen_us,
            attributes=row.attributes or {},
            sources=tuple(row.sources or ()),
        )
        for row in store.edge_rows(conn, org_id)
        if row.first_seen_us <= moment_us
    ]
    fresh_edges = {
        e.id
        for e in observed_edges
        if e.last_seen_us >= oldest and e.source_id in fresh_nodes and e.target_id in fresh_nodes
    }
    declarations = [
        Declaration(
            source_key=row.source_key,
            subject=row.subject,
            body=row.body,
            evidence=row.evidence or [],
            first_seen_us=row.first_seen_us,
            last_seen_us=row.last_seen_us,
        )
        for row in declared_store.live_declarations(conn, org_id, moment_us)
    ]
    if not declarations:
        nodes = [n for n in observed_nodes if n.id in fresh_nodes]
        edges = [e for e in observed_edges if e.id in fresh_edges]
    else:
        nodes, edges = join(
            org_id, observed_nodes, observed_edges, fresh_nodes, fresh_edges, declarations
        )
    return nodes, edges, _traffic(conn, org_id, moment_us)
