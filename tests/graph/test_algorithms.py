"""Tests for the graph algorithms: each against an answer worked out independently with
NetworkX (or by hand) on generated graphs, then the small cases that matter by name."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import islice, pairwise

import networkx as nx
import pytest
import rustworkx as rx
from hypothesis import given, settings
from hypothesis import strategies as st

from trailmap.graph.ask import algorithms
from trailmap.graph.ask.algorithms import (
    find_paths,
    impact,
    mermaid,
    rank,
    search,
    traverse,
)
from trailmap.graph.ask.evidence import DEPENDENCY_KINDS, only
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import EDGE_KINDS, Edge, EdgeKind, Node, NodeKind, edge_id, node_id

ORG = "org-test"


def make_node(name: str, kind: NodeKind = "service", environment: str = "production") -> Node:
    return Node(node_id(ORG, kind, environment, name), kind, name, environment, 1, 2)


def make_edge(source: Node, target: Node, kind: EdgeKind = "calls") -> Edge:
    return Edge(edge_id(ORG, source.id, target.id, kind), source.id, target.id, kind, 1, 2)


def key(node: Node) -> tuple[str, str, str, str]:
    """The documented tie-break: name, then kind, environment and id."""
    return (node.name, node.kind, node.environment, node.id)


# -- generated graphs and their NetworkX twins -------------------------------------------

_KINDS: tuple[NodeKind, ...] = ("service", "service", "service", "database", "topic", "team")


@dataclass
class Generated:
    snapshot: GraphSnapshot
    nodes: list[Node]
    edges: list[Edge]
    traffic: dict[str, float]

    def multigraph(self, kinds: Sequence[str] | None = None) -> nx.MultiDiGraph[str]:
        graph: nx.MultiDiGraph[str] = nx.MultiDiGraph()
        graph.add_nodes_from(n.id for n in self.nodes)
        for e in self.edges:
            if kinds is None or e.kind in kinds:
                graph.add_edge(e.source_id, e.target_id)
        return graph

    def runtime(self, *, flow: bool = False) -> nx.DiGraph[str]:
        """Ownership left out and no self-loops; with `flow`, consumes edges reversed."""
        graph: nx.DiGraph[str] = nx.DiGraph()
        graph.add_nodes_from(n.id for n in self.nodes)
        for e in self.edges:
            if e.kind not in DEPENDENCY_KINDS or e.source_id == e.target_id:
                continue
            if flow and e.kind == "consumes":
                graph.add_edge(e.target_id, e.source_id)
            else:
                graph.add_edge(e.source_id, e.target_id)
        return graph


@st.composite
def graphs(draw: st.DrawFn, max_nodes: int = 14, max_edges: int = 40) -> Generated:
    # Few names, so that ties are common and the tie-break is exercised; the environment
    # keeps ids apart.
    count = draw(st.integers(3, max_nodes))
    nodes = [
        make_node(draw(st.sampled_from("abcd")), draw(st.sampled_from(_KINDS)), f"e{i}")
        for i in range(count)
    ]
    triples = draw(
        st.lists(
            st.tuples(
                st.integers(0, count - 1), st.integers(0, count - 1), st.sampled_from(EDGE_KINDS)
            ),
            max_size=max_edges,
            unique=True,
        )
    )
    edges = [make_edge(nodes[s], nodes[t], kind) for s, t, kind in triples]
    measured = draw(st.lists(st.booleans(), min_size=len(edges), max_size=len(edges)))
    calls = draw(st.lists(st.integers(0, 50), min_size=len(edges), max_size=len(edges)))
    traffic = {e.id: float(c) for e, m, c in zip(edges, measured, calls, strict=True) if m}
    return Generated(GraphSnapshot(nodes, edges, traffic), nodes, edges, traffic)


_PROPERTY = settings(max_examples=60, deadline=None)


# -- traverse ----------------------------------------------------------------------------


@_PROPERTY
@given(
    graphs(),
    st.sampled_from(["downstream", "upstream", "both"]),
    st.integers(0, 4),
    st.none() | st.lists(st.sampled_from(EDGE_KINDS), min_size=1, unique=True),
    st.data(),
)
def test_traverse_reaches_what_networkx_reaches_at_the_same_depths(
    g: Generated,
    direction: algorithms.Direction,
    max_depth: int,
    edge_kinds: list[str] | None,
    data: st.DataObject,
) -> None:
    start = data.draw(st.sampled_from(g.nodes))
    graph = g.multigraph(edge_kinds)
    walked = {"downstream": graph, "upstream": graph.reverse(), "both": graph.to_undirected()}
    expected = nx.single_source_shortest_path_length(walked[direction], start.id, max_depth)

    found = traverse(
        g.snapshot, start.id, direction=direction, max_depth=max_depth, edge_kinds=edge_kinds
    )

    assert {r.node.id: r.depth for r in found.nodes} == expected
    assert found.nodes[0].node == start
    assert [(r.depth, key(r.node)) for r in found.nodes] == sorted(
        (r.depth, key(r.node)) for r in found.nodes
    )
    # An edge is walked when the walk stood on its near end before the last step.
    near = {"downstream": ["source_id"], "upstream": ["target_id"]}
    sides = near.get(direction, ["source_id", "target_id"])
    assert {e.id for e in found.edges} == {
        e.id
        for e in g.edges
        if (edge_kinds is None or e.kind in edge_kinds)
        and any(expected.get(getattr(e, side), max_depth) < max_depth for side in sides)
    }


@_PROPERTY
@given(graphs(), st.lists(st.sampled_from(_KINDS), min_size=1, unique=True), st.data())
def test_traverse_passes_through_nodes_of_other_kinds_without_listing_them(
    g: Generated, node_kinds: list[str], data: st.DataObject
) -> None:
    start = data.draw(st.sampled_from(g.nodes))
    everything = traverse(g.snapshot, start.id, direction="both", max_depth=3)
    some = traverse(g.snapshot, start.id, direction="both", max_depth=3, node_kinds=node_kinds)

    assert list(some.nodes) == [
        r for r in everything.nodes if r.node == start or r.node.kind in node_kinds
    ]
    listed = {r.node.id for r in some.nodes}
    assert list(some.edges) == [
        e for e in everything.edges if e.source_id in listed and e.target_id in listed
    ]


def test_traverse_of_depth_zero_is_only_the_start() -> None:
    a, b = make_node("a"), make_node("b")
    snapshot = GraphSnapshot([a, b], [make_edge(a, b)], {})

    found = traverse(snapshot, a.id, direction="both", max_depth=0)

    assert found.nodes == (algorithms.Reached(a, 0),)
    assert found.edges == ()


def test_traverse_refuses_a_negative_depth_and_an_unknown_direction() -> None:
    a = make_node("a")
    snapshot = GraphSnapshot([a], [], {})
    with pytest.raises(ValueError, match="max_depth"):
        traverse(snapshot, a.id, direction="both", max_depth=-1)
    with pytest.raises(ValueError, match="direction"):
        traverse(snapshot, a.id, direction="sideways", max_depth=1)  # type: ignore[arg-type]


# -- find_paths --------------------------------------------------------------------------


def _best_paths(g: Generated, source: Node, target: Node, k: int, depth: int) -> list[list[str]]:
    """Every simple flow path, sorted by length and then by its nodes' names: the first k."""
    by_id = {n.id: n for n in g.nodes}
    flow = g.runtime(flow=True)
    paths = [[source.id]] if source == target else []
    if source != target:
        paths = list(nx.all_simple_paths(flow, source.id, target.id, cutoff=depth))
    paths.sort(key=lambda p: (len(p), [key(by_id[i]) for i in p]))
    return paths[:k]


