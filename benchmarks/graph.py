"""The graph algorithms on a large organization's graph, against rustworkx doing the same
search directly: the floor no Python layer can beat.

    .venv/bin/python benchmarks/graph.py [--services N] [--edges M] [--queries Q] [--quick]

Setup (not measured): a seeded graph shaped like a real estate of services (default 10,000
services in six tiers, callers depending on deeper tiers with a preference for popular
targets and a few calls back up that close cycles; plus databases, caches, topics and
external APIs), 50,000 edges in all, and traffic on most calls. Measured, on one
GraphSnapshot of it, each beside its floor on the same in-memory graph:

- find_paths (3 paths, up to 10 hops) from Q entry services to deep nodes, beside
  rustworkx's Dijkstra between the same pairs on the flow-oriented PyDiGraph;
- impact of 20 nodes (databases, topics, core services), counted at every depth with the
  nearest 50 listed as get_impact lists them by default, beside rustworkx.ancestors plus
  bfs_layers on the reversed PyDiGraph; then, not judged, with 100 listed (the most a
  caller may ask for), with every node listed, and bfs_layers alone;
- rank by dependents, betweenness and pagerank, first call on a fresh snapshot beside the
  library call (dependents: rustworkx.ancestors of every node; 9 rounds for pagerank, which
  takes milliseconds), then the second, memoized call.

Target: each tool figure within 2x of its floor, and a memoized rank in under a millisecond.
A miss prints MISSED; the exit status is non-zero only when the benchmark itself fails.
`--quick` (500 services) checks that it works end to end, in seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import rustworkx as rx

from trailmap.graph.ask.algorithms import RankBy, find_paths, impact, rank
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import Edge, EdgeKind, Node, NodeKind, edge_id, node_id

ORG = "bench-org"
# How many impacted nodes get_impact lists by default, and at most (graph/ask/queries.py).
_LISTED = 50
_MOST_LISTED = 100
TIERS = 6
# The share of services in each tier, from entry points down to platform services.
_TIER_WEIGHTS = (0.05, 0.10, 0.20, 0.30, 0.25, 0.10)
_WORDS = (
    "orders", "payments", "checkout", "catalog", "search", "users", "auth", "billing",
    "shipping", "inventory", "pricing", "cart", "reviews", "ledger", "notify", "profile",
)  # fmt: skip


@dataclass
class Estate:
    nodes: list[Node]
    edges: list[Edge]
    traffic: dict[str, float]
    entry: list[Node]  # tier-0 services
    deep: list[Node]  # nodes a request ends at: databases, consumers, deep services
    failing: list[Node]  # nodes whose impact is asked for


def _node(kind: NodeKind, name: str) -> Node:
    return Node(node_id(ORG, kind, "production", name), kind, name, "production", 0, 0)


def generate(services: int, edge_count: int, seed: int = 7) -> Estate:
    rng = random.Random(seed)
    tiers: list[list[Node]] = [[] for _ in range(TIERS)]
    for i in range(services):
        tier = rng.choices(range(TIERS), _TIER_WEIGHTS)[0]
        tiers[tier].append(_node("service", f"{rng.choice(_WORDS)}-{i:05d}"))
    stores: dict[NodeKind, list[Node]] = {
        "database": [_node("database", f"db-{i:04d}") for i in range(max(services // 10, 1))],
        "cache": [_node("cache", f"cache-{i:04d}") for i in range(max(services // 50, 1))],
        "topic": [_node("topic", f"events-{i:04d}") for i in range(max(services // 20, 1))],
        "external_api": [_node("external_api", f"api-{i:03d}") for i in range(10)],
    }
    # Preferential attachment: a node picked once is likelier to be picked again.
    pools: dict[object, list[Node]] = {t: list(tiers[t]) for t in range(TIERS)}
    pools.update({kind: list(found) for kind, found in stores.items()})

    def pick(pool_key: object) -> Node:
        pool = pools[pool_key]
        chosen = rng.choice(pool)
        pool.append(chosen)
        return chosen

    seen: set[tuple[str, str, str]] = set()
    edges: list[Edge] = []
    traffic: dict[str, float] = {}
    plan: list[tuple[float, EdgeKind, object]] = [
        (0.72, "calls", "deeper"),
        (0.01, "calls", "back"),
        (0.12, "reads_writes", "database"),
        (0.03, "reads_writes", "cache"),
        (0.05, "publishes", "topic"),
        (0.05, "consumes", "topic"),
        (0.02, "depends_on", "external_api"),
    ]
    while len(edges) < edge_count:
        tier = rng.randrange(TIERS - 1) if rng.random() < 0.8 else rng.randrange(TIERS)
        if not tiers[tier]:
            continue
        source = rng.choice(tiers[tier])
        _, kind, where = rng.choices(plan, [p[0] for p in plan])[0]
        if where == "deeper":
            if tier == TIERS - 1:
                continue
            target = pick(rng.randint(tier + 1, min(tier + 2, TIERS - 1)))
        elif where == "back":
            if tier == 0:
                continue
            target = pick(rng.randrange(tier))
        else:
            target = pick(where)
        if target is source or (source.id, target.id, kind) in seen:
            continue
        seen.add((source.id, target.id, kind))
        edge = Edge(edge_id(ORG, source.id, target.id, kind), source.id, target.id, kind, 0, 0)
        edges.append(edge)
        if kind == "calls" and rng.random() < 0.8:
            traffic[edge.id] = round(rng.lognormvariate(3, 1.5), 2)
    nodes = [n for tier_nodes in tiers for n in tier_nodes]
    nodes += [n for found in stores.values() for n in found]
    consumers = [e.source_id for e in edges if e.kind == "consumes"]
    by_id = {n.id: n for n in nodes}
    deep = stores["database"] + tiers[-1] + [by_id[i] for i in consumers]
    failing = stores["database"][:5] + stores["topic"][:5] + tiers[-1][:5] + tiers[-2][:5]
    return Estate(nodes, edges, traffic, tiers[0], deep, failing)


# -- measuring --------------------------------------------------------------------------


def _compare(
    rounds: int, tool: Callable[[], object], floor: Callable[[], object]
) -> tuple[float, float]:
    """The least wall time of each over `rounds` rounds, in seconds, the two run in turn so
    that a busy machine slows both alike."""
    best_tool = best_floor = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        tool()
        best_tool = min(best_tool, time.perf_counter() - started)
        started = time.perf_counter()
        floor()
        best_floor = min(best_floor, time.perf_counter() - started)
    return best_tool, best_floor


def _line(label: str, tool_s: float, floor_s: float, floor: str) -> bool:
    ratio = tool_s / floor_s if floor_s > 0 else float("inf")
    met = ratio <= 2.0
    print(
        f"  {label:<20} {tool_s * 1e3:9.2f} ms   floor {floor_s * 1e3:9.2f} ms ({floor})"
        f"   ratio {ratio:5.2f}  {'OK' if met else 'MISSED'}",
        flush=True,
    )
    return met


def _prepared(estate: Estate, version: int) -> GraphSnapshot:
    """A new snapshot with its derived graphs built, as after its first query."""
    snapshot = GraphSnapshot(estate.nodes, estate.edges, estate.traffic, version=version)
    impact(snapshot, estate.failing[0].id)
    return snapshot


def run(services: int, edge_count: int, queries: int, rounds: int) -> bool:
    started = time.perf_counter()
    estate = generate(services, edge_count)
    generated_s = time.perf_counter() - started
    started = time.perf_counter()
    snapshot = GraphSnapshot(estate.nodes, estate.edges, estate.traffic, version=1)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    impact(snapshot, estate.failing[0].id)
    derived_s = time.perf_counter() - started
    print(
        f"graph: {services:,} services and {len(estate.nodes) - services:,} other nodes, "
        f"{len(estate.edges):,} edges, traffic on {len(estate.traffic):,} (generated in "
        f"{generated_s:.1f} s)\n  GraphSnapshot built in {build_s * 1e3:.0f} ms; its derived "
        f"graphs, on the first query, in {derived_s * 1e3:.0f} ms (once per version)",
        flush=True,
    )
    graph = snapshot.graph
    index = snapshot.index_of
    # The floors' own graphs, made outside the timings as the snapshot's derived ones are.
    upstream = graph.copy()
    upstream.reverse()
    flow: rx.PyDiGraph[Node, Edge] = rx.PyDiGraph(multigraph=True)
    flow.add_nodes_from(snapshot.nodes)
    flow.add_edges_from(
        [
            (t, s, e) if e.kind == "consumes" else (s, t, e)
            for (s, t), e in zip(snapshot.ends, snapshot.edges, strict=True)
        ]
    )
    rng = random.Random(3)
    pairs = [
        (index(a.id), index(b.id))
        for a, b in ((rng.choice(estate.entry), rng.choice(estate.deep)) for _ in range(queries))
    ]
    ids = [(snapshot.nodes[a].id, snapshot.nodes[b].id) for a, b in pairs]
    met = True

    found = sum(bool(find_paths(snapshot, a, b)) for a, b in ids)
    print(f"  find_paths: {queries} pairs from entry services to deep nodes, {found} with a path")
    tool, floor = _compare(
        rounds,
        lambda: [find_paths(snapshot, a, b) for a, b in ids],
        lambda: [rx.digraph_dijkstra_shortest_paths(flow, a, target=b) for a, b in pairs],
    )
    met &= _line("find_paths", tool / queries, floor / queries, "dijkstra, per pair")

    failing = [(n.id, index(n.id)) for n in estate.failing]
    sizes = [impact(snapshot, node).count for node, _ in failing]
    print(
        f"  impact: {len(failing)} nodes, {statistics.median(sizes):.0f} impacted (median), "
        f"{max(sizes)} at most; all counted by depth, the nearest {_LISTED} listed"
    )

    def impacts(limit: int) -> Callable[[], object]:
        return lambda: [impact(snapshot, node, limit=limit) for node, _ in failing]

    def impact_floor() -> object:
        return [(rx.ancestors(graph, i), rx.bfs_layers(upstream, [i])) for _, i in failing]

    tool, floor = _compare(rounds, impacts(_LISTED), impact_floor)
    met &= _line("impact", tool / len(failing), floor / len(failing), "ancestors+bfs, per node")
    # Not judged, for the record, each timed beside the floor again: the most a caller may
    # list; every node listed (the answer before the cap, which no caller can ask for now);
    # and the floor's breadth-first search alone, which finds the same nodes as ancestors
    # does, and their depths.
    asides: list[tuple[str, Callable[[], object]]] = [
        (f"{_MOST_LISTED} listed", impacts(_MOST_LISTED)),
        ("every node listed", impacts(max(sizes))),
        ("bfs_layers alone", lambda: [rx.bfs_layers(upstream, [i]) for _, i in failing]),
    ]
    for label, run_aside in asides:
        seconds, floor = _compare(rounds, run_aside, impact_floor)
        print(
            f"    {label:<18} {seconds / len(failing) * 1e3:9.2f} ms   "
            f"ratio {seconds / floor:5.2f} (not judged)",
            flush=True,
        )

    floors: dict[RankBy, Callable[[], object]] = {
        "dependents": lambda: [len(rx.ancestors(graph, i)) for i in graph.node_indices()],
        "betweenness": lambda: rx.digraph_betweenness_centrality(graph, normalized=True),
        "pagerank": lambda: rx.pagerank(graph, tol=1e-10, max_iter=1000),
    }
    # A first ranking is timed on a fresh snapshot each round (prepared untimed), beside the
    # library call, the least of each kept. PageRank takes milliseconds, so one busy moment
    # of a shared machine weighs on it more than on the others: it gets more rounds, tool
    # and floor alike. Betweenness takes seconds: one round.
    cold_rounds: dict[RankBy, int] = {
        "dependents": rounds,
        "betweenness": 1,
        "pagerank": 3 * rounds,
    }
    for by, floor_run in floors.items():
        tool = floor = float("inf")
        for k in range(cold_rounds[by]):
            ranked = _prepared(estate, 2 + k)
            started = time.perf_counter()
            rank(ranked, by=by)
            tool = min(tool, time.perf_counter() - started)
            started = time.perf_counter()
            floor_run()
            floor = min(floor, time.perf_counter() - started)
        met &= _line(f"rank {by}", tool, floor, "the library call")

        def again(by: RankBy = by, ranked: GraphSnapshot = ranked) -> object:
            return rank(ranked, by=by)

        memo, _ = _compare(rounds, again, lambda: None)
        memo_met = memo < 1e-3
        met &= memo_met
        print(
            f"  {'  again, memoized':<20} {memo * 1e6:9.1f} µs   target under 1 ms"
            f"  {'OK' if memo_met else 'MISSED'}",
            flush=True,
        )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=10_000, help="default 10,000")
    parser.add_argument("--edges", type=int, default=50_000, help="default 50,000")
    parser.add_argument("--queries", type=int, default=50, help="pairs and nodes (default 50)")
    parser.add_argument("--quick", action="store_true", help="a fast sanity run (500 services)")
    args = parser.parse_args(argv)
    services = 500 if args.quick else args.services
    edge_count = 2_500 if args.quick else args.edges
    print(
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at start; "
        f"machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, rustworkx {version('rustworkx')}",
        flush=True,
    )
    met = run(services, edge_count, args.queries, rounds=3)
    if args.quick:
        print("graph: quick sanity run; the targets are judged on a full run only")
    else:
        print("graph: every target met" if met else "graph: MISSED, a target was not met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
