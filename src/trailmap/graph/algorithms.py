"""The questions asked of an architecture graph: find a node by name, walk out from it, trace
the routes between two nodes, list what breaks when one fails, rank what matters most, and
draw the answer as a Mermaid diagram.

Every answer is ordered deterministically (by score or depth, then by name) so that it does
not shift between calls. Whole-graph work is kept on the snapshot (`GraphSnapshot.memo`), so
it runs once per graph version; per-query work is bounded by what the query reaches. An
unknown node id raises KeyError and a negative limit raises ValueError.

Ownership (`owned_by`) says who to call, not what fails together: impact, paths and ranks
leave it out. `traverse` walks every kind unless told otherwise.
"""

from __future__ import annotations

import difflib
import heapq
import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

import rustworkx as rx

from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import EDGE_KINDS, Edge, Node

__all__ = [
    "Direction",
    "Impacted",
    "Match",
    "MatchReason",
    "Path",
    "RankBy",
    "Ranked",
    "Reached",
    "Traversal",
    "find_paths",
    "impact",
    "mermaid",
    "rank",
    "search",
    "traverse",
]

Direction = Literal["downstream", "upstream", "both"]
RankBy = Literal["dependents", "betweenness", "pagerank", "traffic"]
MatchReason = Literal["id", "exact", "prefix", "substring", "tokens", "similar"]

_RANK_BY: tuple[RankBy, ...] = ("dependents", "betweenness", "pagerank", "traffic")
_DIRECTIONS: tuple[Direction, ...] = ("downstream", "upstream", "both")
# A best-first path search stops after considering this many partial routes: far more than
# a real query needs, and a bound (a fraction of a second) where loops keep routes that look
# short but are not, as in a dense cluster whose only way out is back through the start.
_PATH_BUDGET = 50_000
_SIMILAR = 0.6  # the least difflib ratio worth calling a match


@dataclass(frozen=True, slots=True)
class Match:
    node: Node
    score: float  # in (0, 1]; each reason has its own band, so a better reason always wins
    reason: MatchReason


@dataclass(frozen=True, slots=True)
class Reached:
    node: Node
    depth: int  # the fewest hops from the start


@dataclass(frozen=True, slots=True)
class Traversal:
    nodes: tuple[Reached, ...]  # the start first, at depth 0; then by depth, then name
    edges: tuple[Edge, ...]  # the edges walked between reported nodes


@dataclass(frozen=True, slots=True)
class Path:
    nodes: tuple[Node, ...]  # from the first to the last, len(edges) + 1 of them
    edges: tuple[Edge, ...]  # edges[i] joins nodes[i] and nodes[i + 1]


@dataclass(frozen=True, slots=True)
class Impacted:
    node: Node
    depth: int  # hops from the failed node
    via: Node  # the next node toward the failed one on a shortest route
    edge: Edge  # the edge from `node` to `via`
    share: float | None  # of node's outgoing calls/min, what goes into the blast radius


@dataclass(frozen=True, slots=True)
class Ranked:
    node: Node
    score: float


# -- what every query shares, computed once per snapshot --------------------------------


def _names(snapshot: GraphSnapshot) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Node indices sorted by name, kind, environment and id (the tie-break everywhere), and
    each node's position in that order."""

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


def _order(snapshot: GraphSnapshot) -> tuple[int, ...]:
    return _names(snapshot)[1]


_PREFERENCE = {kind: i for i, kind in enumerate(EDGE_KINDS)}


@dataclass(frozen=True, slots=True)
class _Runtime:
    """The edges that carry failure (all but ownership), arranged for each question."""

    graph: rx.PyDiGraph[int, None]  # dependency orientation, no self-loops or parallel edges
    upstream: rx.PyDiGraph[int, None]  # the same, reversed
    # By node: (target, edge index) of what it depends on, nearest name first, then the
    # first kind in EDGE_KINDS; no self-loops.
    deps: tuple[list[tuple[int, int]], ...]
    # By node: (next node, edge index) as requests flow (consumes reversed); between two
    # nodes, the edge of the first kind in EDGE_KINDS, then the least id.
    flow: tuple[list[tuple[int, int]], ...]
    flow_back: rx.PyDiGraph[int, None]  # flow orientation, reversed


