"""The graph's questions as the REST API and the MCP tools ask them: names and time expressions
in, JSON-ready dictionaries out, which the faces only render."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import anyio.to_thread

from trailmap import clock
from trailmap.accounts.principal import Principal
from trailmap.errors import NotFound, ValidationFailed
from trailmap.graph.ask import algorithms as algo
from trailmap.graph.ask import evidence as ev
from trailmap.graph.ask.snapshots import snapshot_for
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import EDGE_KINDS, NODE_KINDS, Edge, Node
from trailmap.graph.stats import Stats
from trailmap.storage import Database
from trailmap.storage import graph as store
from trailmap.timeline import queries as timeline
from trailmap.timeline.times import TimeExpressionError, parse_time_expression, resolve_timezone

__all__ = [
    "Format",
    "GraphQuery",
    "find_path",
    "get_impact",
    "get_node",
    "rank_critical_services",
    "search_nodes",
    "traverse_dependencies",
]

Format = Literal["json", "mermaid"]
_HOUR_US = 3_600_000_000
_MAX_DEPTH = 10
_MAX_RESULTS = 200


@dataclass(frozen=True, slots=True)
class GraphQuery:
    """What every graph question shares: who asks, about which moment, in which format."""

    principal: Principal
    at: str | None = None
    format: Format = "json"
    stale_after_days: int = 7
    default_timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class _Context:
    snapshot: GraphSnapshot
    moment: datetime
    as_of: str | None  # the time asked for, when it was not now


async def _context(db: Database, q: GraphQuery) -> _Context:
    now = clock.now()
    moment = now
    if q.at not in (None, "", "now"):
        try:
            tz = resolve_timezone(None, default=q.default_timezone)
            moment = parse_time_expression(str(q.at), now=now, tz=tz)
        except (TimeExpressionError, ValueError) as error:
            raise ValidationFailed.field("at", str(error)) from None
        moment = min(moment, now)
    snapshot = await snapshot_for(
        db,
        q.principal.org_id,
        at_us=None if moment is now else clock.to_us(moment),
        stale_after_us=q.stale_after_days * 24 * _HOUR_US,
    )
    return _Context(snapshot, moment, None if moment is now else moment.isoformat())


def _check_kinds(name: str, values: Sequence[str] | None, known: Sequence[str]) -> None:
    for value in values or ():
        if value not in known:
            raise ValidationFailed.field(name, f"{value!r} is not one of {', '.join(known)}")


def _brief(node: Node) -> dict[str, Any]:
    return {"name": node.name, "kind": node.kind, "environment": node.environment}


def _resolve(snapshot: GraphSnapshot, ref: str, environment: str | None, what: str) -> Node:
    """A node from what the caller calls it: an id, a name, or something close to a name."""
    ref = (ref or "").strip()
    if not ref:
        raise ValidationFailed.field(what, "name a node, e.g. checkout")
    if ref in snapshot:
        return snapshot.node(ref)
    folded = ref.casefold()
    exact = [
        n
        for n in snapshot.nodes
        if n.name.casefold() == folded and environment in (None, n.environment)
    ]
    if exact:
        return _preferred(exact)
    by_kind = _by_kind_word(snapshot, folded, environment)
    if by_kind is not None:
        return by_kind
    matches = algo.search(snapshot, ref, environment=environment, limit=5)
    if matches:
        best = [m for m in matches if m.score == matches[0].score]
        if len({m.node.name for m in best}) == 1:
            return _preferred([m.node for m in best])
    hint = ", ".join(sorted({m.node.name for m in matches})) if matches else None
    where = f" in environment {environment}" if environment else ""
    raise NotFound(
        f"No node named {ref!r}{where}."
        + (f" Did you mean: {hint}?" if hint else " Use search_nodes to find names.")
    )


def _by_kind_word(snapshot: GraphSnapshot, folded: str, environment: str | None) -> Node | None:
    """ "The database" names a node when the graph has one database (per environment)."""
    kind = algo.kind_named(folded)
    if kind is None:
        return None
    of_kind = [n for n in snapshot.nodes if n.kind == kind and environment in (None, n.environment)]
    if len({n.name for n in of_kind}) == 1:
        return _preferred(of_kind)
    if of_kind:
        names = ", ".join(sorted({n.name for n in of_kind})[:10])
        raise NotFound(f"There are several nodes of kind {kind}: {names}; name one.")
    return None


def _preferred(nodes: Sequence[Node]) -> Node:
    # The same name in several environments: production first, then the most recently seen.
    return max(nodes, key=lambda n: (n.environment == "production", n.last_seen_us, n.name))


async def _last_hour(
    db: Database, org_id: str, subject_ids: Sequence[str], moment: datetime
) -> dict[str, Stats]:
    """Statistics of edges or nodes over the hour before `moment`, in one read."""
    if not subject_ids:
        return {}
    to_us = clock.to_us(moment)
    totals = await db.read(store.minute_totals, org_id, subject_ids, to_us - _HOUR_US, to_us)
    return {subject: Stats(*values) for subject, values in totals.items()}


async def _edge_stats(
    db: Database, org_id: str, edges: Sequence[Edge], moment: datetime
) -> dict[str, dict[str, Any]]:
    stats = await _last_hour(db, org_id, [e.id for e in edges], moment)
    return {subject: figures.summary(60) for subject, figures in stats.items()}


def _edge_line(
    snapshot: GraphSnapshot, edge: Edge, stats: dict[str, dict[str, Any]], *, where: bool = False
) -> dict[str, Any]:
    """An edge as answers show it: its ends, kind and sources (`otel` when traces observed
    it, the declaring readers otherwise: "otel+compose"), its last hour's figures, and with
    `where`, where it is declared."""
    line: dict[str, Any] = {
        "from": snapshot.node(edge.source_id).name,
        "to": snapshot.node(edge.target_id).name,
        "kind": edge.kind,
        "sources": ev.sources_text(edge.sources),
    }
    if where:
        line["seen"] = ev.seen(edge.sources)
        line.update(ev.declared_place(edge.attributes))
    figures = stats.get(edge.id)
    if figures:
        line.update(
            calls=figures["calls"],
            errors=figures["errors"],
            calls_per_minute=figures["calls_per_minute"],
            error_rate=figures["error_rate"],
            p95_ms=figures["p95_ms"],
        )
    return line


def _finish(
    ctx: _Context, q: GraphQuery, data: dict[str, Any], nodes: Sequence[str], edges: Sequence[str]
) -> dict[str, Any]:
    if ctx.as_of:
        data["as_of"] = ctx.as_of
    if q.format == "mermaid":
        data["mermaid"] = algo.mermaid(ctx.snapshot, nodes, edges)
    return data


async def search_nodes(
    db: Database,
    q: GraphQuery,
    query: str,
    *,
    kinds: Sequence[str] | None = None,
    environment: str | None = None,
    limit: int = 10,
    offset: int = 0,
) -> dict[str, Any]:
    """Nodes whose name matches `query`, best first; an empty query lists them all, services
    first, busiest first. `offset` pages through either."""
    _check_kinds("kinds", kinds, NODE_KINDS)
    if not 1 <= limit <= 100:
        raise ValidationFailed.field("limit", "must be between 1 and 100")
    if offset < 0:
        raise ValidationFailed.field("offset", "must be 0 or more")
    ctx = await _context(db, q)
    if not (query or "").strip():
        return await _list_nodes(db, q, ctx, kinds, environment, limit, offset)
    every = len(ctx.snapshot.nodes)
    found = algo.search(ctx.snapshot, query, kinds=kinds, environment=environment, limit=every)
    matches = found[offset : offset + limit]
    data = {
        "query": query,
        "nodes": [_match_line(ctx.snapshot, m) for m in matches],
        "total_nodes": every,
        **_more(len(found), offset, len(matches), "offset"),
    }
    return _finish(ctx, q, data, [m.node.id for m in matches], [])


def _match_line(snapshot: GraphSnapshot, match: algo.Match) -> dict[str, Any]:
    line = {**_brief(match.node), "match": match.reason, "score": round(match.score, 2)}
    technology = match.node.attributes.get("technology")
    if technology:
        line["technology"] = technology
    if match.node.kind != "service":
        # "Which services use Kafka?" and "which connect to PostgreSQL?" answered by the
        # search alone, whether the node matched by its technology or by its name.
        line["connected_services"] = _connected_services(snapshot, match.node)
    return line


def _connected_services(snapshot: GraphSnapshot, node: Node) -> list[str]:
    """The services with an edge into `node` (a database, cache, topic or external API)."""
    return sorted(
        {
            source.name
            for source in (
                snapshot.node(e.source_id)
                for e in snapshot.in_edges(node.id)
                if e.kind in ev.DEPENDENCY_KINDS
            )
            if source.kind == "service"
        }
    )


async def _list_nodes(
    db: Database,
    q: GraphQuery,
    ctx: _Context,
    kinds: Sequence[str] | None,
    environment: str | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """ "What is there?": the nodes in kind order (services first), busiest first, then by name."""
    nodes = [
        n
        for n in ctx.snapshot.nodes
        if (not kinds or n.kind in kinds) and environment in (None, n.environment)
    ]
    traffic = await _last_hour(db, q.principal.org_id, [n.id for n in nodes], ctx.moment)
    rank = {kind: i for i, kind in enumerate(NODE_KINDS)}

    def calls(node: Node) -> int:
        stats = traffic.get(node.id)
        return stats.calls if stats is not None else 0

    nodes.sort(key=lambda n: (rank.get(n.kind, len(rank)), -calls(n), n.name, n.environment))
    page = nodes[offset : offset + limit]
    data = {
        "query": "",
        "nodes": [_listed(n, calls(n)) for n in page],
        "total_nodes": len(ctx.snapshot.nodes),
        **_more(len(nodes), offset, len(page), "offset"),
    }
    return _finish(ctx, q, data, [n.id for n in page], [])


def _listed(node: Node, calls: int) -> dict[str, Any]:
    line = _brief(node)
    if node.attributes.get("technology"):
        line["technology"] = node.attributes["technology"]
    if calls:
        line["calls_per_minute"] = round(calls / 60, 2)
    return line


def _more_by_limit(total: int, shown: int, cap: int) -> dict[str, Any]:
    """`_more` for an answer listed from its top, which a larger `limit` (up to `cap`) extends."""
    more = total - shown
    if more <= 0:
        return {}
    if shown >= cap:
        return {"more": more, "next": f"at most {cap} are listed; narrow with environment"}
    return {"more": more, "next": f"call again with limit={min(total, cap)}"}


def _more(total: int, offset: int, shown: int, argument: str) -> dict[str, Any]:
    """What a capped answer adds: how many more there are and how to get them."""
    more = total - offset - shown
    if more <= 0:
        return {}
    return {"more": more, "next": f"call again with {argument}={offset + shown}"}


async def get_node(
    db: Database, q: GraphQuery, node: str, *, environment: str | None = None
) -> dict[str, Any]:
    ctx = await _context(db, q)
    snapshot = ctx.snapshot
    found = _resolve(snapshot, node, environment, "node")
    every_in, every_out = snapshot.in_edges(found.id), snapshot.out_edges(found.id)
    ins = [e for e in every_in if e.kind in ev.DEPENDENCY_KINDS]
    outs = [e for e in every_out if e.kind in ev.DEPENDENCY_KINDS]
    related = [e for e in (*every_out, *every_in) if e.kind not in ev.DEPENDENCY_KINDS]
    raw = await _last_hour(
        db, q.principal.org_id, [found.id, *(e.id for e in (*ins, *outs))], ctx.moment
    )
    own = raw.pop(found.id, None)
    callers = [raw[e.id] for e in ins if e.id in raw]
    if own is None and callers:
        # A node that serves nothing itself (a database, a topic): what its callers saw.
        own = Stats.total(callers)
    last_hour = own.summary(60) if own is not None else None
    stats = {subject: figures.summary(60) for subject, figures in raw.items()}
    data: dict[str, Any] = {
        **_brief(found),
        "id": found.id,
        "first_seen": clock.from_us(found.first_seen_us).isoformat(),
        "last_seen": clock.from_us(found.last_seen_us).isoformat(),
        "sources": list(found.sources),
        "attributes": {k: v for k, v in found.attributes.items() if k != "declared"},
        "owners": ev.owners(snapshot, found.id),
        "dependencies": _sides(outs),
        "dependents": _sides(ins),
        "last_hour": last_hour,
        "upstream": [
            _edge_line(snapshot, e, stats, where=True) for e in _by_name(snapshot, ins, "source")
        ],
        "downstream": [
            _edge_line(snapshot, e, stats, where=True) for e in _by_name(snapshot, outs, "target")
        ],
    }
    declared = ev.declared_summary(found.attributes)
    if declared is not None:
        data["declared"] = declared
    if related:
        data["related"] = [_related_line(snapshot, found, e) for e in related[:_RELATED]]
        if len(related) > _RELATED:
            data["related_more"] = len(related) - _RELATED
    if found.kind != "service":
        data["connected_services"] = _connected_services(snapshot, found)
    if node not in (found.name, found.id):
        data["matched"] = f"{node!r} was taken to mean {found.name!r}"
    data["recent_changes"] = await _recent_changes(db, q, found, ctx.moment)
    return _finish(
        ctx,
        q,
        data,
        [found.id, *(e.source_id for e in ins), *(e.target_id for e in outs)],
        [e.id for e in (*ins, *outs)],
    )


_RELATED = 20  # ownership, placement, APIs and exposure listed on a node


def _sides(edges: Sequence[Edge]) -> dict[str, int]:
    """How many of a node's dependencies (or dependents) traces observed, sources declare,
    or both: the side by side of get_node, counted."""
    counts = {"observed": 0, "declared": 0, "both": 0}
    for edge in edges:
        counts[ev.seen(edge.sources)] += 1
    return counts


def _related_line(snapshot: GraphSnapshot, node: Node, edge: Edge) -> dict[str, Any]:
    """An edge that is no dependency (owned_by, runs_in, part_of, exposes, provides_api,
    consumes_api), from the node's side."""
    outgoing = edge.source_id == node.id
    other = snapshot.node(edge.target_id if outgoing else edge.source_id)
    return {
        "kind": edge.kind,
        ("to" if outgoing else "from"): other.name,
        "sources": ev.sources_text(edge.sources),
        **ev.declared_place(edge.attributes),
    }


