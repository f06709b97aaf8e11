"""The MCP tools that ask the architecture graph, each answered by the graph/ask/queries.py
function the REST API calls, with a few lines of text (or a Mermaid diagram) beside it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from trailmap.accounts import Principal
from trailmap.graph.ask import changes, compare, queries
from trailmap.graph.model import EdgeKind, NodeKind
from trailmap.mcp.registry import from_argument, read_only_tool, tool_result

if TYPE_CHECKING:
    from trailmap.storage import Database

__all__ = ["EvidenceArgument", "register_graph_tools"]

At = Annotated[str | None, Field(description='As of: "-2h", ISO 8601.')]
# "mermaid" says what it adds; a description would be repeated in six tools.
Format = Literal["json", "mermaid"]
Environment = Annotated[
    str | None,
    Field(description='e.g. "production"'),
]
NodeName = Annotated[
    str,
    Field(
        description='e.g. "checkout"; close spellings are taken.',
        max_length=300,
    ),
]

# Edges followed: observed (traces), declared (repositories, clusters, catalogs), or all; the
# values say it, and a description would be repeated in five tools (the tools' own say it).
EvidenceArgument = Literal["all", "observed", "declared"]


def _result(data: dict[str, Any], text: str) -> CallToolResult:
    if "mermaid" in data:
        text += "\n\n```mermaid\n" + data["mermaid"] + "\n```"
    return tool_result(data, text)


def _edge_text(edge: dict[str, Any]) -> str:
    line = f"{edge['from']} -{edge['kind']}-> {edge['to']}"
    if edge.get("sources", "otel") != "otel":
        line += f" [{edge['sources']}]"
    if edge.get("declared_at"):
        line += f" (declared at {edge['declared_at']})"
    if edge.get("calls_per_minute") is not None:
        line += f" ({edge['calls_per_minute']}/min"
        if edge.get("error_rate"):
            line += f", {edge['error_rate']:.1%} errors"
        if edge.get("p95_ms") is not None:
            line += f", p95 {edge['p95_ms']} ms"
        line += ")"
    return line


def _owner_text(owner: dict[str, Any]) -> str:
    where = owner.get("declared_at") or ([owner["attribute"]] if owner.get("attribute") else [])
    return str(owner["name"]) + (f" ({where[0]})" if where else "")


def _sides_text(sides: dict[str, int]) -> str:
    return (
        f"observed and declared {sides['both']}, observed only {sides['observed']}, "
        f"declared only {sides['declared']}"
    )


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
        kinds: list[NodeKind] | None = None,
        environment: Environment = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 10,
        offset: Annotated[int, Field(ge=0)] = 0,
        at: At = None,
        format: Format = "json",  # noqa: A002 - the argument is called format
    ) -> CallToolResult:
        """Find nodes by name (forgiving: "order service" finds "orders"; declared names
        too), kind ("databases") or technology ("postgres", "kafka": with the services using
        each); no query lists them. Use it to learn names for the other graph tools."""
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
        """One node: its callers and callees, each observed, declared (file:line) or both,
        with last-hour calls/min, errors and p95; its owners, where it is declared, recent
        changes; for a datastore or topic, the services using it."""
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
        if data.get("declared"):
            declared = data["declared"]
            lines.append(
                f"Declared as {', '.join(declared['names'])}"
                + (
                    f" at {'; '.join(declared['declared_at'])}"
                    if declared.get("declared_at")
                    else ""
                )
            )
        if data["owners"]:
            lines.append("Owners: " + ", ".join(_owner_text(o) for o in data["owners"]))
        lines.append(
            f"Dependencies {_sides_text(data['dependencies'])}; "
            f"dependents {_sides_text(data['dependents'])}."
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
        direction: Literal["downstream", "upstream", "both"] = "downstream",
        max_depth: Annotated[int, Field(ge=1, le=10)] = 3,
        edge_kinds: list[EdgeKind] | None = None,
        node_kinds: list[NodeKind] | None = None,
        environment: Environment = None,
        evidence: EvidenceArgument = "all",
        at: At = None,
        format: Format = "json",  # noqa: A002
    ) -> CallToolResult:
        """Walk a node's dependencies (downstream), dependents (upstream) or both, up to
        max_depth hops, with each edge's traffic and sources; edge_kinds default to the
        dependencies. evidence: observed (traces), declared (repositories, clusters,
        catalogs) or all."""
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
            evidence=evidence,
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
        evidence: EvidenceArgument = "all",
        at: At = None,
        format: Format = "json",  # noqa: A002
    ) -> CallToolResult:
        """How requests and messages flow from one node to another: the paths, shortest
        first, with calls/min, error rate and p95 on each hop."""
        q = await ask(ctx, at, format)
        data = await queries.find_path(
            db, q, from_, to, max_paths=max_paths, environment=environment, evidence=evidence
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
            Field(ge=1, le=100, description="How many to list; all are counted."),
        ] = 50,
        evidence: EvidenceArgument = "all",
        at: At = None,
        format: Format = "json",  # noqa: A002
    ) -> CallToolResult:
        """The blast radius: how many nodes depend on this one at each distance, the nearest
        listed with the next hop and their traffic's share ("what breaks if payments goes
        down?")."""
        q = await ask(ctx, at, format)
        data = await queries.get_impact(
            db, q, node, environment=environment, limit=limit, evidence=evidence
        )
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
                description="dependents: transitively; betweenness: chains through it; "
                "pagerank; traffic: calls/min."
            ),
        ] = "dependents",
        limit: Annotated[int, Field(ge=1, le=100)] = 10,
        environment: Environment = None,
        at: At = None,
        format: Format = "json",  # noqa: A002
    ) -> CallToolResult:
        """The most critical services, by one measure."""
        q = await ask(ctx, at, format)
        data = await queries.rank_critical_services(
            db, q, by=by, limit=limit, environment=environment
        )
        lines = [f"Most critical services by {by}:"] + [
            f"{i}. {_name(s)}: {_measure(by, s['score'])}{_count(s['dependents'], 'dependent')}"
            for i, s in enumerate(data["services"], 1)
        ]
        return _result(data, "\n".join(lines + _more(data)))

    @tool
    @from_argument
    async def get_graph_changes(
        ctx: Context,
        from_: Annotated[
            str, Field(alias="from", description='"-1d", "yesterday", ISO 8601.')
        ] = "-1d",
        to: str = "now",
        environment: Environment = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
        offset: Annotated[int, Field(ge=0)] = 0,
    ) -> CallToolResult:
        """Nodes and edges that appeared, went away or changed sources between two times
        ("what new dependencies appeared since yesterday?")."""
        q = await ask(ctx, None, "json")
        data = await changes.get_graph_changes(
            db, q, from_=from_, to=to, environment=environment, limit=limit, offset=offset
        )
        counts = data["summary"]
        head = (
            f"From {data['from']} to {data['to']}: {counts['edges_appeared']} edges appeared, "
            f"{counts['edges_went_away']} went away, {counts['sources_changed']} changed "
            f"sources; {counts['nodes_appeared']} nodes appeared, "
            f"{counts['nodes_went_away']} went away."
        )
        lines = [head]
        lines += [f"- {_change_text(c)}" for c in data["changes"]]
        return _result(data, "\n".join(lines + _more(data)))

    @tool
    @from_argument
    async def compare_declared_and_observed(
        ctx: Context,
        service: Annotated[
            str | None, Field(description="Default: the whole graph.", max_length=300)
        ] = None,
        from_: Annotated[str, Field(alias="from")] = "-7d",
        to: str = "now",
        environment: Environment = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> CallToolResult:
        """Dependencies declared but not called in the window (unused, or not instrumented)
        and called but declared nowhere (hidden), for a service or the whole graph."""
        q = await ask(ctx, None, "json")
        data = await compare.compare_declared_and_observed(
            db, q, service=service, from_=from_, to=to, environment=environment, limit=limit
        )
        lines = []
        if data.get("note"):
            lines.append(data["note"])
        lines.append(
            f"Declared but not called from {data['from']} to {data['to']}: "
            f"{data['declared_not_observed_total']}."
        )
        lines += [f"- {_edge_text(e)}, likely {e['likely']}" for e in data["declared_not_observed"]]
        lines.append(f"Called but not declared: {data['observed_not_declared_total']}.")
        lines += [f"- {_edge_text(e)}, {e['calls']} calls" for e in data["observed_not_declared"]]
        return _result(data, "\n".join(lines + _more(data)))


def _change_text(change: dict[str, Any]) -> str:
    what = change["change"].replace("_", " ")
    if "node" in change:
        thing = f"node {change['node']} ({change['kind']})"
    else:
        thing = f"{change['from']} -{change['kind']}-> {change['to']}"
    text = f"{what}: {thing} [{change['sources']}]"
    if change.get("before"):
        text += f", was [{change['before']}]"
    if change.get("why"):
        text += f", {change['why']}"
    return text