def _flow_edge(g: Generated, start: str, end: str) -> Edge:
    """The edge a route takes from start to end: the first kind in EDGE_KINDS, then id."""
    candidates = [
        e
        for e in g.edges
        if e.kind in DEPENDENCY_KINDS
        and (e.source_id, e.target_id) == ((end, start) if e.kind == "consumes" else (start, end))
    ]
    return min(candidates, key=lambda e: (EDGE_KINDS.index(e.kind), e.id))


@_PROPERTY
@given(graphs(max_nodes=10, max_edges=30), st.integers(1, 5), st.integers(1, 6), st.data())
def test_find_paths_gives_the_shortest_loopless_flow_paths_in_name_order(
    g: Generated, max_paths: int, max_depth: int, data: st.DataObject
) -> None:
    source = data.draw(st.sampled_from(g.nodes))
    target = data.draw(st.sampled_from(g.nodes))

    found = find_paths(g.snapshot, source.id, target.id, max_paths=max_paths, max_depth=max_depth)

    assert [[n.id for n in p.nodes] for p in found] == _best_paths(
        g, source, target, max_paths, max_depth
    )
    for path in found:
        ids = [n.id for n in path.nodes]
        assert list(path.edges) == [_flow_edge(g, a, b) for a, b in pairwise(ids)]


@settings(max_examples=25, deadline=None)
@given(graphs(max_nodes=40, max_edges=160), st.data())
def test_find_paths_lengths_agree_with_networkx_shortest_simple_paths(
    g: Generated, data: st.DataObject
) -> None:
    source, target = data.draw(st.sampled_from(g.nodes)), data.draw(st.sampled_from(g.nodes))
    flow = g.runtime(flow=True)
    expected: list[int] = []
    if source != target and nx.has_path(flow, source.id, target.id):
        shortest = nx.shortest_simple_paths(flow, source.id, target.id)
        expected = [len(p) - 1 for p in islice(shortest, 4) if len(p) - 1 <= 12]

    found = find_paths(g.snapshot, source.id, target.id, max_paths=4, max_depth=12)

    assert [len(p.edges) for p in found] == (expected if source != target else [0])


