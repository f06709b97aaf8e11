"""MCP prompts: short plans that tell an assistant which tools to call, in which order, for
the questions Trailmap is made for."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

__all__ = ["register_prompts"]


def register_prompts(mcp: MCPServer) -> None:
    @mcp.prompt(
        title="Incident triage",
        description="Find what changed around a misbehaving service and whether it moved "
        "its metrics.",
    )
    def incident_triage(service: str, since: str = "-2h") -> str:
        return f"""Triage an incident on the service "{service}", looking from {since} to now.

1. search_nodes(query="{service}") to learn its exact name and environment.
2. find_changes_near(node="{service}", from="{since}", max_depth=2): the changes of the
   service and its neighbours, nearest first, each with why it is listed.
3. For the top changes (deployments, config changes, feature flags first), call
   get_metrics_around_event(event_id=...) and note the verdicts; a change whose error rate
   or latency "increased" right after it is the prime suspect.
4. get_node(node="{service}") for its upstream and downstream edges over the last hour:
   a dependency with a high error rate points further down.
5. get_impact(node="{service}") to say who is affected.
Answer with: the most likely cause (the change, its time, the figures and the verdict),
the other candidates and why they are less likely, who is affected, and what to check next.
Quote figures and p-values as the tools give them; say "not enough data" where they do."""

    @mcp.prompt(
        title="Impact analysis",
        description="What a change or a service failure reaches: dependents, traffic and "
        "measured effect.",
    )
    def impact_analysis(event_id: str | None = None, service: str | None = None) -> str:
        if event_id:
            start = f"""1. get_event(id="{event_id}") to learn the change and its service.
2. get_metrics_around_event(event_id="{event_id}") for the measured effect on that
   service (verdict per metric).
3. get_impact(node=<the event's service>) for everything that depends on it, with depth
   and share of traffic."""
        elif service:
            start = f"""1. search_nodes(query="{service}") to learn its exact name.
2. get_impact(node="{service}") for everything that depends on it, with depth and share
   of traffic.
3. query_events(service=["{service}"], from="-24h") for its recent changes, and
   get_metrics_around_event on the latest one."""
        else:
            return (
                "Ask which change (an event id from query_events) or which service to "
                "analyse, then call this prompt again with event_id or service."
            )
        return f"""Analyse the impact of {"event " + event_id if event_id else service}.

{start}
4. find_path from the main entry point (rank_critical_services(by="pagerank") shows it)
   to the service, to show how user requests reach it.
Answer with: what is affected (services by depth, with their share of traffic), the measured
effect so far, and the services whose owners should hear about it."""

    @mcp.prompt(
        title="Discover the architecture",
        description="A tour of the services, datastores and their dependencies.",
    )
    def discover_architecture() -> str:
        return """Describe this organization's architecture from Trailmap's graph.

1. get_organization_context for the environments and what Trailmap holds.
2. rank_critical_services(by="pagerank", limit=10) and rank_critical_services(
   by="dependents", limit=10): the central services.
3. search_nodes() lists every node, services first, busiest first (page with offset while
   it says "more"); search_nodes(kinds=["database", "cache", "queue", "topic",
   "external_api"]) lists the datastores, and get_node on each names the services that
   connect to it.
4. traverse_dependencies(node=<the entry point>, direction="downstream", max_depth=4,
   format="mermaid") for a diagram of how requests flow.
5. compare_declared_and_observed() for what repositories, clusters and catalogs declare
   that traces do not show, and the other way round (it says when nothing is declared).
Answer with: the entry points, the main request paths, the datastores and who uses them,
the external APIs, and the single points of failure (high dependents or betweenness)."""
