"""What the graph's questions (algorithms.py, impact.py, ranking.py) share: orderings and derived
graphs, computed once per snapshot and kept on it (`GraphSnapshot.memo`; docs/internals.md)."""

from __future__ import annotations

from dataclasses import dataclass

import rustworkx as rx

from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import DEPENDENCY_KINDS, EDGE_KINDS

__all__ = ["Measured", "Runtime", "by_name", "measured", "name_positions", "runtime"]


def _names(snapshot: GraphSnapshot) -> tuple[tuple[int, ...], tuple[int, ...]]:
    def compute() -> tuple[tuple[int, ...], tuple[int, ...]]:
        nodes = snapshot.nodes
        ordered = sorted(
            range(len(nodes)),
            key=lambda i: (nodes[i].name, nodes[i].kind, nodes[i].environment, nodes[i].id),
        )
        position = [0] * len(nodes)
        for place, i in enumerate(ordered):
            position[i] = place
        return tuple(ordered), tuple(position)

    return snapshot.memo((__name__, "names"), compute)


def by_name(snapshot: GraphSnapshot) -> tuple[int, ...]:
    """Node indices sorted by name, kind, environment and id: the tie-break everywhere."""
    return _names(snapshot)[0]


def name_positions(snapshot: GraphSnapshot) -> tuple[int, ...]:
    """Each node's place in `by_name`, by node index."""
    return _names(snapshot)[1]


_PREFERENCE = {kind: i for i, kind in enumerate(EDGE_KINDS)}


@dataclass(frozen=True, slots=True)
class Runtime:
    """The edges that carry failure (the dependency kinds of evidence.py: not ownership,
    placement, a Service in front of a workload or a catalog's APIs), arranged for each
    question."""

    graph: rx.PyDiGraph[int, None]  # dependency orientation, no self-loops or parallel edges
    upstream: rx.PyDiGraph[int, None]  # the same, reversed
    # By node: what it depends on, nearest name first, then the first kind in EDGE_KINDS
    # (a target appears once per edge kind); no self-loops. `through[u][k]` is the index
    # of the edge from u to `depends_on[u][k]`.
    depends_on: tuple[tuple[int, ...], ...]
    through: tuple[tuple[int, ...], ...]
    # By node: (next node, edge index) as requests flow (consumes reversed); between two
    # nodes, the edge of the first kind in EDGE_KINDS, then the least id.
    flow: tuple[list[tuple[int, int]], ...]
    flow_back: rx.PyDiGraph[int, None]  # flow orientation, reversed


def runtime(snapshot: GraphSnapshot) -> Runtime:
    """Topology only, so that it outlives a traffic refresh (GraphSnapshot.with_traffic)."""

    def compute() -> Runtime:
        position = name_positions(snapshot)
        edges, ends = snapshot.edges, snapshot.ends
        n, width = len(snapshot.nodes), len(EDGE_KINDS)
        preference = [_PREFERENCE[e.kind] for e in edges]
        runtime = [j for j, e in enumerate(edges) if e.kind in DEPENDENCY_KINDS]
        depends_on: list[list[int]] = [[] for _ in range(n)]
        through: list[list[int]] = [[] for _ in range(n)]
        for j in sorted(runtime, key=lambda j: position[ends[j][1]] * width + preference[j]):
            source, target = ends[j]
            if source != target:
                depends_on[source].append(target)
                through[source].append(j)
        chosen: dict[tuple[int, int], int] = {}
        for source, out in enumerate(through):
            for j in out:
                target = ends[j][1]
                pair = (target, source) if edges[j].kind == "consumes" else (source, target)
                held = chosen.setdefault(pair, j)
                if held != j and (preference[j], edges[j].id) < (preference[held], edges[held].id):
                    chosen[pair] = j
        flow: tuple[list[tuple[int, int]], ...] = tuple([] for _ in range(n))
        for (start, end), j in chosen.items():
            flow[start].append((end, j))

        graph: rx.PyDiGraph[int, None] = rx.PyDiGraph(multigraph=False)
        graph.add_nodes_from(range(n))
        graph.add_edges_from_no_data([(s, t) for s, out in enumerate(depends_on) for t in out])
        upstream = graph.copy()
        upstream.reverse()
        flow_back: rx.PyDiGraph[int, None] = rx.PyDiGraph(multigraph=False)
        flow_back.add_nodes_from(range(n))
        flow_back.add_edges_from_no_data([(end, start) for start, end in chosen])
        return Runtime(
            graph,
            upstream,
            tuple(map(tuple, depends_on)),
            tuple(map(tuple, through)),
            flow,
            flow_back,
        )

    return snapshot.memo((__name__, "runtime"), compute)


@dataclass(frozen=True, slots=True)
class Measured:
    """The traffic measured on what each node depends on."""

    calls: tuple[float, ...]  # by edge: calls/min, 0.0 when unmeasured
    # By node: the sum of its measured calls to what it depends on (Runtime.through), None
    # when none of those edges is measured.
    totals: tuple[float | None, ...]


def measured(snapshot: GraphSnapshot) -> Measured:
    """The key names traffic, so a traffic refresh drops it (GraphSnapshot.memo)."""

    def compute() -> Measured:
        traffic = snapshot.traffic_by_index
        totals: list[float | None] = [None] * len(snapshot.nodes)
        for source, out in enumerate(runtime(snapshot).through):
            for j in out:
                if (calls := traffic[j]) is not None:
                    totals[source] = (totals[source] or 0.0) + calls
        return Measured(tuple([0.0 if c is None else c for c in traffic]), tuple(totals))

    return snapshot.memo((__name__, "traffic", "measured"), compute)
