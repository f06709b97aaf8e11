"""Which nodes matter most: by dependents, by dependency chains through them, by PageRank, or
by traffic; each measure runs once per snapshot (`GraphSnapshot.memo`), later calls slice it."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, get_args

import rustworkx as rx

from trailmap.graph.ask import derived
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import Node

__all__ = ["RANK_BY", "RankBy", "Ranked", "rank", "scores"]

RankBy = Literal["dependents", "betweenness", "pagerank", "traffic"]
RANK_BY: tuple[RankBy, ...] = get_args(RankBy)

# Scores are compared on a grid of about 1e-12, so that floating-point noise does not order
# nodes that tie. Adding 4096.0 does it in one float operation: the sum for a score under
# 4096 is a multiple of 2**-40 (9e-13); a larger score (a count, calls/min) loses at most
# its last bit. The sort then compares plain floats, its fastest case. (Cutting with
# int(score * 1e12) cost more, and put a cut exactly at each decimal figure, so traffic
# totals summed in different orders, 1345.5900000000001 and 1345.5899999999997, fell
# on either side of it.)
_GRID = 4096.0


@dataclass(frozen=True, slots=True)
class Ranked:
    node: Node
    score: float


def rank(
    snapshot: GraphSnapshot,
    *,
    by: RankBy,
    limit: int = 10,
    kinds: Collection[str] | None = ("service",),
    environment: str | None = None,
) -> list[Ranked]:
    """The nodes of `kinds` (None: all), in `environment` when given, that matter most, by
    one measure, highest first, equal scores in name order:

    - dependents: how many nodes depend on it, directly or not;
    - betweenness: how many shortest dependency chains run through it (normalized);
    - pagerank: PageRank over dependency edges, so a node that many nodes, or important
      ones, depend on ranks high (uniform teleport; a node with no dependencies spreads its
      rank uniformly, as in NetworkX);
    - traffic: calls/min on its incoming and outgoing edges together.

    Each measure runs once per snapshot; later calls only slice it.
    """
    if limit < 0:
        raise ValueError("limit must be at least 0")
    ranked, scores = _memoized(snapshot, by)
    nodes = snapshot.nodes
    result: list[Ranked] = []
    for i in ranked:
        if len(result) >= limit:
            break
        node = nodes[i]
        if (kinds is None or node.kind in kinds) and environment in (None, node.environment):
            result.append(Ranked(node, scores[i]))
    return result


def scores(snapshot: GraphSnapshot, by: RankBy) -> tuple[float, ...]:
    """Every node's score by one measure, by node index (see `rank`)."""
    return _memoized(snapshot, by)[1]


def _memoized(snapshot: GraphSnapshot, by: RankBy) -> tuple[tuple[int, ...], tuple[float, ...]]:
    if by not in RANK_BY:
        raise ValueError(f"by must be one of {', '.join(RANK_BY)}")
    return snapshot.memo((__name__, "rank", by), lambda: _ranking(snapshot, by))


def _ranking(snapshot: GraphSnapshot, by: RankBy) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Node indices, highest score first, and each node's score."""
    runtime = derived.runtime(snapshot)
    scores = [0.0] * len(snapshot.nodes)
    if by == "dependents":
        scores = [float(c) for c in _dependent_counts(runtime.graph)]
    elif by == "betweenness":
        for i, value in rx.digraph_betweenness_centrality(runtime.graph, normalized=True).items():
            scores[i] = value
    elif by == "pagerank":
        # rustworkx stops once the L1 change is under N x tol; its default tol (1e-6) lets
        # 10,000 nodes stop 0.01 away, enough to swap neighbours in the ranking.
        for i, value in rx.pagerank(runtime.graph, tol=1e-10, max_iter=1000).items():
            scores[i] = value
    else:
        for (source, target), calls in zip(snapshot.ends, snapshot.traffic_by_index, strict=True):
            if calls is not None:
                scores[source] += calls
                scores[target] += calls
    # Highest first (-4096 - score is exactly -(4096 + score)). The sort is stable: nodes
    # with equal scores keep their name order.
    keys = [-_GRID - score for score in scores]
    return tuple(sorted(derived.by_name(snapshot), key=keys.__getitem__)), tuple(scores)


def _dependent_counts(graph: rx.PyDiGraph[int, None]) -> list[int]:
    """How many nodes reach each node. On the condensation (one node per strongly connected
    component, a DAG) in topological order, each component's set of ancestors, as a bitset
    over node indices, is its members plus its predecessors' sets. A set is dropped once
    every successor has used it, so only the frontier is held."""
    condensed = rx.digraph_condensation(graph)
    counts = [0] * graph.num_nodes()
    reach: dict[int, int] = {}
    waiting: dict[int, int] = {}
    for c in rx.topological_sort(condensed):
        members: list[int] = condensed[c]
        bits = 0
        for v in members:
            bits |= 1 << v
        for p in set(condensed.predecessor_indices(c)):
            bits |= reach[p]
            waiting[p] -= 1
            if not waiting[p]:
                del reach[p], waiting[p]
        if successors := len(set(condensed.successor_indices(c))):
            reach[c], waiting[c] = bits, successors
        count = bits.bit_count() - 1
        for v in members:
            counts[v] = count
    return counts