def test_find_paths_walks_a_consumes_edge_from_the_topic_to_the_consumer() -> None:
    orders, events, shipping = (
        make_node("orders"),
        make_node("order-events", "topic"),
        make_node("shipping"),
    )
    publishes, consumes = (
        make_edge(orders, events, "publishes"),
        make_edge(shipping, events, "consumes"),
    )
    snapshot = GraphSnapshot([orders, events, shipping], [publishes, consumes], {})

    [path] = find_paths(snapshot, orders.id, shipping.id)

    assert path.nodes == (orders, events, shipping)
    assert path.edges == (publishes, consumes)
    assert find_paths(snapshot, shipping.id, orders.id) == []


def test_find_paths_does_not_go_round_a_cycle_and_respects_max_depth() -> None:
    a, b, c, d = (make_node(x) for x in "abcd")
    edges = [make_edge(a, b), make_edge(b, c), make_edge(c, a), make_edge(c, d), make_edge(b, d)]
    snapshot = GraphSnapshot([a, b, c, d], edges, {})

    found = find_paths(snapshot, a.id, d.id, max_paths=10)

    assert [[n.name for n in p.nodes] for p in found] == [["a", "b", "d"], ["a", "b", "c", "d"]]
    assert find_paths(snapshot, a.id, d.id, max_depth=1) == []
    assert find_paths(snapshot, a.id, a.id) == [algorithms.Path((a,), ())]
    assert find_paths(snapshot, a.id, d.id, max_paths=0) == []


def test_find_paths_gives_up_in_a_cluster_whose_only_way_out_is_back_through_the_start() -> None:
    # Every route into the cluster looks three hops from the target (back through the start,
    # which a loopless route cannot revisit), so the search would try every ordering of it.
    start, middle, target = make_node("start"), make_node("middle"), make_node("target")
    cluster = [make_node(f"k{i:02d}") for i in range(14)]
    edges = [make_edge(start, middle), make_edge(middle, target)]
    edges += [make_edge(start, k) for k in cluster] + [make_edge(k, start) for k in cluster]
    edges += [make_edge(a, b) for a in cluster for b in cluster if a != b]
    snapshot = GraphSnapshot([start, middle, target, *cluster], edges, {})

    found = find_paths(snapshot, start.id, target.id, max_paths=3, max_depth=10)

    assert [[n.name for n in p.nodes] for p in found] == [["start", "middle", "target"]]


def test_find_paths_returns_what_it_found_when_its_budget_runs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, c, d = (make_node(x) for x in "abcd")
    edges = [make_edge(a, b), make_edge(a, c), make_edge(b, d), make_edge(c, d)]
    snapshot = GraphSnapshot([a, b, c, d], edges, {})
    monkeypatch.setattr(algorithms, "_PATH_BUDGET", 3)

    found = find_paths(snapshot, a.id, d.id, max_paths=3)

    assert [[n.name for n in p.nodes] for p in found] == [["a", "b", "d"]]


def test_find_paths_leaves_ownership_out() -> None:
    a, b, team = make_node("a"), make_node("b"), make_node("payments", "team")
    edges = [make_edge(a, team, "owned_by"), make_edge(team, b, "owned_by")]
    snapshot = GraphSnapshot([a, b, team], edges, {})

    assert find_paths(snapshot, a.id, b.id) == []


def test_placement_apis_and_exposure_are_not_dependencies_but_starting_after_is() -> None:
    """Two services in one namespace, one exposed by a Service, both providing an API: none
    of it makes one fail with the other; waiting for a peer to start does."""
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    ns, api = make_node("shop", "namespace"), make_node("orders-api", "endpoint")
    edges = [
        make_edge(a, ns, "runs_in"),
        make_edge(b, ns, "runs_in"),
        make_edge(ns, b, "part_of"),
        make_edge(a, api, "provides_api"),
        make_edge(b, api, "consumes_api"),
        make_edge(api, a, "exposes"),
        make_edge(c, b, "starts_after"),
    ]
    snapshot = GraphSnapshot([a, b, c, ns, api], edges, {})

    assert [i.node.name for i in impact(snapshot, a.id).impacted] == []
    assert [i.node.name for i in impact(snapshot, b.id).impacted] == ["c"]
    assert find_paths(snapshot, b.id, a.id) == []
    assert [n.name for n in find_paths(snapshot, c.id, b.id)[0].nodes] == ["c", "b"]
    assert [r.node.name for r in rank(snapshot, by="dependents", limit=1)] == ["b"]