def _by_name(snapshot: GraphSnapshot, edges: Sequence[Edge], end: str) -> list[Edge]:
    def key(edge: Edge) -> tuple[str, str]:
        other = edge.source_id if end == "source" else edge.target_id
        return snapshot.node(other).name, edge.kind

    return sorted(edges, key=key)


async def _recent_changes(
    db: Database, q: GraphQuery, node: Node, moment: datetime
) -> list[dict[str, Any]]:
    if node.kind != "service":
        return []
    query = timeline.EventQuery(
        from_=(moment - timedelta(days=1)).isoformat(),
        to=moment.isoformat(),
        services=[node.name],
        limit=10,
    )
    page = await timeline.query_events(db, q.principal, query, default_timezone=q.default_timezone)
    keep = (
        *("id", "time", "time_relative", "type", "version", "subject", "description"),
        *("source", "also_reported_by"),
    )
    changes = timeline.one_per_change(page.events)
    return [{k: e[k] for k in keep if e.get(k) is not None} for e in changes]


async def traverse_dependencies(
    db: Database,
    q: GraphQuery,
    node: str,
    *,
    direction: algo.Direction = "downstream",
    max_depth: int = 3,
    edge_kinds: Sequence[str] | None = None,
    node_kinds: Sequence[str] | None = None,
    environment: str | None = None,
    evidence: str = "all",
) -> dict[str, Any]:
    """Dependencies walked (evidence.DEPENDENCY_KINDS) unless `edge_kinds` names others."""
    _check_kinds("edge_kinds", edge_kinds, EDGE_KINDS)
    _check_kinds("node_kinds", node_kinds, NODE_KINDS)
    followed = ev.check_evidence(evidence)
    if not 1 <= max_depth <= _MAX_DEPTH:
        raise ValidationFailed.field("max_depth", f"must be between 1 and {_MAX_DEPTH}")
    ctx = await _context(db, q)
    start = _resolve(ctx.snapshot, node, environment, "node")
    walk = algo.traverse(
        ev.only(ctx.snapshot, followed),
        start.id,
        direction=direction,
        max_depth=max_depth,
        edge_kinds=edge_kinds or ev.DEPENDENCY_KINDS,
        node_kinds=node_kinds,
    )
    reached = walk.nodes[:_MAX_RESULTS]
    walked = _strongest(walk.edges)
    stats = await _edge_stats(db, q.principal.org_id, walked, ctx.moment)
    data: dict[str, Any] = {
        "start": _brief(start),
        "direction": direction,
        "max_depth": max_depth,
        **_evidence(followed),
        "nodes": [{**_brief(r.node), "depth": r.depth} for r in reached],
        "edges": [_edge_line(ctx.snapshot, e, stats) for e in walked],
        "truncated": len(walk.nodes) > len(reached),
    }
    if data["truncated"]:
        data["more"] = len(walk.nodes) - len(reached)
        data["next"] = "narrow the walk: a smaller max_depth, node_kinds or edge_kinds"
    return _finish(ctx, q, data, [r.node.id for r in reached], [e.id for e in walked])


