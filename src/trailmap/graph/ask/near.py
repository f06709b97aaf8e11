"""find_changes_near: the changes in a node's dependency neighbourhood, nearest in the graph and
in time first (docs/metrics.md, "What changed near a service?")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trailmap.errors import ValidationFailed
from trailmap.graph.ask.algorithms import Direction
from trailmap.graph.ask.evidence import DEPENDENCY_KINDS, check_evidence, only
from trailmap.graph.ask.queries import GraphQuery, graph_context, resolve_node
from trailmap.graph.memory import GraphSnapshot
from trailmap.storage import Database
from trailmap.timeline import queries as timeline

__all__ = ["find_changes_near"]

_MAX_DEPTH = 5
_MAX_LIMIT = 100
_PAGES = 5  # at most this many pages of 100 changes are ranked
_HOPS = {1: "one hop", 2: "two hops", 3: "three hops", 4: "four hops", 5: "five hops"}
# How a change is described in a reason: "payments ... deployed 14 minutes before".
_VERBS = {
    "deployment": "deployed",
    "rollback": "rolled back",
    "config-change": "configuration changed",
    "feature-flag": "feature flag changed",
    "incident": "incident",
    "data-load": "data loaded",
    "scaling": "scaled",
}


@dataclass(frozen=True, slots=True)
class _Near:
    name: str
    kind: str
    environment: str
    distance: int
    steps: tuple[str, ...]  # "down" or "up" per hop from the start
    path: tuple[str, ...]  # node names from the start


def _neighbourhood(
    snapshot: GraphSnapshot, start: int, direction: Direction, max_depth: int
) -> dict[int, _Near]:
    """Breadth-first from the start, keeping the first (shortest) way each node is reached;
    downstream steps are tried before upstream ones, so a tie reads as "downstream". Only
    dependencies are followed (evidence.py): a team or a namespace is no neighbour."""
    nodes, ends, edges = snapshot.nodes, snapshot.ends, snapshot.edges
    sides: list[tuple[tuple[tuple[int, ...], ...], int, str]] = []
    if direction != "upstream":
        sides.append((snapshot.out_indices, 1, "down"))
    if direction != "downstream":
        sides.append((snapshot.in_indices, 0, "up"))
    first = nodes[start]
    found = {start: _Near(first.name, first.kind, first.environment, 0, (), (first.name,))}
    frontier = [start]
    for _ in range(max_depth):
        reached: list[int] = []
        for u in frontier:
            here = found[u]
            for adjacency, far, step in sides:
                for j in adjacency[u]:
                    v = ends[j][far]
                    if v in found or edges[j].kind not in DEPENDENCY_KINDS:
                        continue
                    node = nodes[v]
                    found[v] = _Near(
                        node.name,
                        node.kind,
                        node.environment,
                        here.distance + 1,
                        (*here.steps, step),
                        (*here.path, node.name),
                    )
                    reached.append(v)
        frontier = reached
        if not frontier:
            break
    return found


def _where(near: _Near, start: str) -> str:
    if near.distance == 0:
        return f"{near.name} itself"
    hops = _HOPS.get(near.distance, f"{near.distance} hops")
    if all(step == "down" for step in near.steps):
        return f"{near.name}, {hops} downstream of {start} ({' → '.join(near.path)})"
    if all(step == "up" for step in near.steps):
        return f"{near.name}, {hops} upstream of {start} ({' ← '.join(near.path)})"
    return f"{near.name}, {hops} from {start} (via {', '.join(near.path[1:-1])})"


def _ago(delta_s: float) -> str:
    minutes = round(abs(delta_s) / 60)
    if minutes < 1:
        return "less than a minute"
    if minutes < 120:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    if minutes < 48 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} hours"
    return f"{minutes / 1440:.0f} days"


def _score(distance: int, age_s: float, span_s: float) -> float:
    """Halved by each hop, and by each half of the asked range between the change and its
    end: a change next door an hour ago ranks with one two hops away just now."""
    half_life = max(span_s / 2, 900.0)
    return float(0.5**distance * 0.5 ** (max(age_s, 0.0) / half_life))


async def find_changes_near(
    db: Database,
    q: GraphQuery,
    node: str,
    *,
    from_: str = "-1h",
    to: str = "now",
    max_depth: int = 2,
    direction: Direction = "both",
    environment: str | None = None,
    limit: int = 20,
    evidence: str = "all",
) -> dict[str, Any]:
    """`evidence`: walk the edges traces observed, those a source declares, or all."""
    followed = check_evidence(evidence)
    if not 0 <= max_depth <= _MAX_DEPTH:
        raise ValidationFailed.field("max_depth", f"must be between 0 and {_MAX_DEPTH}")
    if direction not in ("downstream", "upstream", "both"):
        raise ValidationFailed.field("direction", "one of downstream, upstream, both")
    if not 1 <= limit <= _MAX_LIMIT:
        raise ValidationFailed.field("limit", f"must be between 1 and {_MAX_LIMIT}")
    ctx = await graph_context(db, q)
    found = resolve_node(ctx.snapshot, node, environment, "node")
    walked = only(ctx.snapshot, followed)
    near = _neighbourhood(walked, walked.index_of(found.id), direction, max_depth)
    by_name: dict[str, _Near] = {}
    for candidate in near.values():
        if candidate.environment == found.environment or candidate.name not in by_name:
            kept = by_name.get(candidate.name)
            if kept is None or candidate.distance < kept.distance:
                by_name[candidate.name] = candidate
    # The timeline takes up to 200 services a query: the nearest ones, when there are more.
    names = sorted(by_name, key=lambda n: (by_name[n].distance, n))[:200]
    changes, range_ = await _changes(db, q, names, from_, to)
    changes = timeline.one_per_change(changes)
    end, start = range_.end, range_.effective_start
    span_s = max((end - start).total_seconds(), 60.0)
    ranked: list[dict[str, Any]] = []
    for event in changes:
        subject = event.get("subject")
        if subject is not None and found.environment not in (subject, "default"):
            continue  # a change to another environment of the same name is not nearby
        item = by_name.get(event.get("service") or "")
        if item is None:
            continue
        age_s = (end - datetime.fromisoformat(event["time"])).total_seconds()
        verb = _VERBS.get(event["type"], event["type"])
        version = f" {event['version']}" if event.get("version") else ""
        when = f"{_ago(age_s)} before {'now' if to in ('', 'now') else 'the end of the range'}"
        ranked.append(
            {
                "score": round(_score(item.distance, age_s, span_s), 4),
                "distance": item.distance,
                "node": {"name": item.name, "kind": item.kind},
                "path": list(item.path),
                "reason": f"{_where(item, found.name)}: {verb}{version} {when}",
                "event": event,
            }
        )
    ranked.sort(key=lambda r: (-r["score"], r["distance"]))
    answer = {
        "node": {"name": found.name, "kind": found.kind, "environment": found.environment},
        "from": start.isoformat(timespec="seconds"),
        "to": end.isoformat(timespec="seconds"),
        **({} if followed == "all" else {"evidence": followed}),
        "nodes_searched": len(by_name),
        "total": len(ranked),
        "changes": ranked[:limit],
        "truncated": len(ranked) > limit,
    }
    if len(ranked) > limit:
        answer["more"] = len(ranked) - limit
        answer["next"] = (
            f"call again with limit={min(len(ranked), _MAX_LIMIT)}"
            if limit < _MAX_LIMIT
            else "narrow the range (from, to) or max_depth"
        )
    return answer


async def _changes(
    db: Database, q: GraphQuery, names: list[str], from_: str, to: str
) -> tuple[list[dict[str, Any]], timeline.TimeRange]:
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    range_: timeline.TimeRange | None = None
    for _ in range(_PAGES):
        page = await timeline.query_events(
            db,
            q.principal,
            timeline.EventQuery(from_=from_, to=to, services=names, limit=100, cursor=cursor),
            default_timezone=q.default_timezone,
        )
        range_ = page.range
        events.extend(page.events)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert range_ is not None
    return events, range_