# -- impact ------------------------------------------------------------------------------


@_PROPERTY
@given(graphs(), st.data())
def test_impact_is_every_transitive_dependent_with_depth_via_and_share(
    g: Generated, data: st.DataObject
) -> None:
    failed = data.draw(st.sampled_from(g.nodes))
    by_id = {n.id: n for n in g.nodes}
    runtime = g.runtime()
    to_failed = nx.single_target_shortest_path_length(runtime, failed.id)
    distance = dict(to_failed)

    blast = impact(g.snapshot, failed.id, limit=len(g.nodes))
    found = blast.impacted

    assert {i.node.id for i in found} == nx.ancestors(runtime, failed.id)
    assert not blast.truncated
    assert [(i.depth, key(i.node)) for i in found] == sorted((i.depth, key(i.node)) for i in found)
    for item in found:
        u = item.node.id
        assert item.depth == distance[u]
        candidates = [
            e
            for e in g.edges
            if e.source_id == u
            and e.kind in DEPENDENCY_KINDS
            and e.target_id != u
            and distance.get(e.target_id) == item.depth - 1
        ]
        best = min(
            candidates, key=lambda e: (key(by_id[e.target_id]), EDGE_KINDS.index(e.kind), e.id)
        )
        assert (item.via.id, item.edge) == (best.target_id, best)
        measured = [
            e
            for e in g.edges
            if e.source_id == u
            and e.target_id != u
            and e.kind in DEPENDENCY_KINDS
            and e.id in g.traffic
        ]
        total = sum(g.traffic[e.id] for e in measured)
        inside = sum(g.traffic[e.id] for e in measured if e.target_id in distance)
        assert item.share == (pytest.approx(inside / total) if total else None)


@_PROPERTY
@given(graphs(), st.integers(0, 6), st.data())
def test_impact_counts_every_depth_and_lists_the_nearest_up_to_the_limit(
    g: Generated, limit: int, data: st.DataObject
) -> None:
    failed = data.draw(st.sampled_from(g.nodes))
    distance = dict(nx.single_target_shortest_path_length(g.runtime(), failed.id))
    dependents = [v for v, hops in distance.items() if hops > 0]
    kind = {n.id: n.kind for n in g.nodes}
    deepest = max(distance.values())
    everything = impact(g.snapshot, failed.id, limit=len(g.nodes)).impacted

    blast = impact(g.snapshot, failed.id, limit=limit)

    assert [(d.depth, d.nodes, d.services) for d in blast.by_depth] == [
        (
            depth,
            sum(1 for hops in distance.values() if hops == depth),
            sum(1 for v, hops in distance.items() if hops == depth and kind[v] == "service"),
        )
        for depth in range(1, deepest + 1)
    ]
    assert blast.count == len(dependents)
    assert blast.services == sum(1 for v in dependents if kind[v] == "service")
    assert blast.max_depth == deepest
    assert blast.impacted == everything[:limit]
    assert blast.truncated == (len(dependents) > limit)


def test_impact_refuses_a_negative_limit() -> None:
    a = make_node("a")
    with pytest.raises(ValueError, match="limit"):
        impact(GraphSnapshot([a], [], {}), a.id, limit=-1)


def test_impact_reaches_consumers_through_their_topic() -> None:
    events, shipping, billing = (
        make_node("order-events", "topic"),
        make_node("shipping"),
        make_node("billing"),
    )
    consumes, calls = make_edge(shipping, events, "consumes"), make_edge(billing, shipping)
    snapshot = GraphSnapshot([events, shipping, billing], [consumes, calls], {calls.id: 30.0})

    found = impact(snapshot, events.id).impacted

    assert found == (
        algorithms.Impacted(shipping, 1, events, consumes, None),
        algorithms.Impacted(billing, 2, shipping, calls, 1.0),
    )


def test_impact_share_counts_only_calls_into_the_blast_radius() -> None:
    db, orders, lookup, web = (
        make_node("db", "database"),
        make_node("orders"),
        make_node("search"),
        make_node("web"),
    )
    web_orders, web_search, orders_db = (
        make_edge(web, orders),
        make_edge(web, lookup),
        make_edge(orders, db, "reads_writes"),
    )
    traffic = {web_orders.id: 25.0, web_search.id: 75.0, orders_db.id: 10.0}
    snapshot = GraphSnapshot(
        [db, orders, lookup, web], [web_orders, web_search, orders_db], traffic
    )

    shares = {i.node.name: i.share for i in impact(snapshot, db.id).impacted}

    assert shares == {"orders": 1.0, "web": 0.25}


