"""The MCP tools that ask the architecture graph, each answered by the graph/ask/queries.py
function the REST API calls, with a few lines of text (or a Mermaid diagram) beside it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from trailmap.accounts import Principal
from trailmap.graph.ask import queries
from trailmap.graph.model import EdgeKind, NodeKind
from trailmap.mcp.registry import from_argument, read_only_tool, tool_result

if TYPE_CHECKING:
    from trailmap.storage import Database

__all__ = ["register_graph_tools"]

At = Annotated[str | None, Field(description='The graph as it was then: "-2h", ISO 8601.')]
# "mermaid" says what it adds; a description would be repeated in six tools.
Format = Literal["json", "mermaid"]
Environment = Annotated[
    str | None,
    Field(description='Only this one, e.g. "production"; default any, production first.'),
]
NodeName = Annotated[
    str,
    Field(
        description='A node name, e.g. "checkout"; close spellings are taken.',
        max_length=300,
    ),
]


def _result(data: dict[str, Any], text: str) -> CallToolResult:
    if "mermaid" in data:
        text += "\n\n```mermaid\n" + data["mermaid"] + "\n```"
    return tool_result(data, text)


def _edge_text(edge: dict[str, Any]) -> str:
    line = f"{edge['from']} -{edge['kind']}-> {edge['to']}"
    if edge.get("calls_per_minute") is not None:
        line += f" ({edge['calls_per_minute']}/min"
        if edge.get("error_rate"):
            line += f", {edge['error_rate']:.1%} errors"
        if edge.get("p95_ms") is not None:
            line += f", p95 {edge['p95_ms']} ms"
        line += ")"
    return line


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _measure(by: str, score: float) -> str:
    """A service's score in words, before its dependents (which `dependents` is alone)."""
    if by == "dependents":
        return ""
    if by == "traffic":
        return f"{round(score, 2)} calls/min, "
    return f"{by} {score:.3g}, "


def _name(node: dict[str, Any]) -> str:
    return f"{node['name']} ({node['kind']}, {node['environment']})"


def _more(data: dict[str, Any]) -> list[str]:
    """The line a capped answer ends with: how many more, and how to get them."""
    return [f"{data['more']} more: {data['next']}."] if data.get("more") else []


def _technology_text(node: dict[str, Any]) -> str:
    text = f" {node['technology']}" if node.get("technology") else ""
    if "connected_services" in node:
        text += ", used by " + (", ".join(node["connected_services"]) or "no service")
    return text