def _strongest(edges: Sequence[Edge]) -> list[Edge]:
    """The edges of a walk without a `starts_after` beside a stronger dependency between the
    same two nodes (a Compose `depends_on` on a service it also calls): it reaches nothing
    more, and would only lengthen the answer."""
    stronger = {(e.source_id, e.target_id) for e in edges if e.kind != "starts_after"}
    return [
        e for e in edges if e.kind != "starts_after" or (e.source_id, e.target_id) not in stronger
    ]


async def find_path(
    db: Database,
    q: GraphQuery,
    from_: str,
    to: str,
    *,
    max_paths: int = 3,
    environment: str | None = None,
    evidence: str = "all",
) -> dict[str, Any]:
    if not 1 <= max_paths <= 10:
        raise ValidationFailed.field("max_paths", "must be between 1 and 10")
    followed = ev.check_evidence(evidence)
    ctx = await _context(db, q)
    source = _resolve(ctx.snapshot, from_, environment, "from")
    target = _resolve(ctx.snapshot, to, environment, "to")
    walked = ev.only(ctx.snapshot, followed)
    paths = algo.find_paths(walked, source.id, target.id, max_paths=max_paths)
    reverse = False
    if not paths:
        paths = algo.find_paths(walked, target.id, source.id, max_paths=max_paths)
        reverse = bool(paths)
    edges = [e for p in paths for e in p.edges]
    stats = await _edge_stats(db, q.principal.org_id, edges, ctx.moment)
    data: dict[str, Any] = {
        "from": _brief(source),
        "to": _brief(target),
        **_evidence(followed),
        "paths": [
            {
                "hops": len(p.edges),
                "nodes": [n.name for n in p.nodes],
                "edges": [_edge_line(ctx.snapshot, e, stats) for e in p.edges],
            }
            for p in paths
        ],
    }
    if reverse:
        data["note"] = (
            f"Nothing flows from {source.name} to {target.name}; these paths go the other way."
        )
    elif not paths:
        data["note"] = f"No path connects {source.name} and {target.name} in either direction."
    ids = [n.id for p in paths for n in p.nodes] or [source.id, target.id]
    return _finish(ctx, q, data, ids, [e.id for e in edges])