def test_impact_of_a_node_in_a_cycle_does_not_list_the_node_itself() -> None:
    a, b, c = (make_node(x) for x in "abc")
    snapshot = GraphSnapshot([a, b, c], [make_edge(a, b), make_edge(b, c), make_edge(c, a)], {})

    assert [(i.node.name, i.depth, i.via.name) for i in impact(snapshot, a.id).impacted] == [
        ("c", 1, "a"),
        ("b", 2, "c"),
    ]


# -- rank --------------------------------------------------------------------------------


def _power_iteration(graph: nx.DiGraph[str], alpha: float = 0.85) -> dict[str, float]:
    """PageRank with uniform teleport and dangling nodes spread uniformly, written out."""
    n = graph.number_of_nodes()
    rank_ = dict.fromkeys(graph, 1 / n)
    for _ in range(2000):
        dangling = sum(rank_[v] for v in graph if graph.out_degree(v) == 0)
        new = dict.fromkeys(graph, (1 - alpha) / n + alpha * dangling / n)
        for u in graph:
            share = alpha * rank_[u] / max(graph.out_degree(u), 1)
            for v in graph.successors(u):
                new[v] += share
        done = sum(abs(new[v] - rank_[v]) for v in graph) < 1e-13
        rank_ = new
        if done:
            break
    return rank_


def _expected_scores(g: Generated, by: algorithms.RankBy) -> dict[str, float]:
    runtime = g.runtime()
    if by == "dependents":
        return {v: float(len(nx.ancestors(runtime, v))) for v in runtime}
    if by == "betweenness":
        return dict(nx.betweenness_centrality(runtime, normalized=True))
    if by == "pagerank":
        return _power_iteration(runtime)
    totals = dict.fromkeys(runtime, 0.0)
    for e in g.edges:
        if e.id in g.traffic:
            totals[e.source_id] += g.traffic[e.id]
            totals[e.target_id] += g.traffic[e.id]
    return totals


@_PROPERTY
@given(graphs(max_nodes=25, max_edges=80), st.sampled_from(algorithms.RANK_BY))
def test_rank_scores_match_networkx_and_are_ordered_by_score_then_name(
    g: Generated, by: algorithms.RankBy
) -> None:
    expected = _expected_scores(g, by)

    found = rank(g.snapshot, by=by, limit=len(g.nodes), kinds=None)

    assert len(found) == len(g.nodes)
    for item in found:
        assert item.score == pytest.approx(expected[item.node.id], abs=1e-7)
    # Highest score first; scores equal but for floating-point noise in name order.
    for higher, lower in pairwise(found):
        assert higher.score >= lower.score - 1e-12
        if abs(higher.score - lower.score) < 1e-13:
            assert key(higher.node) < key(lower.node)


@_PROPERTY
@given(graphs(), st.lists(st.sampled_from(_KINDS), min_size=1, unique=True), st.integers(0, 5))
def test_rank_keeps_only_the_kinds_asked_for_up_to_the_limit(
    g: Generated, kinds: list[str], limit: int
) -> None:
    everything = rank(g.snapshot, by="dependents", limit=len(g.nodes), kinds=None)

    found = rank(g.snapshot, by="dependents", limit=limit, kinds=kinds)

    assert found == [r for r in everything if r.node.kind in kinds][:limit]


def test_rank_keeps_only_the_environment_asked_for_and_scores_give_every_node() -> None:
    db = make_node("db", "database")
    live = [make_node(f"live-{i}") for i in range(3)]
    staged = [make_node(f"staged-{i}", environment="staging") for i in range(3)]
    edges = [make_edge(s, db, "reads_writes") for s in live + staged]
    edges += [make_edge(live[0], live[1]), make_edge(staged[0], staged[2])]
    snapshot = GraphSnapshot([db, *live, *staged], edges, {})

    found = rank(snapshot, by="dependents", limit=2, environment="staging")

    assert found == [algorithms.Ranked(staged[2], 1.0), algorithms.Ranked(staged[0], 0.0)]
    everything = rank(snapshot, by="dependents", limit=len(edges), kinds=None)
    scores = algorithms.scores(snapshot, "dependents")
    assert {r.node.id: r.score for r in everything} == {
        n.id: scores[snapshot.index_of(n.id)] for n in snapshot.nodes
    }


def test_rank_ties_traffic_totals_that_differ_only_by_the_order_they_were_summed() -> None:
    a, b = make_node("a"), make_node("b")
    callers = [make_node(f"caller-{i}") for i in range(6)]
    edges = [make_edge(c, b) for c in callers[:3]] + [make_edge(c, a) for c in callers[3:]]
    # Into b: 0.1 + 0.2 + 0.7 = 1.0; into a: 0.2 + 0.7 + 0.1 = 0.9999999999999999.
    calls = [0.1, 0.2, 0.7, 0.2, 0.7, 0.1]
    traffic = {e.id: c for e, c in zip(edges, calls, strict=True)}
    snapshot = GraphSnapshot([*callers, b, a], edges, traffic)

    found = rank(snapshot, by="traffic", limit=2)

    assert [(r.node, r.score) for r in found] == [(a, 0.9999999999999999), (b, 1.0)]