def register_graph_tools(  # noqa: PLR0915 - one tool per block
    mcp: MCPServer,
    db: Database,
    begin: Callable[[Context], Awaitable[Principal]],
    *,
    default_timezone: str,
    stale_after_days: int = 7,
) -> None:
    tool = read_only_tool(mcp)

    async def ask(ctx: Context, at: str | None, fmt: str) -> queries.GraphQuery:
        principal = await begin(ctx)
        return queries.GraphQuery(
            principal=principal,
            at=at,
            format="mermaid" if fmt == "mermaid" else "json",
            stale_after_days=stale_after_days,
            default_timezone=default_timezone,
        )

    @tool
    async def search_nodes(
        ctx: Context,
        query: Annotated[
            str, Field(description="A name or part of one; empty lists them all.", max_length=200)
        ] = "",
        kinds: Annotated[list[NodeKind] | None, Field(description="Node kinds.")] = None,
        environment: Environment = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 10,
        offset: Annotated[int, Field(ge=0, description="Skip this many (paging).")] = 0,
        at: At = None,
        format: Format = "json",  # noqa: A002 - the argument is called format
    ) -> CallToolResult:
        """Find services, databases, caches, queues, topics, external APIs and AI model
        providers in the architecture graph by name (forgiving: "order service" finds
        "orders"), by kind ("databases" lists them) or by technology ("postgres", "kafka",
        "redis": with the services using each); with no query, list them, services first,
        busiest first. Use it to learn the exact names before the other graph tools."""
        q = await ask(ctx, at, format)
        data = await queries.search_nodes(
            db, q, query, kinds=kinds, environment=environment, limit=limit, offset=offset
        )
        lines = [
            f"- {_name(n)}{_technology_text(n)}" + (f" [{n['match']}]" if "match" in n else "")
            for n in data["nodes"]
        ]
        if not lines:
            lines.append(
                (f"No node matches {query!r}" if query.strip() else "No node listed")
                + f" among {data['total_nodes']} nodes."
                + (
                    " The graph is empty: send traces to /api/v1/otlp."
                    if not data["total_nodes"]
                    else ""
                )
            )
        return _result(data, "\n".join(lines + _more(data)))

    @tool
    async def get_node(
        ctx: Context,
        node: NodeName,
        environment: Environment = None,
        at: At = None,
        format: Format = "json",  # noqa: A002
    ) -> CallToolResult:
        """One node of the architecture graph: its attributes, what calls it (upstream) and
        what it calls (downstream) with calls/min, error rate and p95 latency over the last
        hour, its own last-hour figures, and its recent changes. For a database, cache or
        topic it lists the services that connect to it ("which services use PostgreSQL?")."""
        q = await ask(ctx, at, format)
        data = await queries.get_node(db, q, node, environment=environment)
        lines = [_name(data)]
        if data["attributes"].get("technology"):
            lines.append(f"Technology: {data['attributes']['technology']}")
        if data.get("matched"):
            lines.append(data["matched"])
        if data.get("last_hour"):
            h = data["last_hour"]
            lines.append(
                f"Last hour: {h.get('calls_per_minute')}/min, error rate {h.get('error_rate')}, "
                f"p95 {h.get('p95_ms')} ms"
            )
        if "connected_services" in data:
            lines.append(
                "Services connecting to it: " + (", ".join(data["connected_services"]) or "none")
            )
        lines.append("Upstream: " + ("; ".join(map(_edge_text, data["upstream"])) or "none"))
        lines.append("Downstream: " + ("; ".join(map(_edge_text, data["downstream"])) or "none"))
        changes = data["recent_changes"]
        if changes:
            lines.append(
                "Recent changes: "
                + "; ".join(
                    f"{c['time']} {c['type']} {c.get('version', '')}".strip() for c in changes
                )
            )
        return _result(data, "\n".join(lines))

    @tool
    async def traverse_dependencies(
        ctx: Context,
        node: NodeName,
        direction: Annotated[
            Literal["downstream", "upstream", "both"],
            Field(description="downstream: what it depends on; upstream: what depends on it."),
        ] = "downstream",
        max_depth: Annotated[int, Field(ge=1, le=10)] = 3,
        edge_kinds: Annotated[
            list[EdgeKind] | None,
            Field(
                description="Edge kinds to walk; by default the dependencies (calls, "
                "reads_writes, publishes, consumes, depends_on), not owned_by or runs_in."
            ),
        ] = None,
        node_kinds: Annotated[list[NodeKind] | None, Field(description="Node kinds shown.")] = None,
        environment: Environment = None,
        at: At = None,
        format: Format = "json",  # noqa: A002
    ) -> CallToolResult:
        """Walk the dependencies of a node: everything it depends on (downstream), everything
        that depends on it (upstream), or both, up to max_depth hops, with the edges and
        their traffic. Use it for "how do requests flow from the gateway?"."""
        q = await ask(ctx, at, format)
        data = await queries.traverse_dependencies(
            db,
            q,
            node,
            direction=direction,
            max_depth=max_depth,
            edge_kinds=edge_kinds,
            node_kinds=node_kinds,
            environment=environment,
        )
        lines = [f"{direction} of {_name(data['start'])}, up to {max_depth} hops:"]
        lines += [f"- depth {n['depth']}: {_name(n)}" for n in data["nodes"][1:]]
        lines += ["Edges:"] + [f"- {_edge_text(e)}" for e in data["edges"]]
        return _result(data, "\n".join(lines + _more(data)))

    @tool
    @from_argument
    async def find_path(
        ctx: Context,
        from_: Annotated[
            str, Field(alias="from", description="Where requests start.", max_length=300)
        ],
        to: Annotated[str, Field(description="Where they should arrive.", max_length=300)],
        max_paths: Annotated[int, Field(ge=1, le=10)] = 3,
        environment: Environment = None,
        at: At = None,
        format: Format = "json",  # noqa: A002
    ) -> CallToolResult:
        """The paths requests and messages take from one node to another, shortest first,
        with calls/min, error rate and p95 on each hop. Use it for "how do requests flow from
        the API gateway to the database?" or "the path between frontend and orders"."""
        q = await ask(ctx, at, format)
        data = await queries.find_path(
            db, q, from_, to, max_paths=max_paths, environment=environment
        )
        lines = [f"From {_name(data['from'])} to {_name(data['to'])}:"]
        for i, path in enumerate(data["paths"], 1):
            lines.append(f"{i}. {' -> '.join(path['nodes'])} ({path['hops']} hops)")
            lines += [f"   {_edge_text(e)}" for e in path["edges"]]
        if data.get("note"):
            lines.append(data["note"])
        return _result(data, "\n".join(lines))

    @tool
    async def get_impact(
        ctx: Context,
        node: NodeName,
        environment: Environment = None,
        limit: Annotated[
            int,
            Field(ge=1, le=100, description="How many of the nearest to list; all are counted."),
        ] = 50,
        at: At = None,
        format: Format = "json",  # noqa: A002
    ) -> CallToolResult:
        """The blast radius of a node: how many services and components depend on it,
        directly or transitively, at each distance, and the nearest of them one by one with
        the next hop toward the failed node and the share of its traffic that goes there.
        Use it for "what breaks if payments goes down?"."""
        q = await ask(ctx, at, format)
        data = await queries.get_impact(db, q, node, environment=environment, limit=limit)
        headline = (
            f"If {_name(data['node'])} fails: {data['impacted_count']} nodes depend on it "
            f"({data['impacted_services']} services), up to {data['max_depth']} hops away."
        )
        lines = [headline]
        if data["max_depth"] > 1:
            lines.append(
                "By depth: "
                + ", ".join(
                    f"{d['depth']}: {_count(d['nodes'], 'node')} "
                    f"({_count(d['services'], 'service')})"
                    for d in data["by_depth"]
                )
                + "."
            )
        if data["truncated"]:
            lines.append(f"The nearest {len(data['impacted'])}:")
        for i in data["impacted"]:
            share = i["share_of_traffic"]
            share_text = f", {share:.0%} of its calls" if share is not None else ""
            lines.append(f"- depth {i['depth']}: {_name(i)} via {i['via']}{share_text}")
        return _result(data, "\n".join(lines + _more(data)))

    @tool
    async def rank_critical_services(
        ctx: Context,
        by: Annotated[
            Literal["dependents", "betweenness", "pagerank", "traffic"],
            Field(
                description="dependents: how many depend on it, transitively; betweenness: "
                "dependency chains through it; pagerank: importance of its dependents; "
                "traffic: calls/min in and out."
            ),
        ] = "dependents",
        limit: Annotated[int, Field(ge=1, le=100)] = 10,
        environment: Environment = None,
        at: At = None,
        format: Format = "json",  # noqa: A002
    ) -> CallToolResult:
        """The most critical services of the architecture, by one measure. Use it for "what
        are the most critical services?"."""
        q = await ask(ctx, at, format)
        data = await queries.rank_critical_services(
            db, q, by=by, limit=limit, environment=environment
        )
        lines = [f"Most critical services by {by}:"] + [
            f"{i}. {_name(s)}: {_measure(by, s['score'])}{_count(s['dependents'], 'dependent')}"
            for i, s in enumerate(data["services"], 1)
        ]
        return _result(data, "\n".join(lines + _more(data)))
