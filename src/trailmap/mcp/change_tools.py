"""The MCP tools that join changes with their surroundings: get_metrics_around_event (did
a metric move after a change?), find_changes_near (what changed near a service?) and
get_dora_metrics (how do the changes go, by DORA's four key metrics?)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from trailmap.accounts import Principal
from trailmap.graph.ask import near, queries
from trailmap.mcp.graph_tools import EvidenceArgument
from trailmap.mcp.registry import event_for_model, from_argument, read_only_tool, tool_result
from trailmap.metrics import around
from trailmap.outbound import OutboundPolicy
from trailmap.timeline import dora
from trailmap.timeline.events import DETECTED_SOURCE_PREFIX

if TYPE_CHECKING:
    from trailmap.storage import Database

__all__ = ["EventSource", "register_change_tools"]

# The `source` argument of the tools that take an event's id (get_event here too).
EventSource = Annotated[
    str | None,
    Field(
        description="The event's source, needed only when producers sent the same id from "
        "several sources.",
        max_length=500,
    ),
]


def _metric_line(metric: dict[str, Any]) -> str:
    line = f"- {metric['name']}: {metric['verdict']}"
    if metric.get("source"):
        line += f" [{metric['source']}]"
    return line + f" — {metric['reason']}"


def _change_line(change: dict[str, Any]) -> str:
    event = change["event"]
    also_by = event.get("also_reported_by", ())
    traces = any(str(s).startswith(DETECTED_SOURCE_PREFIX) for s in also_by)
    also = ", its version also seen in traces" if traces else ""
    return f"- {change['reason']} (event {event['id']}, {event['time']}{also})"


def _dora_week(week: dict[str, Any]) -> dict[str, Any]:
    """A week as a model reads it: counts, and the medians in hours when there are any."""
    out: dict[str, Any] = {
        "week": week["week"],
        "deployments": week["deployments"],
        "failed": week["failed_deployments"],
    }
    if week["partial"]:
        out["partial"] = True
    for name, key in (
        ("lead_time_median_h", "lead_time_median_seconds"),
        ("restore_median_h", "time_to_restore_median_seconds"),
    ):
        if week[key] is not None:
            out[name] = round(week[key] / 3600, 1)
    return out


def register_change_tools(
    mcp: MCPServer,
    db: Database,
    begin: Callable[[Context], Awaitable[Principal]],
    *,
    default_timezone: str,
    stale_after_days: int,
    secret_key: str | None,
    outbound: OutboundPolicy,
) -> None:
    tool = read_only_tool(mcp)

    @tool
    async def get_metrics_around_event(
        ctx: Context,
        event_id: Annotated[
            str, Field(description="The event's id, as query_events returns it.", max_length=200)
        ],
        source: EventSource = None,
        window: Annotated[
            Literal["1h", "2h", "4h", "6h", "12h", "24h"],
            Field(description="How long before and after the event to compare."),
        ] = "2h",
        metrics: Annotated[
            list[str] | None,
            Field(
                description="Metric names; default error_rate, throughput, p50_latency, "
                "p95_latency, p99_latency.",
                max_length=10,
            ),
        ] = None,
    ) -> CallToolResult:
        """Did the service's metrics change after this event? Per metric of its service and
        environment: mean, median, p95 and points before and after, the change, a
        Mann-Whitney U p-value and a verdict (increased, decreased, no significant change,
        not enough data). For "the last deployment of checkout", first query_events(
        type=["deployment"], service=["checkout"], limit=1) for its id."""
        principal = await begin(ctx)
        data = await around.get_metrics_around_event(
            db,
            principal,
            event_id,
            source=source,
            window=window,
            metrics=metrics,
            outbound=outbound,
            secret_key=secret_key,
            default_timezone=default_timezone,
        )
        text = "\n".join([data["summary"], *(_metric_line(m) for m in data["metrics"])])
        return tool_result({**data, "event": event_for_model(data["event"])}, text)

    @tool
    @from_argument
    async def find_changes_near(
        ctx: Context,
        node: Annotated[
            str,
            Field(description='A service or other node, e.g. "checkout".', max_length=300),
        ],
        from_: Annotated[str, Field(alias="from", description='"-1h", "-6h", ISO 8601.')] = "-1h",
        to: str = "now",
        max_depth: Annotated[int, Field(ge=0, le=5, description="Hops from the node.")] = 2,
        direction: Literal["downstream", "upstream", "both"] = "both",
        limit: Annotated[int, Field(ge=1, le=100)] = 5,
        evidence: EvidenceArgument = "all",
    ) -> CallToolResult:
        """What changed near a service: its changes and those of its dependencies and
        dependents within max_depth hops, nearest in graph and time first, each with why
        ("payments, one hop downstream of checkout: deployed 14 minutes ago"). Use it first
        when a service misbehaves."""
        principal = await begin(ctx)
        q = queries.GraphQuery(
            principal=principal,
            stale_after_days=stale_after_days,
            default_timezone=default_timezone,
        )
        data = await near.find_changes_near(
            db,
            q,
            node,
            from_=from_,
            to=to,
            max_depth=max_depth,
            direction=direction,
            limit=limit,
            evidence=evidence,
        )
        head = (
            f"{data['total']} change{'s' if data['total'] != 1 else ''} near "
            f"{data['node']['name']} ({data['node']['environment']}) from {data['from']} to "
            f"{data['to']}, within {max_depth} hops ({data['nodes_searched']} nodes)."
        )
        text = "\n".join([head, *(_change_line(c) for c in data["changes"])])
        changes = [{**c, "event": event_for_model(c["event"])} for c in data["changes"]]
        return tool_result({**data, "changes": changes}, text)

    @tool
    @from_argument
    async def get_dora_metrics(
        ctx: Context,
        # Lengths are checked by the domain (in one sentence each), not listed here: the
        # tool list has a budget (tests/test_demo_answer_sizes.py).
        from_: Annotated[str, Field(alias="from")] = "quarter",
        to: str = "now",
        service: str | None = None,
        environment: str | None = None,
        evidence_limit: Annotated[int, Field(ge=0, le=200)] = 5,
    ) -> CallToolResult:
        """DORA metrics by week: deployment frequency, lead time, change failure rate, time
        to restore, with levels (named DORA report) and event ids. This quarter:
        from="quarter"; else "-90d" or ISO."""
        principal = await begin(ctx)
        data = await dora.get_dora_metrics(
            db,
            principal,
            from_=from_,
            to=to,
            service=service,
            environment=environment,
            default_timezone=default_timezone,
            evidence_limit=evidence_limit,
        )
        # The weeks are in the structured answer only: the text would repeat them.
        weeks = [_dora_week(w) for w in data["weeks"]]
        return tool_result({**data, "weeks": weeks}, data["summary"])
