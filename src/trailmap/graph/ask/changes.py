"""get_graph_changes: the graph's own changes between two times, over every source: the nodes
and edges that appeared or went away, and those whose sources changed (declared, then seen in
traces too), found by comparing the graph as it was at `from` with the graph at `to`
(docs/declared-graph.md, "Questions")."""

from __future__ import annotations

import dataclasses
from typing import Any

from trailmap import clock
from trailmap.errors import ValidationFailed
from trailmap.graph.ask import evidence as ev
from trailmap.graph.ask.queries import GraphQuery, graph_context
from trailmap.graph.ask.window import window
from trailmap.graph.joined import is_declared, is_observed
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import Edge, Node
from trailmap.storage import Database

__all__ = ["get_graph_changes"]

_MAX_LIMIT = 100


async def get_graph_changes(
    db: Database,
    q: GraphQuery,
    *,
    from_: str = "-1d",
    to: str = "now",
    environment: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> dict[str, Any]:
    """What appeared, went away or changed sources between the two times: dependencies
    first, then other edges, then nodes; the newest first within each."""
    if not 1 <= limit <= _MAX_LIMIT:
        raise ValidationFailed.field("limit", f"must be between 1 and {_MAX_LIMIT}")
    if offset < 0:
        raise ValidationFailed.field("offset", "must be 0 or more")
    span = window(from_, to, default_timezone=q.default_timezone)
    before = (await graph_context(db, dataclasses.replace(q, at=from_))).snapshot
    after = (await graph_context(db, dataclasses.replace(q, at=None if span.now else to))).snapshot
    counts = dict.fromkeys(
        ("edges_appeared", "edges_went_away", "sources_changed", "nodes_appeared"), 0
    )
    counts["nodes_went_away"] = 0
    found = [
        *_edge_changes(before, after, environment, counts, q.stale_after_days),
        *_node_changes(before, after, environment, counts, q.stale_after_days),
    ]
    found.sort(key=lambda f: f[0])
    page = [line for _, line in found[offset : offset + limit]]
    data: dict[str, Any] = {
        "from": span.start.isoformat(timespec="seconds"),
        "to": span.end.isoformat(timespec="seconds"),
        **({"environment": environment} if environment else {}),
        "summary": counts,
        "changes": page,
    }
    more = len(found) - offset - len(page)
    if more > 0:
        data["more"] = more
        data["next"] = f"call again with offset={offset + len(page)}"
    if not found:
        data["note"] = "The graph did not change between these times."
    return data


_Found = list[tuple[tuple[Any, ...], dict[str, Any]]]


def _here(snapshot: GraphSnapshot, node_id: str, environment: str | None) -> bool:
    return environment in (None, "", snapshot.node(node_id).environment)


def _edge_changes(
    before: GraphSnapshot,
    after: GraphSnapshot,
    environment: str | None,
    counts: dict[str, int],
    stale_days: int,
) -> _Found:
    found: _Found = []
    old = {e.id: e for e in before.edges if _here(before, e.source_id, environment)}
    new = {e.id: e for e in after.edges if _here(after, e.source_id, environment)}
    for eid, edge in new.items():
        if eid not in old:
            counts["edges_appeared"] += 1
            found.append((_rank(edge, edge.first_seen_us), _edge(after, edge, "appeared")))
        elif set(old[eid].sources) != set(edge.sources):
            counts["sources_changed"] += 1
            line = _edge(after, edge, "sources_changed")
            line["before"] = ev.sources_text(old[eid].sources)
            found.append((_rank(edge, edge.last_seen_us), line))
    for eid, edge in old.items():
        if eid not in new:
            counts["edges_went_away"] += 1
            line = _edge(before, edge, "went_away")
            line["why"] = _why(edge.sources, stale_days)
            found.append((_rank(edge, edge.last_seen_us), line))
    return found


def _node_changes(
    before: GraphSnapshot,
    after: GraphSnapshot,
    environment: str | None,
    counts: dict[str, int],
    stale_days: int,
) -> _Found:
    found: _Found = []
    old = {n.id: n for n in before.nodes if _here(before, n.id, environment)}
    new = {n.id: n for n in after.nodes if _here(after, n.id, environment)}
    for nid, node in new.items():
        if nid not in old:
            counts["nodes_appeared"] += 1
            found.append(((2, -node.first_seen_us, node.name), _node(node, "appeared")))
    for nid, node in old.items():
        if nid not in new:
            counts["nodes_went_away"] += 1
            line = _node(node, "went_away")
            line["why"] = _why(node.sources, stale_days)
            found.append(((2, -node.last_seen_us, node.name), line))
    return found


def _rank(edge: Edge, time_us: int) -> tuple[int, int, str]:
    return (0 if edge.kind in ev.DEPENDENCY_KINDS else 1, -time_us, edge.id)


def _when(time_us: int) -> str:
    return clock.from_us(time_us).isoformat(timespec="seconds")


def _edge(snapshot: GraphSnapshot, edge: Edge, change: str) -> dict[str, Any]:
    line: dict[str, Any] = {
        "change": change,
        "from": snapshot.node(edge.source_id).name,
        "to": snapshot.node(edge.target_id).name,
        "kind": edge.kind,
        "sources": ev.sources_text(edge.sources),
    }
    if change == "appeared":
        line["first_seen"] = _when(edge.first_seen_us)
        line.update(ev.declared_place(edge.attributes))
    else:
        line["last_seen"] = _when(edge.last_seen_us)
    return line


def _node(node: Node, change: str) -> dict[str, Any]:
    line: dict[str, Any] = {
        "change": change,
        "node": node.name,
        "kind": node.kind,
        "environment": node.environment,
        "sources": ev.sources_text(node.sources),
    }
    if change == "appeared":
        line["first_seen"] = _when(node.first_seen_us)
    else:
        line["last_seen"] = _when(node.last_seen_us)
    return line


def _why(sources: tuple[str, ...], stale_days: int) -> str:
    """Why something went away: its sources stopped declaring it, traces stopped showing it
    (gone stale after `stale_days`), or both."""
    reasons = []
    if is_declared(sources):
        reasons.append("no longer declared")
    if is_observed(sources):
        reasons.append(f"not observed for {stale_days} days")
    return " and ".join(reasons) or "gone"