def test_rank_runs_each_measure_once_per_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real: Callable[..., rx.CentralityMapping] = rx.digraph_betweenness_centrality

    def counting(*args: object, **kwargs: object) -> rx.CentralityMapping:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rx, "digraph_betweenness_centrality", counting)
    a, b, c = (make_node(x) for x in "abc")
    snapshot = GraphSnapshot([a, b, c], [make_edge(a, b), make_edge(b, c)], {})

    first = rank(snapshot, by="betweenness", limit=3)
    again = rank(snapshot, by="betweenness", limit=1)
    fresh = rank(GraphSnapshot([a, b, c], [make_edge(a, b), make_edge(b, c)], {}), by="betweenness")

    assert [r.node for r in first] == [b, a, c]
    assert again == first[:1]
    assert fresh == first
    assert len(calls) == 2


def test_a_traffic_refresh_keeps_topology_results_and_recomputes_traffic_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real: Callable[..., rx.CentralityMapping] = rx.digraph_betweenness_centrality

    def counting(*args: object, **kwargs: object) -> rx.CentralityMapping:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rx, "digraph_betweenness_centrality", counting)
    db, orders, web = make_node("db", "database"), make_node("orders"), make_node("web")
    web_orders, web_db, orders_db = (
        make_edge(web, orders),
        make_edge(web, db),
        make_edge(orders, db, "reads_writes"),
    )
    before = GraphSnapshot([db, orders, web], [web_orders, web_db, orders_db], {web_db.id: 5.0})
    assert [i.share for i in impact(before, orders.id).impacted] == [0.0]
    assert rank(before, by="traffic", limit=1, kinds=None)[0] == algorithms.Ranked(db, 5.0)
    betweenness = rank(before, by="betweenness")

    after = before.with_traffic({web_orders.id: 30.0, web_db.id: 10.0})

    assert [i.share for i in impact(after, orders.id).impacted] == [0.75]
    assert rank(after, by="traffic", limit=1, kinds=None)[0] == algorithms.Ranked(web, 40.0)
    assert rank(after, by="betweenness") == betweenness
    assert len(calls) == 1


def test_rank_puts_what_many_depend_on_first_by_pagerank_and_dependents() -> None:
    db, core = make_node("db", "database"), make_node("core")
    callers = [make_node(f"caller-{i}") for i in range(5)]
    edges = [make_edge(c, core) for c in callers] + [make_edge(core, db, "reads_writes")]
    snapshot = GraphSnapshot([db, core, *callers], edges, {})

    assert rank(snapshot, by="pagerank", limit=1)[0].node == core
    assert rank(snapshot, by="dependents", limit=1)[0] == algorithms.Ranked(core, 5.0)
    assert rank(snapshot, by="dependents", limit=1, kinds=None)[0] == algorithms.Ranked(db, 6.0)


def test_rank_refuses_an_unknown_measure_and_a_negative_limit() -> None:
    snapshot = GraphSnapshot([make_node("a")], [], {})
    with pytest.raises(ValueError, match="by must be"):
        rank(snapshot, by="fame")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        rank(snapshot, by="traffic", limit=-1)


# -- search ------------------------------------------------------------------------------


def _catalogue() -> GraphSnapshot:
    names: list[tuple[str, NodeKind, str]] = [
        ("orders", "service", "production"),
        ("orders", "service", "staging"),
        ("order-events", "topic", "production"),
        ("checkout-service", "service", "production"),
        ("payments-service", "service", "production"),
        ("postgresql", "database", "production"),
        ("PaymentGateway", "external_api", "production"),
        ("shipping", "service", "production"),
    ]
    return GraphSnapshot([make_node(n, k, env) for n, k, env in names], [], {})


def _found(matches: list[algorithms.Match]) -> list[tuple[str, str]]:
    return [(m.node.name, m.reason) for m in matches]


def test_search_ranks_exact_then_prefix_then_substring() -> None:
    found = search(_catalogue(), "Orders")

    assert _found(found) == [("orders", "exact"), ("orders", "exact"), ("order-events", "tokens")]
    assert [m.node.environment for m in found][:2] == ["production", "staging"]
    assert _found(search(_catalogue(), "order"))[:3] == [
        ("orders", "prefix"),
        ("orders", "prefix"),
        ("order-events", "prefix"),
    ]
    assert _found(search(_catalogue(), "events")) == [("order-events", "substring")]


