"""Which evidence a graph question follows (`evidence=observed|declared|all`), which edges are
dependencies, and an edge's or node's sources and declarations told compactly
(docs/declared-graph.md, "Questions").

Dependencies are what carries failure and requests: `calls`, `reads_writes`, `publishes`,
`consumes`, `depends_on`, and `starts_after` (an order of start, a weaker dependency: a
service that waits for a peer does not start without it). Ownership and placement
(`owned_by`, `runs_in`, `part_of`), a Service in front of a workload (`exposes`) and a
catalog's APIs (`provides_api`, `consumes_api`) are facts about a node, not dependencies:
traversal, impact, paths, ranking and the changes near a node do not follow them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, get_args

from trailmap.errors import ValidationFailed
from trailmap.graph.ask import derived
from trailmap.graph.joined import OBSERVED, is_declared, is_observed
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import DEPENDENCY_KINDS, Edge

__all__ = [
    "DEPENDENCY_KINDS",
    "EVIDENCE",
    "Evidence",
    "check_evidence",
    "declared_at",
    "declared_place",
    "declared_summary",
    "follows",
    "only",
    "owners",
    "seen",
    "sources_text",
]

Evidence = Literal["all", "observed", "declared"]
EVIDENCE: Final[tuple[Evidence, ...]] = get_args(Evidence)

_SHOWN_EVIDENCE = 3  # declarations listed per edge or node; the rest are counted


def check_evidence(value: str) -> Evidence:
    if value not in EVIDENCE:
        raise ValidationFailed.field("evidence", "one of observed, declared, all")
    return value


def follows(edge: Edge, evidence: Evidence) -> bool:
    """Whether a question asked with `evidence` walks this edge: observed = traces saw it
    (and it is not stale), declared = a repository, cluster or catalog declares it."""
    if evidence == "observed":
        return is_observed(edge.sources)
    if evidence == "declared":
        return is_declared(edge.sources)
    return True


def only(snapshot: GraphSnapshot, evidence: Evidence) -> GraphSnapshot:
    """The snapshot with the edges `evidence` follows (every node kept). Its structure is
    built once per snapshot and evidence, and outlives a traffic refresh (it is kept under a
    key without "traffic", so `with_traffic` carries it over); the figures are laid on it
    once per refresh, which keeps what was computed from the structure alone."""
    if evidence == "all":
        return snapshot

    def structure() -> GraphSnapshot:
        edges = [e for e in snapshot.edges if follows(e, evidence)]
        built = GraphSnapshot(snapshot.nodes, edges, version=(snapshot.version, evidence))
        # Computed here, on the structure, so that every copy with new figures has them.
        derived.runtime(built)
        return built

    def measured() -> GraphSnapshot:
        built = snapshot.memo((__name__, "structure", evidence), structure)
        figures = {
            e.id: calls
            for e, calls in zip(snapshot.edges, snapshot.traffic_by_index, strict=True)
            if calls is not None
        }
        return built.with_traffic(figures)

    return snapshot.memo((__name__, "traffic", evidence), measured)


def seen(sources: Iterable[str]) -> str:
    """observed, declared or both."""
    kept = tuple(sources)
    observed, declared = is_observed(kept), is_declared(kept)
    if observed and declared:
        return "both"
    return "observed" if observed else "declared"


def _where(item: Mapping[str, Any]) -> str:
    """`compose.yaml:12 (compose, shop repo @ abc123)`"""
    place = str(item.get("file") or "?")
    if item.get("line") is not None:
        place += f":{item['line']}"
    origin = ", ".join(str(v) for v in (item.get("reader"), item.get("source")) if v)
    if item.get("revision"):
        origin += f" @ {str(item['revision'])[:12]}"
    return f"{place} ({origin})" if origin else place


def declared_at(attributes: Mapping[str, Any], limit: int = _SHOWN_EVIDENCE) -> dict[str, Any]:
    """Where a node or edge is declared, compactly: the first `limit` places, each as
    `file:line (reader, source @ revision)`, and how many more."""
    declared = attributes.get("declared")
    items: Sequence[Mapping[str, Any]] = (
        declared.get("evidence") or [] if isinstance(declared, Mapping) else []
    )
    places: list[str] = []
    for item in items:
        where = _where(item)
        if where not in places:
            places.append(where)
    answer: dict[str, Any] = {"declared_at": places[:limit]}
    if len(places) > limit:
        answer["declared_elsewhere"] = len(places) - limit
    return answer if places else {}


def declared_place(attributes: Mapping[str, Any]) -> dict[str, str]:
    """Where an edge is first declared, as `file:line` alone: its reader is among its
    sources, and the source and revision are on the node (`declared_at`), so an answer
    listing many edges does not repeat them."""
    declared = attributes.get("declared")
    items = declared.get("evidence") if isinstance(declared, Mapping) else None
    if not items:
        return {}
    first = items[0]
    place = str(first.get("file") or "?")
    if first.get("line") is not None:
        place += f":{first['line']}"
    return {"declared_at": place}


def sources_text(sources: Iterable[str]) -> str:
    """Sources compactly: "otel", "compose", "otel+compose+kubernetes" (`otel` first)."""
    found = set(sources)
    ordered = ((OBSERVED,) if OBSERVED in found else ()) + tuple(sorted(found - {OBSERVED}))
    return "+".join(ordered)


# Node attributes a source may use to say who owns a node (a Backstage `owner`, OpenTelemetry
# resource attributes some teams set).
_OWNER_ATTRIBUTES = ("owner", "owners", "team", "service.owner", "service.team")


def _named(value: object) -> list[str]:
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if v]
    return []


def owners(snapshot: GraphSnapshot, node_id: str) -> list[dict[str, Any]]:
    """Who owns a node: the teams its `owned_by` edges lead to (CODEOWNERS, a catalog), then
    owners its attributes name (declared or traced), each once, with where it is said."""
    found: dict[str, dict[str, Any]] = {}
    for edge in snapshot.out_edges(node_id):
        if edge.kind != "owned_by":
            continue
        team = snapshot.node(edge.target_id)
        found.setdefault(
            team.name,
            {
                "name": team.name,
                "sources": sources_text(edge.sources),
                **declared_at(edge.attributes, limit=1),
            },
        )
    node = snapshot.node(node_id)
    declared = node.attributes.get("declared")
    said = declared.get("attributes") if isinstance(declared, Mapping) else None
    for key in _OWNER_ATTRIBUTES:
        for name in _named((said or {}).get(key)):
            found.setdefault(name, {"name": name, "sources": "declared", "attribute": key})
        for name in _named(node.attributes.get(key)):
            found.setdefault(name, {"name": name, "sources": "otel", "attribute": key})
    return list(found.values())


def declared_summary(attributes: Mapping[str, Any]) -> dict[str, Any] | None:
    """What sources declare of a node, compactly: its other names, technology, declared
    attributes and where it is declared; None when nothing declares it."""
    declared = attributes.get("declared")
    if not isinstance(declared, Mapping):
        return None
    summary: dict[str, Any] = {"names": list(declared.get("names") or [])}
    if declared.get("technology"):
        summary["technology"] = declared["technology"]
    if declared.get("attributes"):
        summary["attributes"] = dict(declared["attributes"])
    summary.update(declared_at(attributes))
    return summary
