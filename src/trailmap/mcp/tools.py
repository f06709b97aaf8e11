"""The MCP tools: each parses its arguments, calls the domain function the REST API calls too,
and answers with structured content for the model and a few lines of text beside it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult
from pydantic import Field

from trailmap import __version__
from trailmap.accounts import Principal, quotas
from trailmap.mcp.arguments import ToolArguments
from trailmap.mcp.change_tools import EventSource, register_change_tools
from trailmap.mcp.counting import tool_call_counter
from trailmap.mcp.graph_tools import register_graph_tools
from trailmap.mcp.guardrail_tools import register_guardrail_tools
from trailmap.mcp.prompts import register_prompts
from trailmap.mcp.registry import (
    READ_ONLY,
    event_for_model,
    read_only_tool,
    refusing,
    tool_result,
)
from trailmap.mcp.registry import from_argument as _from_argument
from trailmap.outbound import OutboundPolicy
from trailmap.telemetry import ServerTelemetry
from trailmap.timeline import queries as timeline
from trailmap.timeline.context import organization_context
from trailmap.timeline.queries import EventQuery, list_facet, summarize_events
from trailmap.timeline.times import format_time

if TYPE_CHECKING:
    from trailmap.storage import Database

__all__ = ["PrincipalSource", "build_mcp_server"]

# How a tool learns who is calling: from the HTTP request, or fixed for a stdio process.
PrincipalSource = Callable[[Context], Awaitable[Principal]]


_TIME_FORMS = (
    'Relative ("-30m", "-2h", "-7d", "-1w"), "now", "today", "yesterday" (day boundaries in '
    'the timezone argument), ISO 8601 ("2026-11-20T10:00:00Z", "2026-11-20"), or RFC 2822.'
)
# The argument descriptions name the usual forms; get_organization_context gives them all.
_SHORT_FORMS = '"-2h", "-7d", "today", "yesterday", "now" or ISO 8601'
From = Annotated[str, Field(alias="from", description=f"Start of the range: {_SHORT_FORMS}.")]
To = Annotated[str, Field(description="End of the range, in the same forms.")]
Timezone = Annotated[
    str | None,
    Field(description='IANA zone of "today" and of the times shown, e.g. "Asia/Tokyo".'),
]
Severity = Literal["LOW", "MINOR", "MAJOR", "CRITICAL"]

_INSTRUCTIONS = """\
Trailmap holds the timeline of changes to production systems: deployments, rollbacks,
config changes, feature flags, incidents, data loads. Call get_organization_context first:
it says which event types, sources and environments exist, the retention window and the
server time. Then use query_events for "what changed" questions, get_event_summary for an
overview, and get_event for one event's details. Times accept relative forms such as -2h.
It also holds the architecture graph learned from traces: search_nodes finds services,
databases, caches, topics and external APIs by name; get_node, traverse_dependencies,
find_path, get_impact and rank_critical_services answer how things connect. Joined:
get_metrics_around_event says whether a change moved a service's error rate, throughput or
latency (with a verdict and p-value), and find_changes_near lists what changed near a
service, nearest first. The prompts incident_triage, impact_analysis and
discover_architecture give a plan for each kind of question.
"""


@dataclass(frozen=True)
class _Tools:
    db: Database
    principal_of: PrincipalSource
    default_timezone: str

    async def begin(self, ctx: Context) -> Principal:
        """Who is calling; counts the call against the plan's monthly MCP quota."""
        principal = await self.principal_of(ctx)
        await quotas.count_mcp_call(self.db, principal)
        return principal


def _events(count: int) -> str:
    return "1 event" if count == 1 else f"{count:,} events"


def _for_model(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event_for_model(e) for e in events]