def _evidence(followed: ev.Evidence) -> dict[str, str]:
    """The evidence an answer followed, said when it is not every edge."""
    return {} if followed == "all" else {"evidence": followed}


# A blast radius is counted in full at every depth; this many of its nearest nodes are
# listed one by one (an assistant reads the counts, and the nearest are whom to warn first).
_IMPACT_LIMIT = 50
_MAX_IMPACTED = 100


async def get_impact(
    db: Database,
    q: GraphQuery,
    node: str,
    *,
    environment: str | None = None,
    limit: int = _IMPACT_LIMIT,
    evidence: str = "all",
) -> dict[str, Any]:
    if not 1 <= limit <= _MAX_IMPACTED:
        raise ValidationFailed.field("limit", f"must be between 1 and {_MAX_IMPACTED}")
    followed = ev.check_evidence(evidence)
    ctx = await _context(db, q)
    failed = _resolve(ctx.snapshot, node, environment, "node")
    blast = algo.impact(ev.only(ctx.snapshot, followed), failed.id, limit=limit)
    shown = blast.impacted
    data = {
        "node": _brief(failed),
        **_evidence(followed),
        "impacted_count": blast.count,
        "impacted_services": blast.services,
        "max_depth": blast.max_depth,
        "by_depth": [
            {"depth": d.depth, "nodes": d.nodes, "services": d.services} for d in blast.by_depth
        ],
        "impacted": [
            {
                **_brief(i.node),
                "depth": i.depth,
                "via": i.via.name,
                "edge": i.edge.kind,
                "sources": ev.sources_text(i.edge.sources),
                "share_of_traffic": None if i.share is None else round(i.share, 3),
            }
            for i in shown
        ],
        "truncated": blast.truncated,
        **_more_by_limit(blast.count, len(shown), _MAX_IMPACTED),
    }
    return _finish(
        ctx, q, data, [failed.id, *(i.node.id for i in shown)], [i.edge.id for i in shown]
    )


