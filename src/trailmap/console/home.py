"""An organization's Home page: the latest changes, what the graph knows and how fresh it is,
and the first steps (connect an assistant, send an event) until they are done."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap import clock
from trailmap.accounts import ApiKey, list_keys
from trailmap.accounts.principal import Principal
from trailmap.accounts.quotas import usage_this_month
from trailmap.console.orgs import OrgMember, org_member, org_nav, when
from trailmap.console.pages import e, page
from trailmap.console.reading import reader_of
from trailmap.console.timeline import event_link
from trailmap.graph.ask.overview import GraphOverview, graph_overview
from trailmap.http.context import context_of
from trailmap.timeline.queries import EventQuery, list_facet, one_per_change, query_events
from trailmap.timeline.times import format_relative

__all__ = [
    "CARD",
    "FirstSteps",
    "first_steps",
    "latest_changes",
    "mcp_keys",
    "router",
]

router = APIRouter(include_in_schema=False)

# The style of a first-step card (inline: the pages' policy allows styles, not scripts).
CARD = "border:1px solid #ccd;border-radius:6px;padding:.2rem 1rem 1rem;margin:1rem 0"
_LATEST = 5


def mcp_keys(keys: list[ApiKey]) -> list[ApiKey]:
    """The keys an assistant connects with: MCP keys (made by approving a client; only MCP
    uses them) and read-only keys (what docs/connect.md has a client without OAuth use)."""
    return [k for k in keys if k.kind == "MCP" or k.scope == "READ_ONLY"]


@dataclass(frozen=True, slots=True)
class FirstSteps:
    assistant_connected: bool
    has_events: bool


async def first_steps(request: Request, principal: Principal) -> FirstSteps:
    """Whether an assistant has called (an MCP or read-only key was used, or the plan counted
    an MCP call this month) and whether the organization has an event."""
    db = context_of(request).db
    keys = await list_keys(db, principal.org_slug)
    used = any(k.last_used is not None for k in mcp_keys(keys))
    if not used:
        used = (await usage_this_month(db, principal.org_id, clock.now()))["mcp_calls"] > 0
    has_events = bool(await list_facet(db, principal, "type", limit=1))
    return FirstSteps(assistant_connected=used, has_events=has_events)


async def latest_changes(request: Request, principal: Principal) -> list[dict[str, Any]]:
    """The newest few changes in the retention window, one entry per change."""
    query = EventQuery(from_=f"-{principal.retention_days}d", limit=_LATEST * 2)
    found = await query_events(context_of(request).db, principal, query)
    return one_per_change(found.events)[:_LATEST]


def _change(slug: str, event: dict[str, Any]) -> str:
    what = e(event["type"])
    if event.get("service"):
        what += f" of <b>{e(event['service'])}</b>"
    if event.get("version"):
        what += f" {e(event['version'])}"
    if event.get("subject"):
        what += f" to {e(event['subject'])}"
    described = f" — {e(event['description'])}" if event.get("description") else ""
    return (
        f"<li><time datetime='{e(event['time'])}' title='{e(event['time'])}'>"
        f"{e(event['time_relative'])}</time>: <a href='{e(event_link(slug, event))}'>{what}</a>"
        f"{described} "
        f"<span class=muted>({e(event['source'])})</span></li>"
    )


def _changes_section(slug: str, events: list[dict[str, Any]]) -> str:
    if not events:
        return "<h2>Latest changes</h2><p id=latest-changes>No events yet.</p>"
    items = "".join(_change(slug, event) for event in events)
    return f"<h2>Latest changes</h2><ul id=latest-changes>{items}</ul>"


def _graph_section(graph: GraphOverview) -> str:
    if graph.nodes == 0:
        text = (
            "The graph is empty: it learns services and what they call from OpenTelemetry "
            "traces sent to <code>/api/v1/otlp/v1/traces</code>."
        )
    else:
        fresh = "never"
        if graph.last_seen is not None:
            ago = format_relative(graph.last_seen, now=clock.now())
            fresh = f"{e(ago)} ({when(graph.last_seen)})"
        text = (
            f"<b>{graph.services}</b> services, <b>{graph.nodes}</b> nodes and "
            f"<b>{graph.edges}</b> edges; last seen in a trace {fresh}."
        )
    return f"<h2>Graph</h2><p id=graph-counts>{text}</p>"


def _cards(m: OrgMember, steps: FirstSteps) -> str:
    slug = e(m.slug)
    cards = []
    if not steps.assistant_connected:
        cards.append(
            f"<section id=card-connect style='{CARD}' aria-labelledby=card-connect-title>"
            "<h2 id=card-connect-title>Connect your assistant</h2>"
            "<p>Give Claude, ChatGPT, VS Code or Cursor this organization's timeline and "
            "graph over MCP: one URL, then sign in.</p>"
            f"<a href=/orgs/{slug}/connect>Connect an assistant</a></section>"
        )
    if not steps.has_events:
        cards.append(
            f"<section id=card-event style='{CARD}' aria-labelledby=card-event-title>"
            "<h2 id=card-event-title>Send your first event</h2>"
            "<p>Tell Trailmap about a deployment from curl, the CLI or CI.</p>"
            f"<a href=/orgs/{slug}/quickstart>Quick start</a></section>"
        )
    return "".join(cards)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


@router.get("/orgs/{slug}")
async def home_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    principal = await reader_of(request, m)
    settings = context_of(request).settings
    steps = await first_steps(request, principal)
    graph = await graph_overview(
        context_of(request).db, principal, stale_after_days=settings.graph_stale_after_days
    )
    changes = await latest_changes(request, principal)
    body = (
        f"<p class=muted>You are {_article(m.membership.role)} {e(m.membership.role)} of "
        f"<b>{e(m.name)}</b> "
        f"(<code>{e(m.slug)}</code>).</p>"
        + _cards(m, steps)
        + _changes_section(m.slug, changes)
        + _graph_section(graph)
    )
    return page(m.name, body, nav=org_nav(m))
