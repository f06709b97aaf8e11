"""What a repository, a cluster or a catalog declares: nodes and edges, each with where it is
said. The readers of Compose, Kubernetes manifests, Helm values, Backstage and CODEOWNERS
all return a `Declared`; the graph records it beside what traces observe."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from trailmap.graph.model import NodeKind

__all__ = [
    "DECLARED_EDGE_KINDS",
    "Declared",
    "DeclaredEdge",
    "DeclaredEdgeKind",
    "DeclaredNode",
    "Evidence",
    "Reference",
    "Skipped",
    "dependency_kind",
]

# What a declaration says of two nodes. "calls": a service names another's address (an
# environment value, a URL, a DSN); "reads_writes": it names a datastore's; "starts_after":
# Compose's `depends_on` and `links`, an init container waiting for a peer (weaker: an
# order, not traffic); "owned_by": CODEOWNERS, a Backstage owner; "part_of": a Backstage
# system or domain; "provides_api" / "consumes_api": Backstage's APIs; "exposes": a
# Kubernetes Service or Ingress in front of a workload; "runs_in": a workload in a namespace.
DeclaredEdgeKind = Literal[
    "calls",
    "reads_writes",
    "publishes",
    "consumes",
    "starts_after",
    "owned_by",
    "part_of",
    "provides_api",
    "consumes_api",
    "exposes",
    "runs_in",
]
DECLARED_EDGE_KINDS: Final[tuple[DeclaredEdgeKind, ...]] = get_args(DeclaredEdgeKind)

# What naming a peer of each kind says, as traces would show it: a datastore is read and
# written, a broker or topic published to (a configuration cannot tell a producer from a
# consumer; the evidence says so), anything else called.
_DEPENDENCY_KINDS: Final[dict[str, DeclaredEdgeKind]] = {
    "database": "reads_writes",
    "cache": "reads_writes",
    "queue": "publishes",
    "topic": "publishes",
}


def dependency_kind(target_kind: str) -> DeclaredEdgeKind:
    """The kind of a dependency on a node of `target_kind`, the same for every reader, so that
    a Compose file, a manifest and a catalog naming the same broker declare one edge."""
    return _DEPENDENCY_KINDS.get(target_kind, "calls")


@dataclass(frozen=True, slots=True)
class Evidence:
    """Where a declaration is: the reader (`compose`, `kubernetes`, `helm`, `backstage`,
    `codeowners`), the file within the repository (or the object, for a cluster), its line
    when known, and what it says in a few words (never a secret's value)."""

    reader: str
    file: str
    line: int | None = None
    detail: str | None = None


@dataclass(slots=True)
class DeclaredNode:
    """A node as declared: its name (what the graph joins on), kind, technology when the
    image or the catalog says (postgres, redis, kafka ...), other names it is known by
    (a Kubernetes Service's name, `OTEL_SERVICE_NAME`, a Backstage name), and attributes
    such as `owner`, `system`, `lifecycle`, `image`."""

    name: str
    kind: NodeKind
    technology: str | None = None
    aliases: set[str] = field(default_factory=set)
    attributes: dict[str, str] = field(default_factory=dict)
    evidence: list[Evidence] = field(default_factory=list)


@dataclass(slots=True)
class DeclaredEdge:
    source: str  # a node's name
    target: str
    kind: DeclaredEdgeKind
    evidence: list[Evidence] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file or part of one not read, and why (too large, unsafe YAML, not understood)."""

    file: str
    reason: str


@dataclass(frozen=True, slots=True)
class Reference:
    """A host a node names that its reader could not tell (a manifest's environment naming a
    service no manifest defines): another reader of the same repository may declare it
    (`ingest/repository.py` resolves these once every reader has read)."""

    source: str  # a node's name
    host: str
    evidence: Evidence


@dataclass(slots=True)
class Declared:
    """Nodes by name, edges by (source, target, kind): a second declaration of the same
    thing adds its evidence, never a second node or edge."""

    nodes: dict[str, DeclaredNode] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], DeclaredEdge] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)

    def node(
        self,
        name: str,
        kind: NodeKind,
        evidence: Evidence,
        *,
        technology: str | None = None,
    ) -> DeclaredNode:
        """The node named `name`, added if new; a service kind gives way to a more precise
        one (a `database` declared by its image stays a database)."""
        found = self.nodes.get(name)
        if found is None:
            found = self.nodes[name] = DeclaredNode(name, kind, technology)
        elif found.kind == "service" and kind != "service":
            found.kind = kind
        if technology and not found.technology:
            found.technology = technology
        if evidence not in found.evidence:
            found.evidence.append(evidence)
        return found

    def edge(
        self, source: str, target: str, kind: DeclaredEdgeKind, evidence: Evidence
    ) -> DeclaredEdge:
        key = (source, target, kind)
        found = self.edges.get(key)
        if found is None:
            found = self.edges[key] = DeclaredEdge(source, target, kind)
        if evidence not in found.evidence:
            found.evidence.append(evidence)
        return found

    def merge(self, other: Declared) -> None:
        """Add what `other` declares (another file, another reader) to this one."""
        for name, node in other.nodes.items():
            mine = self.nodes.setdefault(name, DeclaredNode(name, node.kind, node.technology))
            for ev in node.evidence:
                self.node(name, node.kind, ev, technology=node.technology)
            mine.aliases |= node.aliases
            for key, value in node.attributes.items():
                mine.attributes.setdefault(key, value)
        for edge in other.edges.values():
            for ev in edge.evidence:
                self.edge(edge.source, edge.target, edge.kind, ev)
        self.skipped.extend(other.skipped)
        self.references.extend(other.references)

    def dependencies(self) -> set[tuple[str, str]]:
        """Service-to-anything dependencies (calls, reads_writes, publishes, consumes), as
        (source, target) pairs: what recall and precision are measured on."""
        kinds = {"calls", "reads_writes", "publishes", "consumes"}
        return {(s, t) for (s, t, k) in self.edges if k in kinds}
