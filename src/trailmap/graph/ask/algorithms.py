"""The questions asked of an architecture graph: find, walk, route, blast radius, rank, and the
answer drawn as a Mermaid diagram (docs/internals.md)."""

from __future__ import annotations

import difflib
import heapq
import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

import rustworkx as rx

from trailmap.graph.ask import derived
from trailmap.graph.ask.impact import BlastRadius, DepthCount, Impacted, impact
from trailmap.graph.ask.ranking import RANK_BY, RankBy, Ranked, rank, scores
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import NODE_KINDS, Edge, Node, NodeKind

__all__ = [
    "RANK_BY",
    "BlastRadius",
    "DepthCount",
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
    "kind_named",
    "mermaid",
    "rank",
    "scores",
    "search",
    "traverse",
]

Direction = Literal["downstream", "upstream", "both"]
MatchReason = Literal[
    "id", "exact", "alias", "prefix", "substring", "technology", "kind", "tokens", "similar"
]

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


# -- search -----------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD = re.compile(r"[^\W_]+")


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(_CAMEL.sub(" ", text).lower()))


_Entry = tuple[str, tuple[str, ...], str, str, frozenset[str], frozenset[str]]
_ALIAS_SCORE = 0.95  # a name a repository, cluster or catalog declares the node under


def _search_index(snapshot: GraphSnapshot) -> tuple[tuple[_Entry, ...], dict[str, int]]:
    """Per node (lowercased name, tokens, tokens joined by spaces, tokens joined, the names
    of its technology, the other names sources declare it under, lowercased), and how many
    nodes carry each token."""

    def compute() -> tuple[tuple[_Entry, ...], dict[str, int]]:
        entries = []
        frequency: dict[str, int] = {}
        for node in snapshot.nodes:
            tokens = _tokens(node.name)
            technology = _technology_names(node.attributes.get("technology"))
            entries.append(
                (
                    node.name.lower(),
                    tokens,
                    " ".join(tokens),
                    "".join(tokens),
                    technology,
                    _declared_names(node),
                )
            )
            for token in set(tokens):
                frequency[token] = frequency.get(token, 0) + 1
        return tuple(entries), frequency

    return snapshot.memo((__name__, "search"), compute)


def _declared_names(node: Node) -> frozenset[str]:
    declared = node.attributes.get("declared")
    names = declared.get("names") if isinstance(declared, dict) else None
    if not isinstance(names, list):
        return frozenset()
    return frozenset(str(n).lower() for n in names) - {node.name.lower()}


# What people call a technology besides its semantic-conventions name (`db.system.name`,
# `messaging.system`, `rpc.system`, `gen_ai.provider.name` values), by that name's letters.
_TECHNOLOGY_NAMES: dict[str, tuple[str, ...]] = {
    "postgresql": ("postgres", "pg", "pgsql"),
    "microsoftsqlserver": ("mssql", "sqlserver"),
    "mssql": ("sqlserver",),
    "mongodb": ("mongo",),
    "elasticsearch": ("elastic",),
    "opensearch": ("elastic",),
    "cassandra": ("cql",),
    "awsdynamodb": ("dynamo",),
    "dynamodb": ("dynamo",),
    "rabbitmq": ("rabbit", "amqp"),
    "gcpvertexai": ("vertex", "gemini"),
    "azureaiopenai": ("azure", "openai"),
    "mistralai": ("mistral",),
}
_VENDOR_PREFIXES = ("aws", "gcp", "azure", "microsoft", "ibm")


def _technology_names(technology: object) -> frozenset[str]:
    """The words that name a technology ("postgresql": postgresql, postgres, pg, pgsql;
    "aws_sqs": awssqs, sqs; "gcp.gemini": gcpgemini, gemini), letters only, lowercased."""
    if not isinstance(technology, str) or not technology:
        return frozenset()
    tokens = _tokens(technology)
    compact = "".join(tokens)
    names = {compact, *_TECHNOLOGY_NAMES.get(compact, ())}
    if len(tokens) > 1 and tokens[0] in _VENDOR_PREFIXES:
        names.add("".join(tokens[1:]))
    names.discard("")
    return frozenset(names)