def _event_line(event: dict[str, Any]) -> str:
    parts = [event["time"], f"({event['time_relative']})", event["type"]]
    if event.get("service"):
        parts.append(event["service"])
    if event.get("version"):
        parts.append(event["version"])
    if event.get("subject"):
        parts.append(f"in {event['subject']}")
    if event.get("severity"):
        parts.append(f"[{event['severity']}]")
    line = " ".join(parts)
    if event.get("description"):
        line += f": {event['description']}"
    if event.get("verdict"):
        # The deployment's automatic verdict, reached once its after window passed.
        line += f" [verdict: {event['verdict'].replace('_', ' ')}]"
    if event.get("also_reported_by"):
        # One change, two reports: the one shown, and the others (traces, another producer).
        line += f" [reported by {event['source']}, also {', '.join(event['also_reported_by'])}]"
    if event.get("violations"):
        # A deployment stored against a guardrail: which rules, in a few words.
        kinds = ", ".join(v["kind"] for v in event["violations"])
        line += f" [guardrail violations: {kinds}]"
    return f"- {line} (id {event['id']})"


# A facet tool counts this many values, to say how many more there are than it lists.
_FACETS_COUNTED = 1_000
# get_organization_context names this many of each facet (the most frequent first).
_CONTEXT_FACETS = 10


def _more_by_limit(total: int, shown: int) -> dict[str, Any]:
    """What a list cut at `limit` adds: how many more, and how to get them."""
    more = {"more": total - shown}
    if shown >= 100:
        return {**more, "next": "at most 100 are listed"}
    return {**more, "next": f"call again with limit={min(total, 100)}"}


def _in_brief(org: dict[str, Any]) -> dict[str, Any]:
    """The organization's facets as its context gives them: the most frequent values with their
    counts, and how many more; when each was last seen, and the rest, are list_event_*'s."""
    brief: dict[str, Any] = {}
    for key in ("event_types", "subjects", "sources"):
        rows = org[key]
        brief[key] = [{"value": r["value"], "count": r["count"]} for r in rows[:_CONTEXT_FACETS]]
        if len(rows) > _CONTEXT_FACETS:
            brief[f"{key}_more"] = len(rows) - _CONTEXT_FACETS
            brief["next"] = "list_event_types, list_event_subjects, list_event_sources list all"
    return brief


def _facet_answer(what: str, rows: list[dict[str, Any]], limit: int) -> CallToolResult:
    shown = rows[:limit]
    data: dict[str, Any] = {what: shown}
    lines = [
        f"- {r['value']}: {_events(r['count'])}, last {r['last_seen']} ({r['last_seen_relative']})"
        for r in shown
    ]
    if len(rows) > limit:
        data.update(_more_by_limit(len(rows), limit))
        lines.append(f"{data['more']} more: {data['next']}.")
    return tool_result(data, "\n".join(lines) or f"No {what} yet: no events in the window.")


def _facet_text(data: dict[str, Any], key: str, tool: str) -> str:
    shown = ", ".join(f"{f['value']} ({f['count']})" for f in data[key]) or "none yet"
    more = data.get(f"{key}_more")
    return shown + (f", and {more} more ({tool} lists them)" if more else "")


def _range_text(rng: Any) -> str:
    return f"{format_time(rng.effective_start, rng.tz)} to {format_time(rng.end, rng.tz)}"


def build_mcp_server(
    db: Database,
    principal_of: PrincipalSource,
    *,
    default_timezone: str = "UTC",
    graph_stale_after_days: int = 7,
    secret_key: str | None = None,
    outbound: OutboundPolicy,
    telemetry: ServerTelemetry | None = None,
) -> MCPServer:
    """An MCP server with Trailmap's tools, all read-only; `telemetry` counts their calls."""
    mcp = MCPServer(
        "trailmap",
        title="Trailmap",
        version=__version__,
        instructions=" ".join(_INSTRUCTIONS.split()),
        website_url="https://github.com/trailmap",
    )
    tools = _Tools(db, principal_of, default_timezone)
    _register(mcp, tools)
    register_graph_tools(
        mcp,
        db,
        tools.begin,
        default_timezone=default_timezone,
        stale_after_days=graph_stale_after_days,
    )
    register_change_tools(
        mcp,
        db,
        tools.begin,
        default_timezone=default_timezone,
        stale_after_days=graph_stale_after_days,
        secret_key=secret_key,
        outbound=outbound,
    )
    register_guardrail_tools(mcp, db, tools.begin)
    register_prompts(mcp)
    if telemetry is not None:
        # Outside the reading of arguments, so that the calls it refuses are counted.
        mcp.middleware.append(tool_call_counter(telemetry, mcp))
    mcp.middleware.append(ToolArguments(mcp))
    return mcp


