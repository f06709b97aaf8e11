"""One graph from many sources: the nodes and edges traces observed, joined to what
repositories, clusters and catalogs declare (docs/declared-graph.md).

A declared node joins an observed one of the same environment when any of its names (the
name it is declared under, `OTEL_SERVICE_NAME`, a Kubernetes Service's name, a Backstage name,
a Compose alias) is the observed node's name; declarations from several sources join each other
the same way. Each joined node and edge keeps its sources (`otel` for traces, the reader's name
for each declaration: compose, kubernetes, helm, backstage, codeowners, cluster) and every
declaration's evidence under the attribute `declared`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trailmap.graph.model import DEFAULT_ENVIRONMENT, Edge, Node, edge_id, node_id

__all__ = ["OBSERVED", "Declaration", "is_declared", "is_observed", "join"]

# The source of what traces show.
OBSERVED = "otel"
# More precise kinds win over `service` when sources disagree on what a node is.
_VAGUE = frozenset({"service"})


def is_observed(sources: Iterable[str]) -> bool:
    return OBSERVED in sources


def is_declared(sources: Iterable[str]) -> bool:
    return any(source != OBSERVED for source in sources)


@dataclass(frozen=True, slots=True)
class Declaration:
    """One row of graph_declarations as the join needs it."""

    source_key: str
    subject: str  # node | edge
    body: dict[str, Any]
    evidence: list[dict[str, Any]]
    first_seen_us: int
    last_seen_us: int


@dataclass(slots=True)
class _Group:
    """Declared nodes that are one thing: the names they go by and what they say."""

    names: Counter[str] = field(default_factory=Counter)  # declared names, by declarations
    aliases: set[str] = field(default_factory=set)
    kinds: Counter[str] = field(default_factory=Counter)
    technology: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    evidence: list[dict[str, Any]] = field(default_factory=list)
    first_seen_us: int = 0
    last_seen_us: int = 0

    def add(self, declaration: Declaration) -> None:
        body = declaration.body
        self.names[body["name"]] += 1
        self.aliases.update(body.get("aliases") or ())
        self.kinds[body["kind"]] += 1
        self.technology = self.technology or body.get("technology")
        for key, value in (body.get("attributes") or {}).items():
            self.attributes.setdefault(key, value)
        self.evidence.extend(declaration.evidence)
        first, last = declaration.first_seen_us, declaration.last_seen_us
        self.first_seen_us = min(self.first_seen_us or first, first)
        self.last_seen_us = max(self.last_seen_us, last)

    def absorb(self, other: _Group) -> None:
        self.names.update(other.names)
        self.aliases |= other.aliases
        self.kinds.update(other.kinds)
        self.technology = self.technology or other.technology
        for key, value in other.attributes.items():
            self.attributes.setdefault(key, value)
        self.evidence.extend(other.evidence)
        self.first_seen_us = min(self.first_seen_us, other.first_seen_us)
        self.last_seen_us = max(self.last_seen_us, other.last_seen_us)

    def every_name(self) -> list[str]:
        """Declared names first (most declared first), then aliases, each once."""
        ordered = sorted(self.names, key=lambda n: (-self.names[n], len(n), n))
        return ordered + sorted(self.aliases - set(ordered))

    def kind(self) -> str:
        precise = [k for k in self.kinds if k not in _VAGUE]
        if precise:
            return sorted(precise, key=lambda k: (-self.kinds[k], k))[0]
        return "service"

    def readers(self) -> set[str]:
        return {str(ev.get("reader") or "declared") for ev in self.evidence}


class _Union:
    def __init__(self) -> None:
        self.parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(self, item: tuple[str, str]) -> tuple[str, str]:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: tuple[str, str], b: tuple[str, str]) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def main_environment(nodes: Iterable[Node]) -> str:
    """Where a declaration that names no environment belongs: the environment most of the
    observed services are in (the default one when nothing is observed)."""
    counts = Counter(n.environment for n in nodes if n.kind == "service")
    if not counts:
        return DEFAULT_ENVIRONMENT
    return sorted(counts, key=lambda env: (-counts[env], env))[0]


def join(
    org_id: str,
    observed_nodes: Sequence[Node],
    observed_edges: Sequence[Edge],
    fresh_node_ids: set[str],
    fresh_edge_ids: set[str],
    declarations: Sequence[Declaration],
) -> tuple[list[Node], list[Edge]]:
    """The joined graph. `observed_*` hold every observed node and edge that existed by the
    moment, stale ones included (a declaration brings a stale one back as declared only);
    `fresh_*_ids` those not gone stale."""
    fresh_nodes = [n for n in observed_nodes if n.id in fresh_node_ids]
    home = main_environment(fresh_nodes)
    groups, group_of = _group(declarations, home)

    by_name: dict[tuple[str, str], list[Node]] = {}
    for n in observed_nodes:
        by_name.setdefault((n.environment, n.name), []).append(n)

    nodes: dict[str, Node] = {n.id: n for n in fresh_nodes}
    # Groups that are the same node (two joined to one observed node) are one group.
    by_node: dict[str, tuple[_Group, Node | None]] = {}
    resolved: dict[tuple[str, str], str] = {}
    for root, group in groups.items():
        env = root[0]
        match = _observed_match(group, env, by_name, fresh_node_ids)
        nid = (
            match.id
            if match is not None
            else node_id(org_id, group.kind(), env, group.every_name()[0])
        )
        if nid in by_node:
            by_node[nid][0].absorb(group)
        else:
            by_node[nid] = (group, match)
        resolved[root] = nid
    for nid, (group, match) in by_node.items():
        env = (
            match.environment
            if match is not None
            else next(root[0] for root, found in resolved.items() if found == nid)
        )
        nodes[nid] = _node(
            org_id, env, group, match, fresh=match is not None and match.id in fresh_node_ids
        )
    edges: dict[str, Edge] = {e.id: e for e in observed_edges if e.id in fresh_edge_ids}
    every_edge = {e.id: e for e in observed_edges}
    for declaration in declarations:
        if declaration.subject != "edge":
            continue
        body = declaration.body
        env = body.get("environment") or home
        from_group = group_of.get((env, body["source"]))
        to_group = group_of.get((env, body["target"]))
        if from_group is None or to_group is None:
            continue
        s, t = resolved[from_group], resolved[to_group]
        if s == t:
            continue
        eid = edge_id(org_id, s, t, body["kind"])
        base = edges.get(eid) or every_edge.get(eid)
        edges[eid] = _edge(
            eid, s, t, body["kind"], base, eid in fresh_edge_ids, declaration, edges.get(eid)
        )
    present = set(nodes)
    kept = [e for e in edges.values() if e.source_id in present and e.target_id in present]
    return list(nodes.values()), kept


def _group(
    declarations: Sequence[Declaration], home: str
) -> tuple[dict[tuple[str, str], _Group], dict[tuple[str, str], tuple[str, str]]]:
    union = _Union()
    node_rows = [d for d in declarations if d.subject == "node"]
    declared_names = {(d.body.get("environment") or home, d.body["name"]) for d in node_rows}
    for d in node_rows:
        env = d.body.get("environment") or home
        here = (env, d.body["name"])
        union.find(here)
        for alias in d.body.get("aliases") or ():
            if (env, alias) in declared_names:
                union.union(here, (env, alias))
    groups: dict[tuple[str, str], _Group] = {}
    for d in node_rows:
        env = d.body.get("environment") or home
        groups.setdefault(union.find((env, d.body["name"])), _Group()).add(d)
    group_of = {name: union.find(name) for name in declared_names}
    return groups, group_of


def _observed_match(
    group: _Group, env: str, by_name: dict[tuple[str, str], list[Node]], fresh: set[str]
) -> Node | None:
    """The observed node this group is, if any: by its names in order, a fresh node before a
    stale one, the same kind before another."""
    kind = group.kind()
    for name in group.every_name():
        found = by_name.get((env, name))
        if found:
            return sorted(found, key=lambda n: (n.id not in fresh, n.kind != kind, n.kind))[0]
    return None


def _node(org_id: str, env: str, group: _Group, observed: Node | None, *, fresh: bool) -> Node:
    declared = {
        "names": group.every_name(),
        "evidence": group.evidence,
        **({"technology": group.technology} if group.technology else {}),
        **({"attributes": group.attributes} if group.attributes else {}),
    }
    readers = sorted(group.readers())
    if observed is None:
        kind = group.kind()
        name = group.every_name()[0]
        attributes: dict[str, Any] = {"declared": declared}
        if group.technology:
            attributes["technology"] = group.technology
        return Node(
            id=node_id(org_id, kind, env, name),
            kind=kind,  # type: ignore[arg-type]
            name=name,
            environment=env,
            first_seen_us=group.first_seen_us,
            last_seen_us=group.last_seen_us,
            attributes=attributes,
            sources=tuple(readers),
        )
    attributes = {**observed.attributes, "declared": declared}
    if group.technology and not attributes.get("technology"):
        attributes["technology"] = group.technology
    return Node(
        id=observed.id,
        kind=observed.kind,
        name=observed.name,
        environment=observed.environment,
        first_seen_us=min(observed.first_seen_us, group.first_seen_us)
        if fresh
        else group.first_seen_us,
        last_seen_us=max(observed.last_seen_us, group.last_seen_us)
        if fresh
        else group.last_seen_us,
        attributes=attributes,
        sources=((OBSERVED,) if fresh else ()) + tuple(readers),
    )


def _edge(
    eid: str,
    source_id: str,
    target_id: str,
    kind: str,
    observed: Edge | None,
    fresh: bool,
    declaration: Declaration,
    so_far: Edge | None,
) -> Edge:
    """The edge with one more declaration: `so_far` is what the join built until now (the
    observed edge, or an edge other declarations made)."""
    readers = {str(ev.get("reader") or "declared") for ev in declaration.evidence}
    if so_far is not None:
        sources = set(so_far.sources) | readers
        before = so_far.attributes.get("declared", {}).get("evidence", [])
        first = min(so_far.first_seen_us, declaration.first_seen_us)
        last = max(so_far.last_seen_us, declaration.last_seen_us)
        attributes = so_far.attributes
    elif observed is not None and not fresh:
        # Observed once, gone stale: present now as declared only.
        sources, before = readers, []
        first, last = declaration.first_seen_us, declaration.last_seen_us
        attributes = observed.attributes
    else:
        sources, before = readers, []
        first, last = declaration.first_seen_us, declaration.last_seen_us
        attributes = {}
    ordered = ((OBSERVED,) if OBSERVED in sources else ()) + tuple(sorted(sources - {OBSERVED}))
    return Edge(
        id=eid,
        source_id=source_id,
        target_id=target_id,
        kind=kind,  # type: ignore[arg-type]
        first_seen_us=first,
        last_seen_us=last,
        attributes={**attributes, "declared": {"evidence": [*before, *declaration.evidence]}},
        sources=ordered,
    )