def _names_technology(query: tuple[str, ...], compact: str, names: frozenset[str]) -> bool:
    # "postgres", "which services use Kafka?", "SQL Server": one word, or all of them.
    return bool(names) and (compact in names or any(word in names for word in query))


# What people call a kind of node: "database", "the databases", "db", "external APIs".
_KIND_WORDS: dict[str, NodeKind] = {
    **{kind.replace("_", " "): kind for kind in NODE_KINDS},
    **{kind.replace("_", " ") + "s": kind for kind in NODE_KINDS},
    "db": "database",
    "dbs": "database",
    "repo": "repository",
    "repos": "repository",
    "repositories": "repository",
}
_KIND_SCORE = 0.58  # below any name containing the query, above words shared with one
_TECHNOLOGY_SCORE = 0.59  # below any name containing the query, above its kind


def kind_named(text: str) -> NodeKind | None:
    """The node kind `text` names ("the database", "Caches", "external_api"), if any."""
    words = _tokens(text)
    if words[:1] in (("the",), ("all",)):
        words = words[1:]
    return _KIND_WORDS.get(" ".join(words))


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
    (1.0), then a name a source declares the node under (0.95: `checkout-svc` in a
    Compose file for the traced `checkout`), a prefix (0.8-0.9), a substring (0.6-0.7),
    the kind the query names ("databases", "the cache": 0.58), shared words (0.4-0.55,
    rare words counting more than words most names carry, like "service"), and a similar
    spelling (below 0.4). A node
    whose technology (its `technology` attribute: "postgresql", "kafka") a word of the query
    names comes just below a substring (0.59), whatever the node is called. Case,
    separators and camelCase do not matter."""
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
    q_kind = kind_named(raw)
    found: list[tuple[float, int, MatchReason]] = []
    for i, node in enumerate(snapshot.nodes):
        if (kinds is not None and node.kind not in kinds) or (
            environment is not None and node.environment != environment
        ):
            continue
        lower, tokens, joined, compact, technology, aliases = entries[i]
        closeness = len(q_compact) / max(len(compact), 1)
        if raw == node.id:
            found.append((1.0, i, "id"))
        elif q_lower == lower or q_joined == joined or q_lower in aliases:
            named = q_lower == lower or q_joined == joined
            found.append((1.0, i, "exact") if named else (_ALIAS_SCORE, i, "alias"))
        elif lower.startswith(q_lower) or joined.startswith(q_joined):
            found.append((0.8 + 0.1 * min(closeness, 1.0), i, "prefix"))
        elif q_lower in lower or q_compact in compact:
            found.append((0.6 + 0.1 * min(closeness, 1.0), i, "substring"))
        elif _names_technology(q_tokens, q_compact, technology):
            found.append((_TECHNOLOGY_SCORE, i, "technology"))
        elif node.kind == q_kind:
            found.append((_KIND_SCORE, i, "kind"))
        elif shared := _shared_words(q_tokens, weights, tokens, node.kind):
            found.append((0.4 + 0.15 * shared, i, "tokens"))
        elif ratio := _similarity(matcher, compact):
            found.append((0.4 * ratio, i, "similar"))
    order = derived.name_positions(snapshot)
    # Sorted on the score as shown, so that equal-looking scores are in name order.
    found.sort(key=lambda f: (-round(f[0], 4), order[f[1]]))
    return [Match(snapshot.nodes[i], round(score, 4), why) for score, i, why in found[:limit]]


def _similarity(matcher: difflib.SequenceMatcher[str], compact: str) -> float:
    """How alike the query (the matcher's second sequence) and `compact` are spelled, when
    alike enough to call a match; 0 otherwise."""
    matcher.set_seq1(compact)
    if matcher.real_quick_ratio() < _SIMILAR or matcher.quick_ratio() < _SIMILAR:
        return 0.0
    ratio = matcher.ratio()
    return ratio if ratio >= _SIMILAR else 0.0


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
    order = derived.name_positions(snapshot)
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
    runtime = derived.runtime(snapshot)
    to_go: dict[int, int] = {}
    for hops, layer in enumerate(rx.bfs_layers(runtime.flow_back, [target])[: max_depth + 1]):
        to_go.update(dict.fromkeys(layer, hops))
    if source not in to_go:
        return []
    order = derived.name_positions(snapshot)
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
    order = derived.name_positions(snapshot)
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