def _runtime(snapshot: GraphSnapshot) -> _Runtime:
    """Topology only, so that it outlives a traffic refresh (GraphSnapshot.with_traffic)."""

    def compute() -> _Runtime:
        position = _order(snapshot)
        edges, ends = snapshot.edges, snapshot.ends
        n, width = len(snapshot.nodes), len(EDGE_KINDS)
        preference = [_PREFERENCE[e.kind] for e in edges]
        runtime = [j for j, e in enumerate(edges) if e.kind != "owned_by"]
        deps: tuple[list[tuple[int, int]], ...] = tuple([] for _ in range(n))
        for j in sorted(runtime, key=lambda j: position[ends[j][1]] * width + preference[j]):
            source, target = ends[j]
            if source != target:
                deps[source].append((target, j))
        chosen: dict[tuple[int, int], int] = {}
        for source, out in enumerate(deps):
            for target, j in out:
                pair = (target, source) if edges[j].kind == "consumes" else (source, target)
                held = chosen.setdefault(pair, j)
                if held != j and (preference[j], edges[j].id) < (preference[held], edges[held].id):
                    chosen[pair] = j
        flow: tuple[list[tuple[int, int]], ...] = tuple([] for _ in range(n))
        for (start, end), j in chosen.items():
            flow[start].append((end, j))

        graph: rx.PyDiGraph[int, None] = rx.PyDiGraph(multigraph=False)
        graph.add_nodes_from(range(n))
        graph.add_edges_from_no_data([(s, t) for s, out in enumerate(deps) for t, _ in out])
        upstream = graph.copy()
        upstream.reverse()
        flow_back: rx.PyDiGraph[int, None] = rx.PyDiGraph(multigraph=False)
        flow_back.add_nodes_from(range(n))
        flow_back.add_edges_from_no_data([(end, start) for start, end in chosen])
        return _Runtime(graph, upstream, deps, flow, flow_back)

    return snapshot.memo((__name__, "runtime"), compute)


def _measured(snapshot: GraphSnapshot) -> tuple[float | None, ...]:
    """Each node's measured calls/min to what it depends on (None when unmeasured). The key
    names traffic, so a traffic refresh drops it (GraphSnapshot.memo)."""

    def compute() -> tuple[float | None, ...]:
        traffic = snapshot.traffic_by_index
        totals: list[float | None] = [None] * len(snapshot.nodes)
        for source, out in enumerate(_runtime(snapshot).deps):
            for _, j in out:
                if (calls := traffic[j]) is not None:
                    totals[source] = (totals[source] or 0.0) + calls
        return tuple(totals)

    return snapshot.memo((__name__, "traffic", "measured"), compute)


# -- search -----------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD = re.compile(r"[^\W_]+")


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(_CAMEL.sub(" ", text).lower()))


def _search_index(
    snapshot: GraphSnapshot,
) -> tuple[tuple[tuple[str, tuple[str, ...], str, str], ...], dict[str, int]]:
    """Per node (lowercased name, tokens, tokens joined by spaces, tokens joined), and how
    many nodes carry each token."""

    def compute() -> tuple[tuple[tuple[str, tuple[str, ...], str, str], ...], dict[str, int]]:
        entries = []
        frequency: dict[str, int] = {}
        for node in snapshot.nodes:
            tokens = _tokens(node.name)
            entries.append((node.name.lower(), tokens, " ".join(tokens), "".join(tokens)))
            for token in set(tokens):
                frequency[token] = frequency.get(token, 0) + 1
        return tuple(entries), frequency

    return snapshot.memo((__name__, "search"), compute)


def _same_word(a: str, b: str) -> bool:
    # "order" is "orders"; a plural or a short form names the same thing.
    return a == b or (min(len(a), len(b)) >= 3 and (a.startswith(b) or b.startswith(a)))


def _shared_words(
    query: tuple[str, ...], weights: list[float], tokens: tuple[str, ...], kind: str
) -> float:
    """The weighted share of the query's words found in the name (a word found only in the
    node's kind, as "service" in "order service", counts half); 0 when the name has none."""
    named = kinded = 0.0
    for word, weight in zip(query, weights, strict=True):
        if any(_same_word(word, t) for t in tokens):
            named += weight
        elif any(_same_word(word, t) for t in kind.split("_")):
            kinded += weight / 2
    return (named + kinded) / sum(weights) if named else 0.0


