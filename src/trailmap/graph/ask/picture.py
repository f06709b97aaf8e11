"""The graph as a picture shows it: a node's neighbourhood to a chosen depth, or, with no
node chosen, the busiest part of the graph. Never the whole of a large graph (a hairball of
2,000 nodes tells a person nothing): at most `MAX_DRAWN` nodes, nearest or busiest first."""

from __future__ import annotations

from typing import Any

from trailmap.errors import ValidationFailed
from trailmap.graph.ask import algorithms as algo
from trailmap.graph.ask.queries import GraphQuery, edge_figures, graph_context, resolve_node
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import DEPENDENCY_KINDS, Edge, Node
from trailmap.storage import Database

__all__ = ["MAX_DEPTH", "MAX_DRAWN", "OVERVIEW", "graph_picture"]

MAX_DEPTH = 4
MAX_DRAWN = 150  # nodes in one picture
OVERVIEW = 30  # nodes in the picture of a graph when no node is chosen
_DIRECTIONS = ("both", "downstream", "upstream")


def _node_line(node: Node, depth: int | None) -> dict[str, Any]:
    line: dict[str, Any] = {
        "id": node.id,
        "name": node.name,
        "kind": node.kind,
        "environment": node.environment,
    }
    if depth is not None:
        line["depth"] = depth  # negative upstream of the focus, positive downstream
    return line


async def graph_picture(
    db: Database,
    q: GraphQuery,
    *,
    node: str | None = None,
    depth: int = 1,
    direction: str = "both",
    environment: str | None = None,
    limit: int = OVERVIEW,
) -> dict[str, Any]:
    """The nodes and edges to draw, with each edge's last-hour figures. Around `node`: what
    it depends on (depth > 0) and what depends on it (depth < 0), up to `depth` hops. Without
    a node: the `limit` nodes with the most traffic and the edges between them, or the whole
    graph when it is no larger than that."""
    if not 1 <= depth <= MAX_DEPTH:
        raise ValidationFailed.field("depth", f"must be between 1 and {MAX_DEPTH}")
    if direction not in _DIRECTIONS:
        raise ValidationFailed.field("direction", f"must be one of {', '.join(_DIRECTIONS)}")
    if not 1 <= limit <= MAX_DRAWN:
        raise ValidationFailed.field("limit", f"must be between 1 and {MAX_DRAWN}")
    ctx = await graph_context(db, q)
    snapshot = ctx.snapshot
    environment = environment or None
    focus: Node | None = None
    if node and node.strip():
        focus = resolve_node(snapshot, node, environment, "node")
        depths, edges, reached = _neighbourhood(snapshot, focus, depth, direction)
    else:
        depths, edges, reached = _busiest(snapshot, environment, limit)
    stats = await edge_figures(db, q.principal.org_id, edges, ctx.moment)
    placed = (
        {n.id for n in snapshot.nodes if n.environment == environment} if environment else set()
    )
    data: dict[str, Any] = {
        "focus": None if focus is None else _node_line(focus, 0),
        "depth": depth,
        "direction": direction,
        "nodes": [
            _node_line(snapshot.node(i), depths[i] if focus is not None else None) for i in depths
        ],
        "edges": [_edge_line(e, stats.get(e.id)) for e in edges],
        "environment": environment,
        "environments": sorted({n.environment for n in snapshot.nodes}),
        # The whole graph, or the chosen environment's part of it.
        "total_nodes": len(snapshot.nodes) if environment is None else len(placed),
        "total_edges": len(snapshot.edges)
        if environment is None
        else sum(1 for e in snapshot.edges if e.source_id in placed and e.target_id in placed),
        "truncated": reached > len(depths),
        "more": max(0, reached - len(depths)),
    }
    if ctx.as_of:
        data["as_of"] = ctx.as_of
    if q.format == "mermaid":
        data["mermaid"] = algo.mermaid(
            snapshot, list(depths), [e.id for e in edges], highlight=focus.id if focus else None
        )
    return data


def _edge_line(edge: Edge, figures: dict[str, Any] | None) -> dict[str, Any]:
    line: dict[str, Any] = {
        "id": edge.id,
        "from_id": edge.source_id,
        "to_id": edge.target_id,
        "kind": edge.kind,
    }
    if figures:
        line.update(
            calls=figures["calls"],
            calls_per_minute=figures["calls_per_minute"],
            error_rate=figures["error_rate"],
            p95_ms=figures["p95_ms"],
        )
    return line


def _neighbourhood(
    snapshot: GraphSnapshot, focus: Node, depth: int, direction: str
) -> tuple[dict[str, int], list[Edge], int]:
    """Downstream and upstream walks apart, so that each node has a side: a node both above
    and below the focus (a cycle) is drawn downstream."""
    depths: dict[str, int] = {focus.id: 0}
    seen: set[str] = {focus.id}
    walked: dict[str, Edge] = {}
    sides: tuple[tuple[algo.Direction, int], ...] = (("downstream", 1), ("upstream", -1))
    for side, sign in sides:
        if direction not in (side, "both"):
            continue
        # Dependencies only: through a namespace or a team every workload it holds would
        # be one hop away (graph/ask/evidence.py).
        walk = algo.traverse(
            snapshot, focus.id, direction=side, max_depth=depth, edge_kinds=DEPENDENCY_KINDS
        )
        for reached in walk.nodes:
            seen.add(reached.node.id)
            if reached.node.id not in depths and len(depths) < MAX_DRAWN:
                depths[reached.node.id] = sign * reached.depth
        walked.update((e.id, e) for e in walk.edges)
    edges = [e for e in walked.values() if e.source_id in depths and e.target_id in depths]
    return depths, edges, len(seen)


def _busiest(
    snapshot: GraphSnapshot, environment: str | None, limit: int
) -> tuple[dict[str, int], list[Edge], int]:
    every = [n for n in snapshot.nodes if environment in (None, n.environment)]
    if len(every) <= limit:
        chosen = [n.id for n in every]
    else:
        top = algo.rank(snapshot, by="traffic", limit=limit, kinds=None, environment=environment)
        chosen = [r.node.id for r in top]
    depths = dict.fromkeys(chosen, 0)
    edges = [e for i in chosen for e in snapshot.out_edges(i) if e.target_id in depths]
    return depths, edges, len(every)
