"""compare_declared_and_observed: what repositories, clusters and catalogs declare against
what traces show, for one service or the whole graph, over a window (docs/declared-graph.md,
"Questions"): dependencies declared but never called in the window (unused, or not
instrumented), and dependencies called but declared nowhere (hidden)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from trailmap import clock
from trailmap.errors import ValidationFailed
from trailmap.graph.ask import evidence as ev
from trailmap.graph.ask.queries import GraphQuery, graph_context, resolve_node
from trailmap.graph.ask.window import window
from trailmap.graph.joined import is_declared, is_observed
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import Edge, Node
from trailmap.storage import Database
from trailmap.storage import graph as store

__all__ = ["compare_declared_and_observed"]

_MAX_LIMIT = 100
_NOTHING_DECLARED = (
    "Nothing is declared{where}: connect a repository, a cluster or a catalog (Integrations) "
    "to compare what is declared with what traces observe."
)


async def compare_declared_and_observed(
    db: Database,
    q: GraphQuery,
    *,
    service: str | None = None,
    from_: str = "-7d",
    to: str = "now",
    environment: str | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    """Declared dependencies with no call measured between `from_` and `to`, and observed
    dependencies of declared nodes that no source declares; each list the first `limit`,
    with its total."""
    if not 1 <= limit <= _MAX_LIMIT:
        raise ValidationFailed.field("limit", f"must be between 1 and {_MAX_LIMIT}")
    span = window(from_, to, default_timezone=q.default_timezone)
    ctx = await graph_context(db, dataclasses.replace(q, at=None if span.now else to))
    snapshot = ctx.snapshot
    focus = resolve_node(snapshot, service, environment, "service") if service else None

    def in_scope(node: Node) -> bool:
        return environment in (None, "", node.environment)

    if focus is not None:
        edges = [*snapshot.out_edges(focus.id), *snapshot.in_edges(focus.id)]
        nodes = [focus]
    else:
        nodes = [n for n in snapshot.nodes if in_scope(n)]
        edges = [e for e in snapshot.edges if in_scope(snapshot.node(e.source_id))]
    edges = [e for e in edges if e.kind in ev.DEPENDENCY_KINDS]
    calls = await _calls(db, q.principal.org_id, focus, edges, span.start_us, span.end_us)
    # Between two nodes, calls measured on any edge count for a declaration of another kind
    # (a Compose `depends_on`, read as starts_after, is used when the service calls its peer).
    measured: Counter[tuple[str, str]] = Counter()
    declared_pairs: set[tuple[str, str]] = set()
    for edge in edges:
        pair = (edge.source_id, edge.target_id)
        measured[pair] += calls.get(edge.id, 0)
        if is_declared(edge.sources):
            declared_pairs.add(pair)

    declared_nodes = [n for n in nodes if is_declared(n.sources)]
    unused = sorted(
        (e for e in edges if is_declared(e.sources) and not measured[(e.source_id, e.target_id)]),
        key=lambda e: _order(snapshot, e),
    )
    hidden = sorted(
        (
            e
            for e in edges
            if is_observed(e.sources)
            and not is_declared(e.sources)
            and (e.source_id, e.target_id) not in declared_pairs
            and is_declared(snapshot.node(e.source_id).sources)
            and (calls.get(e.id, 0) or e.last_seen_us >= span.start_us)
        ),
        key=lambda e: (-calls.get(e.id, 0), _order(snapshot, e)),
    )
    data: dict[str, Any] = {
        "scope": _scope(focus, environment),
        "from": span.start.isoformat(timespec="seconds"),
        "to": span.end.isoformat(timespec="seconds"),
        "declared_nodes": len(declared_nodes),
        "declared_dependencies": sum(1 for e in edges if is_declared(e.sources)),
        "observed_dependencies": sum(1 for e in edges if is_observed(e.sources)),
        "declared_not_observed_total": len(unused),
        "declared_not_observed": [_unused_line(snapshot, e) for e in unused[:limit]],
        "observed_not_declared_total": len(hidden),
        "observed_not_declared": [
            _hidden_line(snapshot, e, calls.get(e.id, 0)) for e in hidden[:limit]
        ],
    }
    if not declared_nodes:
        where = f" for {focus.name}" if focus is not None else ""
        data["note"] = _NOTHING_DECLARED.format(where=where)
    more = max(len(unused), len(hidden)) - limit
    if more > 0:
        data["more"] = more
        data["next"] = (
            f"call again with limit={min(max(len(unused), len(hidden)), _MAX_LIMIT)}"
            if limit < _MAX_LIMIT
            else "name a service or an environment"
        )
    if ctx.as_of:
        data["as_of"] = ctx.as_of
    return data


async def _calls(
    db: Database, org_id: str, focus: Node | None, edges: list[Edge], start_us: int, end_us: int
) -> dict[str, int]:
    """Calls per edge in the window, from the per-minute figures: for one service, its edges'
    own rows (found by primary key); for the whole graph, every subject's in one pass."""
    if focus is None:
        return await db.read(store.traffic, org_id, start_us, end_us)
    totals = await db.read(store.minute_totals, org_id, [e.id for e in edges], start_us, end_us)
    return {subject: figures[0] for subject, figures in totals.items()}


def _scope(focus: Node | None, environment: str | None) -> dict[str, Any]:
    if focus is not None:
        return {"service": focus.name, "kind": focus.kind, "environment": focus.environment}
    return {"graph": "whole", **({"environment": environment} if environment else {})}


def _order(snapshot: GraphSnapshot, edge: Edge) -> tuple[str, str, str]:
    return snapshot.node(edge.source_id).name, snapshot.node(edge.target_id).name, edge.kind


def _unused_line(snapshot: GraphSnapshot, edge: Edge) -> dict[str, Any]:
    source, target = snapshot.node(edge.source_id), snapshot.node(edge.target_id)
    # Both ends traced and still no call between them: unused, more likely than not
    # instrumented; an end traces never saw cannot report its calls.
    traced = is_observed(source.sources) and is_observed(target.sources)
    return {
        "from": source.name,
        "to": target.name,
        "kind": edge.kind,
        "sources": ev.sources_text(edge.sources),
        "likely": "unused" if traced else "not instrumented",
        **ev.declared_place(edge.attributes),
    }


def _hidden_line(snapshot: GraphSnapshot, edge: Edge, calls: int) -> dict[str, Any]:
    return {
        "from": snapshot.node(edge.source_id).name,
        "to": snapshot.node(edge.target_id).name,
        "kind": edge.kind,
        "calls": calls,
        "last_seen": clock.from_us(edge.last_seen_us).isoformat(timespec="seconds"),
    }