def search(
    snapshot: GraphSnapshot,
    query: str,
    *,
    kinds: Collection[str] | None = None,
    environment: str | None = None,
    limit: int = 10,
) -> list[Match]:
    """Nodes whose name matches `query`, best first: the node id itself or an exact name
    (1.0), then a prefix (0.8-0.9), a substring (0.6-0.7), shared words (0.4-0.55, rare words
    counting more than words most names carry, like "service"), and a similar spelling
    (below 0.4). Case, separators and camelCase do not matter."""
    if limit < 0:
        raise ValueError("limit must be at least 0")
    raw = query.strip()
    q_lower, q_tokens = raw.lower(), _tokens(raw)
    q_joined, q_compact = " ".join(q_tokens), "".join(q_tokens)
    if not q_compact or limit == 0:
        return []
    entries, frequency = _search_index(snapshot)
    total = len(entries)
    weights = [math.log(1 + total / (1 + frequency.get(t, 0))) for t in q_tokens]
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(q_compact)
    found: list[tuple[float, int, MatchReason]] = []
    for i, node in enumerate(snapshot.nodes):
        if (kinds is not None and node.kind not in kinds) or (
            environment is not None and node.environment != environment
        ):
            continue
        lower, tokens, joined, compact = entries[i]
        closeness = len(q_compact) / max(len(compact), 1)
        if raw == node.id:
            found.append((1.0, i, "id"))
        elif q_lower == lower or q_joined == joined:
            found.append((1.0, i, "exact"))
        elif lower.startswith(q_lower) or joined.startswith(q_joined):
            found.append((0.8 + 0.1 * min(closeness, 1.0), i, "prefix"))
        elif q_lower in lower or q_compact in compact:
            found.append((0.6 + 0.1 * min(closeness, 1.0), i, "substring"))
        elif shared := _shared_words(q_tokens, weights, tokens, node.kind):
            found.append((0.4 + 0.15 * shared, i, "tokens"))
        else:
            matcher.set_seq1(compact)
            if matcher.real_quick_ratio() >= _SIMILAR and matcher.quick_ratio() >= _SIMILAR:
                ratio = matcher.ratio()
                if ratio >= _SIMILAR:
                    found.append((0.4 * ratio, i, "similar"))
    order = _order(snapshot)
    # Sorted on the score as shown, so that equal-looking scores are in name order.
    found.sort(key=lambda f: (-round(f[0], 4), order[f[1]]))
    return [Match(snapshot.nodes[i], round(score, 4), why) for score, i, why in found[:limit]]


# -- traverse ---------------------------------------------------------------------------


def traverse(
    snapshot: GraphSnapshot,
    start_id: str,
    *,
    direction: Direction,
    max_depth: int,
    edge_kinds: Collection[str] | None = None,
    node_kinds: Collection[str] | None = None,
) -> Traversal:
    """Nodes within `max_depth` hops of the start, downstream (what it depends on), upstream
    (what depends on it) or both, walking only `edge_kinds` when given.

    `node_kinds` filters what is reported, not where the walk goes: a node of another kind is
    passed through (so a service behind a topic is still found, at its true depth) but is not
    listed, and neither are its edges. The start is always listed.
    """
    if max_depth < 0:
        raise ValueError("max_depth must be at least 0")
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(_DIRECTIONS)}")
    start = snapshot.index_of(start_id)
    edges, ends = snapshot.edges, snapshot.ends
    sides: list[tuple[tuple[tuple[int, ...], ...], int]] = []
    if direction != "upstream":
        sides.append((snapshot.out_indices, 1))
    if direction != "downstream":
        sides.append((snapshot.in_indices, 0))
    depth = {start: 0}
    walked: set[int] = set()
    frontier = [start]
    for hops in range(1, max_depth + 1):
        reached: list[int] = []
        for u in frontier:
            for adjacency, far in sides:
                for j in adjacency[u]:
                    if edge_kinds is not None and edges[j].kind not in edge_kinds:
                        continue
                    walked.add(j)
                    v = ends[j][far]
                    if v not in depth:
                        depth[v] = hops
                        reached.append(v)
        if not reached:
            break
        frontier = reached

    nodes = snapshot.nodes
    shown = {i for i in depth if i == start or node_kinds is None or nodes[i].kind in node_kinds}
    order = _order(snapshot)
    return Traversal(
        nodes=tuple(
            Reached(nodes[i], depth[i]) for i in sorted(shown, key=lambda i: (depth[i], order[i]))
        ),
        edges=tuple(
            edges[j]
            for j in sorted(
                (j for j in walked if ends[j][0] in shown and ends[j][1] in shown),
                key=lambda j: (order[ends[j][0]], order[ends[j][1]], edges[j].kind, edges[j].id),
            )
        ),
    )