async def rank_critical_services(
    db: Database,
    q: GraphQuery,
    *,
    by: algo.RankBy = "dependents",
    limit: int = 10,
    environment: str | None = None,
) -> dict[str, Any]:
    if not 1 <= limit <= 100:
        raise ValidationFailed.field("limit", "must be between 1 and 100")
    ctx = await _context(db, q)
    snapshot = ctx.snapshot
    # Ranked over every environment at once, once per graph version, then sliced. A first
    # ranking of a large graph takes seconds (betweenness): off the event loop.
    top = await anyio.to_thread.run_sync(
        lambda: algo.rank(snapshot, by=by, limit=limit, environment=environment or None)
    )
    dependents = await anyio.to_thread.run_sync(lambda: algo.scores(snapshot, "dependents"))
    data = {
        "by": by,
        "services": [
            {
                **_brief(r.node),
                "score": round(r.score, 4),
                "dependents": int(dependents[snapshot.index_of(r.node.id)]),
                "direct_dependents": _direct_dependents(snapshot, r.node),
            }
            for r in top
        ],
    }
    services = sum(
        1
        for n in snapshot.nodes
        if n.kind == "service" and environment in (None, "", n.environment)
    )
    data.update(_more_by_limit(services, len(top), 100))
    return _finish(ctx, q, data, [r.node.id for r in top], [])


def _direct_dependents(snapshot: GraphSnapshot, node: Node) -> int:
    """The nodes with a dependency on this one: a team's owned services, a namespace's
    workloads, are none."""
    return len({e.source_id for e in snapshot.in_edges(node.id) if e.kind in ev.DEPENDENCY_KINDS})


# What other domain modules (graph/ask/near.py) build on: the snapshot of a query, and a node
# named as a person names it.
graph_context = _context
resolve_node = _resolve
edge_figures = _edge_stats