def _register(mcp: MCPServer, t: _Tools) -> None:
    @read_only_tool(mcp)
    async def get_organization_context(ctx: Context, timezone: Timezone = None) -> CallToolResult:
        """Call this first. Describes the organization: its plan, retention window and the
        oldest time that can be asked, quotas and usage, the server time and default time
        zone, which event types, sources and environments (subjects) exist, and how to
        phrase times for the other tools."""
        principal = await t.begin(ctx)
        org = await organization_context(
            t.db, principal, timezone=timezone, default_timezone=t.default_timezone
        )
        data = {**org.as_json(), "time_expressions": _TIME_FORMS}
        data.update(_in_brief(data))
        lines = [
            (
                f"Organization {org.organization} ({org.plan} plan); events kept "
                f"{org.retention_days} days, oldest queryable {org.oldest_queryable}."
            ),
            f"Server time {org.server_time} ({org.timezone}).",
            "Event types: " + _facet_text(data, "event_types", "list_event_types"),
            "Environments (subject): " + _facet_text(data, "subjects", "list_event_subjects"),
            "Sources: " + _facet_text(data, "sources", "list_event_sources"),
            f"Times: {_TIME_FORMS}",
        ]
        return tool_result(data, "\n".join(lines))

    @read_only_tool(mcp)
    @_from_argument
    async def query_events(
        ctx: Context,
        from_: From = "-24h",
        to: To = "now",
        type: Annotated[  # noqa: A002 - the argument is called type in the interface
            list[str] | None,
            Field(description='Event types, e.g. ["deployment", "rollback"]; any of them.'),
        ] = None,
        source: Annotated[
            list[str] | None, Field(description='Sources, e.g. ["//github.com/acme/api"].')
        ] = None,
        subject: Annotated[
            list[str] | None,
            Field(description='Environments, e.g. ["production"]; any of them.'),
        ] = None,
        severity: Annotated[list[Severity] | None, Field(description="Severities.")] = None,
        service: Annotated[
            list[str] | None, Field(description='Services, e.g. ["checkout"].')
        ] = None,
        search: Annotated[
            str | None,
            Field(
                description="Words that must all appear in the event.",
                max_length=200,
            ),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="Events per page, 1 to 100.")] = 10,
        cursor: Annotated[
            str | None, Field(description="next_cursor from the previous page.")
        ] = None,
        timezone: Timezone = None,
    ) -> CallToolResult:
        """What changed: change events (deployments, rollbacks, config changes, flags,
        incidents...) in a time range, newest first, filtered (any case): "what was deployed
        today?", "what changed in the last 2 hours?". One entry per change (also_reported_by:
        its other sources), with its guardrail violations and verdict. Paged: pass
        next_cursor. An empty answer names the closest existing values."""
        principal = await t.begin(ctx)
        query = EventQuery(
            from_=from_,
            to=to,
            types=type or (),
            sources=source or (),
            subjects=subject or (),
            severities=severity or (),
            services=service or (),
            search=search,
            limit=limit,
            cursor=cursor,
            timezone=timezone,
        )
        page = await timeline.query_events(
            t.db, principal, query, default_timezone=t.default_timezone
        )
        rng = page.range
        data: dict[str, Any] = {
            "events": _for_model(page.events),
            "next_cursor": page.next_cursor,
            "from": format_time(rng.effective_start, rng.tz),
            "to": format_time(rng.end, rng.tz),
            "timezone": rng.tz.key,
        }
        if page.note:
            data["note"] = page.note
        if page.hint:
            data["hint"] = page.hint
        if page.events:
            text = f"{_events(len(page.events))} from {_range_text(rng)}, newest first:\n"
            text += "\n".join(_event_line(e) for e in page.events)
            if page.next_cursor:
                text += "\nMore events: call again with cursor=" + page.next_cursor
            if page.note:
                text += f"\n{page.note}"
        else:
            text = f"No events from {_range_text(rng)}. {page.note}"
        return tool_result(data, text)

    @read_only_tool(mcp)
    async def get_event(
        ctx: Context,
        id: Annotated[  # noqa: A002 - the argument is called id in the interface
            str,
            Field(
                description="The event's id, as query_events returns it (the producer's "
                "CloudEvents id).",
                max_length=200,
            ),
        ],
        source: EventSource = None,
        timezone: Timezone = None,
    ) -> CallToolResult:
        """One event with all its details, including its data."""
        principal = await t.begin(ctx)
        event = await timeline.get_event(
            t.db,
            principal,
            id,
            source=source,
            timezone=timezone,
            default_timezone=t.default_timezone,
        )
        return tool_result(_for_model([event])[0], _event_line(event))

    @read_only_tool(mcp)
    @_from_argument
    async def get_event_summary(
        ctx: Context, from_: From = "-24h", to: To = "now", timezone: Timezone = None
    ) -> CallToolResult:
        """An overview of a time range: events counted by type, environment, source and
        severity, and the latest few; before query_events for a broad question ("what
        happened this week?")."""
        principal = await t.begin(ctx)
        summary = await summarize_events(
            t.db,
            principal,
            from_=from_,
            to=to,
            timezone=timezone,
            default_timezone=t.default_timezone,
        )
        rng = summary.range
        shown = summary.counts_json()
        data = {
            **shown,
            # Counts alone: when each value was last seen is list_event_types' answer, and
            # would double the summary of a busy week.
            **{
                by: [{"value": r["value"], "count": r["count"]} for r in shown[by]]
                for by in ("by_type", "by_subject", "by_source", "by_severity")
            },
            "latest": _for_model(shown["latest"]),
            "from": format_time(rng.effective_start, rng.tz),
            "to": format_time(rng.end, rng.tz),
        }
        if summary.note:
            data["note"] = summary.note

        def counts(rows: list[dict[str, Any]]) -> str:
            return ", ".join(f"{r['value']} {r['count']}" for r in rows) or "none"

        text = (
            f"{_events(summary.total)} from {_range_text(rng)}.\n"
            f"By type: {counts(summary.by_type)}\nBy environment: {counts(summary.by_subject)}\n"
            f"By severity: {counts(summary.by_severity)}\nLatest:\n"
            + "\n".join(_event_line(e) for e in summary.latest)
            + (f"\n{summary.note}" if summary.note else "")
        )
        return tool_result(data, text)

    def _facet_tool(facet: str, what: str) -> Callable[..., Awaitable[CallToolResult]]:
        async def tool(
            ctx: Context,
            limit: Annotated[int, Field(ge=1, le=100)] = 20,
            timezone: Timezone = None,
        ) -> CallToolResult:
            principal = await t.begin(ctx)
            rows = await list_facet(
                t.db,
                principal,
                facet,
                timezone=timezone,
                default_timezone=t.default_timezone,
                limit=_FACETS_COUNTED,
            )
            return _facet_answer(what, rows, limit)

        return tool

    for name, facet, what, doc in (
        ("list_event_types", "type", "types", "The event types, with counts and last seen."),
        ("list_event_sources", "source", "sources", "The event sources, with counts, last seen."),
        (
            "list_event_subjects",
            "subject",
            "subjects",
            "The environments (event subjects, e.g. production), with counts and last seen.",
        ),
    ):
        mcp.add_tool(
            refusing(_facet_tool(facet, what)), name=name, description=doc, annotations=READ_ONLY
        )
