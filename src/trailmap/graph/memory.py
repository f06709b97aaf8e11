"""One organization's architecture graph held in memory, so that queries walk it without
touching the database; a snapshot never changes once built (docs/internals.md)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar, cast

import rustworkx as rx

from trailmap.graph.model import Edge, Node

__all__ = ["GraphSnapshot"]

_T = TypeVar("_T")


class GraphSnapshot:
    """Nodes and edges in dependency orientation (an edge points from the one that depends
    to the one it depends on), with the traffic measured on edges.

    Node `i` of `graph` is `nodes[i]` and edge `j` of `graph` is `edges[j]`, so algorithms
    can move between rustworkx indices and records without a lookup. Treat `graph` and
    everything returned as read-only: other requests share them.
    """

    __slots__ = (
        "_edge_index",
        "_edges",
        "_ends",
        "_in",
        "_lock",
        "_memo",
        "_node_index",
        "_nodes",
        "_out",
        "_traffic",
        "_version",
        "graph",
    )

    def __init__(
        self,
        nodes: Sequence[Node],
        edges: Sequence[Edge],
        traffic: Mapping[str, float] | None = None,
        *,
        version: Hashable = 0,
    ) -> None:
        """Raises ValueError when an id repeats or an edge names a node that is not given:
        a snapshot with holes would answer questions wrongly rather than fail."""
        self._nodes = tuple(nodes)
        self._edges = tuple(edges)
        self._version = version
        self._node_index: dict[str, int] = {}
        for i, node in enumerate(self._nodes):
            if self._node_index.setdefault(node.id, i) != i:
                raise ValueError(f"node {node.id} is given twice")
        self._edge_index: dict[str, int] = {}
        ends: list[tuple[int, int]] = []
        out: list[list[int]] = [[] for _ in self._nodes]
        into: list[list[int]] = [[] for _ in self._nodes]
        for j, edge in enumerate(self._edges):
            if self._edge_index.setdefault(edge.id, j) != j:
                raise ValueError(f"edge {edge.id} is given twice")
            try:
                source = self._node_index[edge.source_id]
                target = self._node_index[edge.target_id]
            except KeyError as missing:
                raise ValueError(f"edge {edge.id} names node {missing} that is not given") from None
            ends.append((source, target))
            out[source].append(j)
            into[target].append(j)
        self._ends: tuple[tuple[int, int], ...] = tuple(ends)
        self._out = tuple(tuple(js) for js in out)
        self._in = tuple(tuple(js) for js in into)
        # Traffic for edges the snapshot does not hold is dropped: it can only be stale.
        by_edge = traffic or {}
        self._traffic: tuple[float | None, ...] = tuple(by_edge.get(e.id) for e in self._edges)

        # Payloads are the records themselves; the positions above are what algorithms use.
        self.graph: rx.PyDiGraph[Node, Edge] = rx.PyDiGraph(multigraph=True)
        self.graph.add_nodes_from(self._nodes)
        self.graph.add_edges_from([(s, t, e) for (s, t), e in zip(ends, self._edges, strict=True)])

        self._memo: dict[Hashable, object] = {}
        # Reentrant: one memoized result may be built from another.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return (
            f"<GraphSnapshot version={self._version!r} "
            f"nodes={len(self._nodes)} edges={len(self._edges)}>"
        )

    # -- records by id ------------------------------------------------------------------

    @property
    def version(self) -> Hashable:
        """What the snapshot was built from, as its builder named it (opaque here)."""
        return self._version

    @property
    def nodes(self) -> tuple[Node, ...]:
        return self._nodes

    @property
    def edges(self) -> tuple[Edge, ...]:
        return self._edges

    def node(self, node_id: str) -> Node:
        """The node with this id; KeyError when the snapshot does not hold it."""
        return self._nodes[self._node_index[node_id]]

    def edge(self, edge_id: str) -> Edge:
        """The edge with this id; KeyError when the snapshot does not hold it."""
        return self._edges[self._edge_index[edge_id]]

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._node_index

    def out_edges(self, node_id: str) -> tuple[Edge, ...]:
        """Edges from this node to what it depends on."""
        return tuple(self._edges[j] for j in self._out[self._node_index[node_id]])

    def in_edges(self, node_id: str) -> tuple[Edge, ...]:
        """Edges from the nodes that depend on this one."""
        return tuple(self._edges[j] for j in self._in[self._node_index[node_id]])

    def traffic(self, edge_id: str) -> float | None:
        """Calls per minute over the last hour on this edge, None when not measured."""
        return self._traffic[self._edge_index[edge_id]]

    # -- positions, for algorithms ------------------------------------------------------

    def index_of(self, node_id: str) -> int:
        """The node's index in `graph` and `nodes`; KeyError when absent."""
        return self._node_index[node_id]

    def edge_index_of(self, edge_id: str) -> int:
        """The edge's index in `graph` and `edges`; KeyError when absent."""
        return self._edge_index[edge_id]

    @property
    def ends(self) -> tuple[tuple[int, int], ...]:
        """(source index, target index) of each edge, by edge index."""
        return self._ends

    @property
    def out_indices(self) -> tuple[tuple[int, ...], ...]:
        """Indices of each node's out-edges, by node index."""
        return self._out

    @property
    def in_indices(self) -> tuple[tuple[int, ...], ...]:
        """Indices of each node's in-edges, by node index."""
        return self._in

    @property
    def traffic_by_index(self) -> tuple[float | None, ...]:
        """Calls per minute of each edge, by edge index; None when not measured."""
        return self._traffic

    def with_traffic(self, traffic: Mapping[str, float]) -> GraphSnapshot:
        """The same graph with new traffic figures, sharing its structure. Kept results that
        depend on the topology alone (ranks by dependents, betweenness or PageRank, the
        search index) carry over, so they are computed once per graph version, not once per
        traffic refresh; those that read traffic are dropped."""
        clone = object.__new__(GraphSnapshot)
        for name in self.__slots__:
            setattr(clone, name, getattr(self, name))
        clone._traffic = tuple(traffic.get(e.id) for e in self._edges)
        with self._lock:
            clone._memo = {
                key: value for key, value in self._memo.items() if not _reads_traffic(key)
            }
        clone._lock = threading.RLock()
        return clone

    # -- memoized whole-graph results ---------------------------------------------------

    def memo(self, key: Hashable, compute: Callable[[], _T]) -> _T:
        """`compute()` the first time `key` is asked for, the kept result afterwards.

        Concurrent first calls wait for one computation rather than each running it: the
        results worth keeping (betweenness, for one) are the ones too slow to repeat. A
        result that reads traffic must have "traffic" in its key (a string, or one part of
        a tuple), so that `with_traffic` drops it.
        """
        try:
            return cast("_T", self._memo[key])
        except KeyError:
            pass
        with self._lock:
            if key not in self._memo:
                self._memo[key] = compute()
            return cast("_T", self._memo[key])


def _reads_traffic(key: Hashable) -> bool:
    parts = key if isinstance(key, tuple) else (key,)
    return "traffic" in parts
