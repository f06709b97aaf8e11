"""The blast radius of a node: everything that fails with it, counted at every depth, and the
nearest of it in detail: next hop toward the node, share of traffic (docs/performance.md)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain, compress

import rustworkx as rx

from trailmap.graph.ask import derived
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import Edge, Node

__all__ = ["BlastRadius", "DepthCount", "Impacted", "impact"]


@dataclass(frozen=True, slots=True)
class Impacted:
    node: Node
    depth: int  # hops from the failed node
    via: Node  # the next node toward the failed one on a shortest route
    edge: Edge  # the edge from `node` to `via`
    share: float | None  # of node's outgoing calls/min, what goes into the blast radius


@dataclass(frozen=True, slots=True)
class DepthCount:
    depth: int
    nodes: int  # how many impacted nodes are this many hops from the failed one
    services: int  # of them, services


@dataclass(frozen=True, slots=True)
class BlastRadius:
    by_depth: tuple[DepthCount, ...]  # depth 1, 2, ... to the deepest; none is empty
    impacted: tuple[Impacted, ...]  # the nearest, up to the limit asked for

    @property
    def count(self) -> int:
        """Every node that depends on the failed one, shown or not."""
        return sum(d.nodes for d in self.by_depth)

    @property
    def services(self) -> int:
        return sum(d.services for d in self.by_depth)

    @property
    def max_depth(self) -> int:
        return len(self.by_depth)

    @property
    def truncated(self) -> bool:
        """Whether `impacted` leaves some out."""
        return len(self.impacted) < self.count


def _services(snapshot: GraphSnapshot) -> tuple[bool, ...]:
    return snapshot.memo(
        (__name__, "services"), lambda: tuple(n.kind == "service" for n in snapshot.nodes)
    )


def impact(snapshot: GraphSnapshot, node_id: str, *, limit: int = 50) -> BlastRadius:
    """Everything that depends on the node, directly or not (a consumer depends on its
    topic): how many at each depth, and the nearest `limit` in detail, nearest first, then
    by name. `limit` may be 0 (counts only); a negative one raises ValueError.

    `share` is the part of a node's measured outgoing calls/min (to other nodes) that goes
    to the failed node or to other impacted nodes: how much of its work fails with them.
    None when its outgoing edges carry no measured traffic.
    """
    if limit < 0:
        raise ValueError("limit must be at least 0")
    failed = snapshot.index_of(node_id)
    runtime = derived.runtime(snapshot)
    layers = rx.bfs_layers(runtime.upstream, [failed])
    service = _services(snapshot)
    by_depth = tuple(
        DepthCount(hops, len(layer), sum(map(service.__getitem__, layer)))
        for hops, layer in enumerate(layers[1:], start=1)
    )
    if not limit or len(layers) < 2:
        return BlastRadius(by_depth, ())

    position = derived.name_positions(snapshot)
    traffic = derived.measured(snapshot)
    nodes, edges = snapshot.nodes, snapshot.edges
    reached = set(chain.from_iterable(layers))  # the failed node too: calls to it fail
    shown: list[Impacted] = []
    for hops, layer in enumerate(layers[1:], start=1):
        left = limit - len(shown)
        if left <= 0:
            break
        above = set(layers[hops - 1])
        for u in sorted(layer, key=position.__getitem__)[:left]:
            targets = runtime.depends_on[u]
            # Dependencies are in name order, so the first one a hop nearer is the via;
            # the search reached u over one of them, so there is one.
            k = next(k for k, v in enumerate(targets) if v in above)
            total = traffic.totals[u]
            inside = compress(
                map(traffic.calls.__getitem__, runtime.through[u]),
                map(reached.__contains__, targets),
            )
            share = sum(inside) / total if total else None
            shown.append(
                Impacted(nodes[u], hops, nodes[targets[k]], edges[runtime.through[u][k]], share)
            )
    return BlastRadius(by_depth, tuple(shown))