def test_search_forgives_plurals_separators_case_and_spelling() -> None:
    snapshot = _catalogue()

    assert _found(search(snapshot, "order service"))[0] == ("orders", "tokens")
    assert _found(search(snapshot, "postgres")) == [("postgresql", "prefix")]
    assert _found(search(snapshot, "payment gateway"))[0] == ("PaymentGateway", "exact")
    assert _found(search(snapshot, "shiping")) == [("shipping", "similar")]
    assert search(snapshot, "pg") == []


def test_search_filters_by_kind_and_environment_and_honours_limit() -> None:
    snapshot = _catalogue()

    assert _found(search(snapshot, "order", kinds=["topic"])) == [("order-events", "prefix")]
    assert [m.node.environment for m in search(snapshot, "orders", environment="staging")] == [
        "staging"
    ]
    assert len(search(snapshot, "service", limit=1)) == 1
    assert search(snapshot, "orders", limit=0) == []
    assert search(snapshot, "  ") == []
    with pytest.raises(ValueError, match="limit"):
        search(snapshot, "orders", limit=-1)


def test_search_finds_the_nodes_of_the_kind_a_query_names_below_any_name_match() -> None:
    snapshot = _catalogue()

    for query in ("database", "Databases", "the database", "db", "DBs"):
        assert _found(search(snapshot, query)) == [("postgresql", "kind")], query
    assert _found(search(snapshot, "external APIs")) == [("PaymentGateway", "kind")]
    assert _found(search(snapshot, "external_api")) == [("PaymentGateway", "kind")]
    # A name holding the word comes first; then every other node of the kind, by name.
    assert _found(search(snapshot, "service")) == [
        ("checkout-service", "substring"),
        ("payments-service", "substring"),
        ("orders", "kind"),
        ("orders", "kind"),
        ("shipping", "kind"),
    ]
    assert [m.node.name for m in search(snapshot, "services")] == [
        "checkout-service",
        "orders",
        "orders",
        "payments-service",
        "shipping",
    ]
    assert _found(search(snapshot, "topics", kinds=["database"])) == []
    # Only the whole query names a kind: words around it are a name.
    assert search(snapshot, "database proxy") == []
    assert algorithms.kind_named("the queues") == "queue"
    assert algorithms.kind_named("repos") == "repository"
    assert algorithms.kind_named("order service") is None


def test_search_finds_a_node_by_its_id() -> None:
    snapshot = _catalogue()
    shipping = next(n for n in snapshot.nodes if n.name == "shipping")

    assert search(snapshot, shipping.id) == [algorithms.Match(shipping, 1.0, "id")]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=12), st.text(max_size=8))
def test_search_orders_by_score_then_name_whatever_the_names(names: list[str], query: str) -> None:
    nodes = [make_node(name, environment=f"e{i}") for i, name in enumerate(names)]
    snapshot = GraphSnapshot(nodes, [], {})

    found = search(snapshot, query, limit=len(nodes))

    assert [(-m.score, key(m.node)) for m in found] == sorted(
        (-m.score, key(m.node)) for m in found
    )
    assert all(0 < m.score <= 1 for m in found)


# -- mermaid -----------------------------------------------------------------------------

_LABEL = r'[^"\[\]{}()|<>]*(<br/>[^"\[\]{}()|<>]*)?'
_NODE_LINE = re.compile(
    rf'^    n\d+(\("|\[\("|\[\["|\{{\{{"|\["){_LABEL}("\)|"\)\]|"\]\]|"\}}\}}|"\])$'
)
_EDGE_LINE = re.compile(rf'^    n\d+ -->\|"{_LABEL}"\| n\d+$')


def test_mermaid_draws_shapes_labels_and_traffic_deterministically() -> None:
    checkout, db, topic, stripe = (
        make_node("checkout"),
        make_node("orders-db", "database"),
        make_node("order-events", "topic"),
        make_node("stripe", "external_api"),
    )
    e1, e2, e3 = (
        make_edge(checkout, db, "reads_writes"),
        make_edge(checkout, topic, "publishes"),
        make_edge(checkout, stripe),
    )
    snapshot = GraphSnapshot([checkout, db, topic, stripe], [e1, e2, e3], {e3.id: 1234.4})

    text = mermaid(snapshot, [stripe.id, checkout.id], [e3.id, e1.id, e2.id], highlight=stripe.id)

    assert text == (
        "flowchart LR\n"
        '    n0("checkout<br/>service")\n'
        '    n1[["order-events<br/>topic"]]\n'
        '    n2[("orders-db<br/>database")]\n'
        '    n3{{"stripe<br/>external_api"}}\n'
        '    n0 -->|"publishes"| n1\n'
        '    n0 -->|"reads_writes"| n2\n'
        '    n0 -->|"calls<br/>1,234/min"| n3\n'
        "    classDef highlight fill:#fde68a,stroke:#b45309,stroke-width:2px\n"
        "    class n3 highlight\n"
    )
    assert (
        mermaid(snapshot, [checkout.id], reversed([e1.id, e2.id, e3.id]), highlight=[stripe.id])
        == text
    )