# -- find_paths -------------------------------------------------------------------------


def find_paths(
    snapshot: GraphSnapshot,
    from_id: str,
    to_id: str,
    *,
    max_paths: int = 3,
    max_depth: int = 10,
) -> list[Path]:
    """Up to `max_paths` loopless routes a request or message can take from one node to the
    other, shortest first, equal lengths in order of their nodes' names; at most `max_depth`
    hops each. Edges are followed as things flow: forward, except `consumes`, which goes
    from the topic to the consumer. Where two nodes have several edges, a route takes the
    one whose kind comes first in EDGE_KINDS, so no two routes visit the same nodes.

    A best-first search over partial routes, guided by each node's exact hop count to the
    target (one breadth-first search, in rustworkx), pops complete routes in exactly that
    order. It gives up after a fixed number of partial routes, returning what it has.
    """
    if max_paths < 0 or max_depth < 0:
        raise ValueError("max_paths and max_depth must be at least 0")
    source, target = snapshot.index_of(from_id), snapshot.index_of(to_id)
    nodes, edges = snapshot.nodes, snapshot.edges
    if max_paths == 0:
        return []
    if source == target:
        return [Path((nodes[source],), ())]
    runtime = _runtime(snapshot)
    to_go: dict[int, int] = {}
    for hops, layer in enumerate(rx.bfs_layers(runtime.flow_back, [target])[: max_depth + 1]):
        to_go.update(dict.fromkeys(layer, hops))
    if source not in to_go:
        return []
    order = _order(snapshot)
    # (least length of any completion, names so far, nodes so far, edges so far); the names
    # are unique per partial route, so the heap never compares the tuples after them.
    heap: list[tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = [
        (to_go[source], (order[source],), (source,), ())
    ]
    found: list[Path] = []
    budget = _PATH_BUDGET
    while heap and len(found) < max_paths:
        _, names, route, taken = heapq.heappop(heap)
        if route[-1] == target:
            found.append(Path(tuple(nodes[i] for i in route), tuple(edges[j] for j in taken)))
            continue
        if budget <= 0:
            break
        hops = len(route)
        for v, j in runtime.flow[route[-1]]:
            left = to_go.get(v)
            if left is None or hops + left > max_depth or v in route:
                continue
            heapq.heappush(heap, (hops + left, (*names, order[v]), (*route, v), (*taken, j)))
            budget -= 1
    return found


# -- impact -----------------------------------------------------------------------------


def impact(snapshot: GraphSnapshot, node_id: str) -> list[Impacted]:
    """Everything that depends on the node, directly or not (a consumer depends on its
    topic), nearest first, then by name.

    `share` is the part of a node's measured outgoing calls/min (to other nodes) that goes
    to the failed node or to other impacted nodes: how much of its work fails with them.
    None when its outgoing edges carry no measured traffic.
    """
    failed = snapshot.index_of(node_id)
    runtime = _runtime(snapshot)
    layers = rx.bfs_layers(runtime.upstream, [failed])
    depth: dict[int, int] = {}
    for hops, layer in enumerate(layers):
        depth.update(dict.fromkeys(layer, hops))
    order, measured, traffic = _order(snapshot), _measured(snapshot), snapshot.traffic_by_index
    nodes, edges, deps = snapshot.nodes, snapshot.edges, runtime.deps
    result: list[Impacted] = []
    for hops, layer in enumerate(layers[1:], start=1):
        above = hops - 1
        for u in sorted(layer, key=order.__getitem__):
            # deps are in name order, so the first at the depth above is the via; bfs_layers
            # reached u over one of them, so there is one.
            via = edge = -1
            inside = 0.0
            for v, j in deps[u]:
                if (reached := depth.get(v)) is not None:
                    inside += traffic[j] or 0.0
                    if reached == above and via < 0:
                        via, edge = v, j
            total = measured[u]
            share = inside / total if total else None
            result.append(Impacted(nodes[u], hops, nodes[via], edges[edge], share))
    return result


# -- rank -------------------------------------------------------------------------------


def rank(
    snapshot: GraphSnapshot,
    *,
    by: RankBy,
    limit: int = 10,
    kinds: Collection[str] | None = ("service",),
) -> list[Ranked]:
    """The nodes of `kinds` (None: all) that matter most, by one measure, highest first:

    - dependents: how many nodes depend on it, directly or not;
    - betweenness: how many shortest dependency chains run through it (normalized);
    - pagerank: PageRank over dependency edges, so a node that many nodes, or important
      ones, depend on ranks high (uniform teleport; a node with no dependencies spreads its
      rank uniformly, as in NetworkX);
    - traffic: calls/min on its incoming and outgoing edges together.

    Each measure runs once per snapshot; later calls only slice it.
    """
    if by not in _RANK_BY:
        raise ValueError(f"by must be one of {', '.join(_RANK_BY)}")
    if limit < 0:
        raise ValueError("limit must be at least 0")
    ranked, scores = snapshot.memo((__name__, "rank", by), lambda: _ranking(snapshot, by))
    nodes = snapshot.nodes
    result: list[Ranked] = []
    for i in ranked:
        if len(result) >= limit:
            break
        if kinds is None or nodes[i].kind in kinds:
            result.append(Ranked(nodes[i], scores[i]))
    return result


def _ranking(snapshot: GraphSnapshot, by: RankBy) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Node indices, highest score first, and each node's score."""
    runtime = _runtime(snapshot)
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
    # Sorted on scores cut to 12 decimal places (int(), as round() is slow), so that
    # floating-point noise does not order nodes that tie. The sort is stable: nodes with
    # equal scores keep their name order.
    keys = [-int(score * 1e12) for score in scores]
    return tuple(sorted(_names(snapshot)[0], key=keys.__getitem__)), tuple(scores)


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


# -- mermaid ----------------------------------------------------------------------------

_SHAPES = {
    "service": ('("', '")'),
    "database": ('[("', '")]'),
    "cache": ('[("', '")]'),
    "queue": ('[["', '"]]'),
    "topic": ('[["', '"]]'),
    "external_api": ('{{"', '"}}'),
}
_PLAIN_SHAPE = ('["', '"]')
_SAFE = frozenset(" -_.,:/@+=")


def _text(value: str) -> str:
    """Text that cannot end a Mermaid label or open markup: anything but letters, digits and
    a few inert marks becomes a Mermaid entity (`#34;`), which Mermaid shows as the
    character itself, escaped for HTML."""
    return "".join(c if c.isalnum() or c in _SAFE else f"#{ord(c)};" for c in value)


def _rate(calls: float) -> str:
    return f"{calls:,.0f}/min" if calls >= 10 else f"{calls:.2g}/min"


def mermaid(
    snapshot: GraphSnapshot,
    node_ids: Iterable[str],
    edge_ids: Iterable[str],
    *,
    highlight: str | Collection[str] | None = None,
) -> str:
    """A `flowchart LR` of the given nodes and edges (an edge's ends are drawn even when not
    listed), arrows pointing the way dependencies do. Node ids in the text are n0, n1, ...
    in name order, so the same graph always gives the same text. `highlight` (a node id or
    several) marks nodes, such as a failed one or a path's ends."""
    wanted = {snapshot.index_of(i) for i in node_ids}
    chosen = sorted({snapshot.edge_index_of(i) for i in edge_ids})
    nodes, edges, ends = snapshot.nodes, snapshot.edges, snapshot.ends
    for j in chosen:
        wanted.update(ends[j])
    marked = {highlight} if isinstance(highlight, str) else set(highlight or ())
    order = _order(snapshot)
    drawn = sorted(wanted, key=order.__getitem__)
    name = {i: f"n{k}" for k, i in enumerate(drawn)}
    several = len({nodes[i].environment for i in drawn}) > 1
    lines = ["flowchart LR"]
    for i in drawn:
        node = nodes[i]
        label = f"{_text(node.name)}<br/>{_text(node.kind)}"
        if several:
            label += f" in {_text(node.environment)}"
        opening, closing = _SHAPES.get(node.kind, _PLAIN_SHAPE)
        lines.append(f"    {name[i]}{opening}{label}{closing}")
    traffic = snapshot.traffic_by_index
    for j in sorted(chosen, key=lambda j: (order[ends[j][0]], order[ends[j][1]], edges[j].kind)):
        label = _text(edges[j].kind)
        if (calls := traffic[j]) is not None:
            label += f"<br/>{_text(_rate(calls))}"
        lines.append(f'    {name[ends[j][0]]} -->|"{label}"| {name[ends[j][1]]}')
    lit = [name[i] for i in drawn if nodes[i].id in marked]
    if lit:
        lines.append("    classDef highlight fill:#fde68a,stroke:#b45309,stroke-width:2px")
        lines.append(f"    class {','.join(lit)} highlight")
    return "\n".join(lines) + "\n"
