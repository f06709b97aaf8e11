"""The architecture graph's vocabulary: node kinds, edge kinds, and the node and edge records.
Which way an edge points, and which way requests flow: docs/opentelemetry.md."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = [
    "DEFAULT_ENVIRONMENT",
    "DEPENDENCY_KINDS",
    "EDGE_KINDS",
    "NODE_KINDS",
    "Edge",
    "EdgeKind",
    "Node",
    "NodeKind",
    "edge_id",
    "node_id",
]

NodeKind = Literal[
    "service",
    "database",
    "cache",
    "queue",
    "topic",
    "external_api",
    # A generative AI model provider (OpenAI, Anthropic, Bedrock ...), from GenAI spans.
    "ai_model",
    # Kinds that later sources (Kubernetes, GitHub/GitLab, Backstage) add.
    "endpoint",
    "repository",
    "team",
    "cluster",
    "namespace",
    "workload",
    "environment",
]
NODE_KINDS: tuple[NodeKind, ...] = get_args(NodeKind)

EdgeKind = Literal[
    "calls",
    "reads_writes",
    "publishes",
    "consumes",
    "depends_on",
    "owned_by",
    "runs_in",
    "part_of",
    # Kinds only declarations add (graph/declared.py): an order of start, not traffic; a
    # Backstage API provided or consumed; a Kubernetes Service or Ingress in front of a workload.
    "starts_after",
    "provides_api",
    "consumes_api",
    "exposes",
]
EDGE_KINDS: tuple[EdgeKind, ...] = get_args(EdgeKind)
# The edges that carry failure and requests, which the graph's questions walk: the rest
# (ownership, placement, a Service in front of a workload, a catalog's APIs) are facts about
# a node (docs/declared-graph.md, "Questions"). `starts_after` is the weakest of them.
DEPENDENCY_KINDS: frozenset[EdgeKind] = frozenset(
    {"calls", "reads_writes", "publishes", "consumes", "depends_on", "starts_after"}
)

# Where a span without `deployment.environment.name` is placed.
DEFAULT_ENVIRONMENT = "default"

# Node and edge ids are derived from what they are, so that any app node computes the same
# id for the same thing without asking the database first.
_NAMESPACE = uuid.UUID("6f1c54d4-5a55-4d0b-9d43-5f6f4f0a7c11")


def node_id(org_id: str, kind: str, environment: str, name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{org_id}\x1f{kind}\x1f{environment}\x1f{name}"))


def edge_id(org_id: str, source_id: str, target_id: str, kind: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{org_id}\x1f{source_id}\x1f{target_id}\x1f{kind}"))


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    kind: NodeKind
    name: str
    environment: str
    first_seen_us: int
    last_seen_us: int
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    sources: tuple[str, ...] = ("otel",)


@dataclass(frozen=True, slots=True)
class Edge:
    id: str
    source_id: str
    target_id: str
    kind: EdgeKind
    first_seen_us: int
    last_seen_us: int
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    sources: tuple[str, ...] = ("otel",)