def test_mermaid_escapes_names_that_would_break_the_diagram_or_the_page() -> None:
    hostile = [
        'a"]-->b',
        "<script>alert(1)</script>",
        "x|y",
        "{{curly}}",
        "semi;colon #35;",
        "line\nbreak",
        "%%{init: {}}%%",
        "end",
    ]
    nodes = [make_node(name, environment=f"e{i}") for i, name in enumerate(hostile)]
    edges = [make_edge(a, b) for a, b in pairwise(nodes)]
    snapshot = GraphSnapshot(nodes, edges, {e.id: 0.5 for e in edges})

    text = mermaid(snapshot, [n.id for n in nodes], [e.id for e in edges])

    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert len(lines) == 1 + len(nodes) + len(edges)
    for line in lines[1:]:
        assert _NODE_LINE.match(line) or _EDGE_LINE.match(line), line
    assert "<script" not in text
    assert "#60;script#62;" in text
    assert "a#34;#93;--#62;b" in text
    assert "#35;35#59;" in text  # the entity-like text is shown as typed, not decoded


def test_mermaid_of_nothing_is_an_empty_flowchart() -> None:
    assert mermaid(GraphSnapshot([], [], {}), [], []) == "flowchart LR\n"


def test_an_empty_graph_answers_every_question_with_nothing() -> None:
    snapshot = GraphSnapshot([], [], {})

    assert search(snapshot, "orders") == []
    for by in algorithms.RANK_BY:
        assert rank(snapshot, by=by) == []


# -- the snapshot ------------------------------------------------------------------------


def test_snapshot_looks_up_nodes_edges_and_traffic_by_id() -> None:
    a, b, c = (make_node(x) for x in "abc")
    ab, cb = make_edge(a, b), make_edge(c, b, "depends_on")
    snapshot = GraphSnapshot([a, b, c], [ab, cb], {ab.id: 12.5, "gone": 1.0}, version=7)

    assert snapshot.node(b.id) == b
    assert snapshot.edge(cb.id) == cb
    assert snapshot.out_edges(a.id) == (ab,)
    assert snapshot.in_edges(b.id) == (ab, cb)
    assert snapshot.traffic(ab.id) == 12.5
    assert snapshot.traffic(cb.id) is None
    assert snapshot.version == 7
    assert (snapshot.nodes, snapshot.edges) == ((a, b, c), (ab, cb))
    assert b.id in snapshot
    assert "nope" not in snapshot


def test_snapshot_refuses_repeated_ids_and_edges_to_missing_nodes() -> None:
    a, b = make_node("a"), make_node("b")
    with pytest.raises(ValueError, match="twice"):
        GraphSnapshot([a, a], [], {})
    with pytest.raises(ValueError, match="twice"):
        GraphSnapshot([a, b], [make_edge(a, b), make_edge(a, b)], {})
    with pytest.raises(ValueError, match="not given"):
        GraphSnapshot([a], [make_edge(a, b)], {})


def test_every_function_raises_key_error_for_an_unknown_node() -> None:
    a = make_node("a")
    snapshot = GraphSnapshot([a], [], {})
    calls: list[Callable[[], object]] = [
        lambda: snapshot.node("missing"),
        lambda: traverse(snapshot, "missing", direction="both", max_depth=1),
        lambda: find_paths(snapshot, a.id, "missing"),
        lambda: find_paths(snapshot, "missing", a.id),
        lambda: impact(snapshot, "missing"),
        lambda: mermaid(snapshot, ["missing"], []),
        lambda: mermaid(snapshot, [], ["missing"]),
    ]
    for call in calls:
        with pytest.raises(KeyError):
            call()


def test_an_evidence_view_follows_its_own_edges_and_takes_new_traffic() -> None:
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    traced = make_edge(a, b)
    declared = replace(make_edge(b, c), sources=("compose",))
    both = replace(make_edge(a, c), sources=("otel", "compose"))
    snapshot = GraphSnapshot([a, b, c], [traced, declared, both], {traced.id: 1.0})

    assert only(snapshot, "all") is snapshot
    observed = only(snapshot, "observed")
    assert {e.id for e in observed.edges} == {traced.id, both.id}
    assert {e.id for e in only(snapshot, "declared").edges} == {declared.id, both.id}
    assert observed.nodes == snapshot.nodes
    assert only(snapshot, "observed") is observed  # built once per snapshot
    refreshed = only(snapshot.with_traffic({traced.id: 5.0}), "observed")
    assert refreshed.traffic(traced.id) == 5.0
    assert [i.node.name for i in impact(refreshed, b.id).impacted] == ["a"]
