"""A Service page: what calls it and what it calls, with figures and whether traces observed
each, a repository, cluster or catalog declares it, or both; its last hour's rate, errors and
latency as charts; its recent changes; its owners and where it is declared when a source says
(docs/console.md, "Graph and services")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from trailmap import clock
from trailmap.console.graph import graph_href, graph_query, service_href
from trailmap.console.orgs import OrgMember, org_member, org_nav
from trailmap.console.pages import e, page, problem_text
from trailmap.console.svg import line_chart
from trailmap.console.timeline import event_link
from trailmap.errors import TrailmapError
from trailmap.graph.ask.queries import get_node
from trailmap.metrics.sources import SpansSource

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_HOUR_US = 3_600_000_000
_MINUTE_US = 60_000_000
_SEEN = {"both": "observed and declared", "observed": "observed", "declared": "declared only"}
_STYLE = (
    "<style>.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr));"
    "gap:1rem}.charts figure{margin:0}.charts figcaption{font-weight:600}"
    ".figures{display:flex;flex-wrap:wrap;gap:.5rem 2rem;padding:0;list-style:none}"
    ".figures strong{display:block;font-size:1.3rem}.wide{overflow-x:auto}</style>"
)


def _figure(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}"
    return f"{value:,}{unit}"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _neighbours(
    m: OrgMember, lines: Sequence[Mapping[str, Any]], end: str, environment: str
) -> str:
    if not lines:
        return "<p class=muted>None.</p>"
    rows = "".join(
        f"<tr><td><a href='{e(service_href(m.slug, line[end], environment))}'>{e(line[end])}</a>"
        f"</td><td>{e(line['kind'])}</td><td>{_evidence(line)}</td>"
        f"<td>{_figure(line.get('calls_per_minute'))}</td>"
        f"<td>{_percent(line.get('error_rate'))}</td><td>{_figure(line.get('p95_ms'), ' ms')}"
        "</td></tr>"
        for line in lines
    )
    return (
        "<div class=wide><table><thead><tr><th>Node</th><th>Edge</th><th>Evidence</th>"
        "<th>Calls/min</th><th>Errors</th><th>p95</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _evidence(line: Mapping[str, Any]) -> str:
    """Observed, declared or both, by which sources, and where it is declared."""
    seen = _SEEN.get(str(line.get("seen")), str(line.get("seen") or "observed"))
    text = f"{e(seen)} <span class=muted>({e(line.get('sources', 'otel'))})</span>"
    if line.get("declared_at"):
        text += f"<br><small><code>{e(line['declared_at'])}</code></small>"
    return text


def _sides(data: Mapping[str, Any]) -> str:
    """The side by side, counted: dependencies and dependents observed, declared, or both."""

    def told(counts: Mapping[str, int]) -> str:
        return (
            f"{counts.get('both', 0)} observed and declared, {counts.get('observed', 0)} "
            f"observed only, {counts.get('declared', 0)} declared only"
        )

    return (
        f"<p class=sides>Dependencies: {e(told(data.get('dependencies') or {}))}. "
        f"Dependents: {e(told(data.get('dependents') or {}))}.</p>"
    )


def _declared(data: Mapping[str, Any]) -> str:
    declared = data.get("declared")
    if not declared:
        return "<p class=muted>No repository, cluster or catalog declares it.</p>"
    names = ", ".join(f"<strong>{e(n)}</strong>" for n in declared.get("names", ()))
    places = "".join(f"<li><code>{e(p)}</code></li>" for p in declared.get("declared_at", ()))
    more = declared.get("declared_elsewhere")
    if more:
        places += f"<li class=muted>and {e(more)} more</li>"
    attributes = "".join(
        f"<li>{e(k)}: {e(v)}</li>" for k, v in (declared.get("attributes") or {}).items()
    )
    return (
        f"<p>Declared as {names}"
        + (f" ({e(declared['technology'])})" if declared.get("technology") else "")
        + f" by <strong>{e(', '.join(s for s in data.get('sources', ()) if s != 'otel'))}</strong>"
        + (f"; {'seen in traces too' if 'otel' in data.get('sources', ()) else 'not in traces'}")
        + f".</p><ul>{places}{attributes}</ul>"
    )


def _related(data: Mapping[str, Any]) -> str:
    lines = data.get("related") or []
    if not lines:
        return ""
    items = "".join(
        f"<li>{e(line['kind'].replace('_', ' '))} "
        + (f"{e(line['to'])}" if "to" in line else f"(from {e(line['from'])})")
        + f" <span class=muted>({e(line['sources'])})</span>"
        + (
            f" <small><code>{e(line['declared_at'])}</code></small>"
            if "declared_at" in line
            else ""
        )
        + "</li>"
        for line in lines
    )
    return (
        "<section aria-labelledby=related><h2 id=related>Ownership, placement and APIs</h2>"
        f"<ul>{items}</ul></section>"
    )


async def _charts(db: Any, m: OrgMember, name: str, environment: str, end_us: int) -> str:
    """Calls/min, error rate and p95 latency per minute over the hour to `end_us`, from the
    per-minute span statistics the metrics domain derives (metrics/sources.py)."""
    source = SpansSource(db, m.org_id)
    end_us -= end_us % _MINUTE_US
    start_us = end_us - _HOUR_US
    rows = await source.minutes(
        service=name, environment=environment, start_us=start_us, end_us=end_us
    )
    series = source.derive(
        rows,
        ["throughput", "error_rate", "p95_latency"],
        origin_us=start_us,
        step_minutes=1,
        end_us=end_us,
    )
    charts = (
        ("Calls per minute", "calls/min", series["throughput"], 60.0),
        ("Error rate (%)", "%", series["error_rate"], 100.0),
        ("p95 latency (ms)", "ms", series["p95_latency"], 1.0),
    )
    figures = "".join(
        f"<figure><figcaption>{e(title)}</figcaption>"
        + line_chart(
            s.times_us,
            [v * factor for v in s.values],
            title=title,
            unit=unit,
            start_us=start_us,
            end_us=end_us,
        )
        + "</figure>"
        for title, unit, s, factor in charts
    )
    return (
        "<section aria-labelledby=hour><h2 id=hour>The last hour, minute by minute</h2>"
        f"<div class=charts>{figures}</div><p class=muted>From the server and consumer spans "
        "it reported; a minute without calls has no point.</p></section>"
    )


def _used_by(m: OrgMember, services: Sequence[str], environment: str) -> str:
    """Which services use a datastore, topic or external API."""
    if not services:
        return ""
    links = ", ".join(
        f"<a href='{e(service_href(m.slug, name, environment))}'>{e(name)}</a>" for name in services
    )
    return f"<p>Used by the services {links}.</p>"


def _owners(data: Mapping[str, Any]) -> str:
    owners = data.get("owners") or []
    if not owners:
        return ""
    told = ", ".join(
        f"<strong>{e(o['name'])}</strong>"
        + "".join(f" <small><code>{e(p)}</code></small>" for p in o.get("declared_at", ()))
        + (f" <span class=muted>({e(o['attribute'])})</span>" if o.get("attribute") else "")
        for o in owners
    )
    return f"<p>Owned by {told}.</p>"


def _when(iso: str) -> str:
    try:
        moment = datetime.fromisoformat(iso).astimezone(UTC)
    except ValueError:
        return iso
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _changes(slug: str, changes: Sequence[Mapping[str, Any]]) -> str:
    if not changes:
        return "<p class=muted>No changes in the last day.</p>"
    items = "".join(
        f"<li><time datetime='{e(c['time'])}'>{e(_when(c['time']))}</time> "
        f"<span class=muted>({e(c.get('time_relative', ''))})</span> "
        f"<strong><a href='{e(event_link(slug, c))}'>{e(c['type'])}</a></strong>"
        + (f" {e(c['version'])}" if c.get("version") else "")
        + (f" — {e(c['description'])}" if c.get("description") else "")
        + (f" <span class=muted>from {e(c['source'])}</span>" if c.get("source") else "")
        + "</li>"
        for c in changes
    )
    return f"<ol reversed>{items}</ol>"


@router.get("/orgs/{slug}/services/{name:path}")
async def service_page(request: Request, slug: str, name: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    environment = request.query_params.get("environment") or None
    db, q = await graph_query(request, m)
    nav = org_nav(m)
    try:
        data = await get_node(db, q, name, environment=environment)
    except TrailmapError as error:
        if error.status >= 500:
            raise
        body = (
            f"<p class=error role=alert>{e(problem_text(error))}</p>"
            f"<p><a href='{e(graph_href(m.slug, q=name))}'>Search the graph</a></p>"
        )
        return page("Service not found", body, status=error.status, nav=nav)
    env = data["environment"]
    hour = data.get("last_hour") or {}
    owned = _owners(data)
    matched = f"<p class=muted>{e(data['matched'])}.</p>" if data.get("matched") else ""
    version = (data.get("attributes") or {}).get("service.version")
    summary = (
        f"<p>A {e(data['kind'].replace('_', ' '))} in <strong>{e(env)}</strong>"
        + (f", version <strong>{e(version)}</strong>" if version else "")
        + f"; first seen {e(data['first_seen'][:16].replace('T', ' '))} UTC, last seen "
        f"{e(data['last_seen'][:16].replace('T', ' '))} UTC. "
        f"<a href='{e(graph_href(m.slug, node=data['name'], depth=1))}'>Show it on the graph</a>"
        "</p>"
    )
    figures = (
        "<ul class=figures aria-label='The last hour'>"
        f"<li>Calls/min<strong>{_figure(hour.get('calls_per_minute'))}</strong></li>"
        f"<li>Errors<strong>{_percent(hour.get('error_rate'))}</strong></li>"
        f"<li>p95<strong>{_figure(hour.get('p95_ms'), ' ms')}</strong></li></ul>"
    )
    charts = (
        await _charts(db, m, data["name"], env, clock.now_us())
        if data["kind"] == "service"
        else _used_by(m, data.get("connected_services", []), env)
    )
    body = (
        _STYLE
        + matched
        + summary
        + owned
        + figures
        + charts
        + "<section aria-labelledby=sources><h2 id=sources>Declared and observed</h2>"
        + _declared(data)
        + _sides(data)
        + "</section>"
        + "<section aria-labelledby=up><h2 id=up>Upstream: what calls it</h2>"
        + _neighbours(m, data["upstream"], "from", env)
        + "</section><section aria-labelledby=down><h2 id=down>Downstream: what it calls</h2>"
        + _neighbours(m, data["downstream"], "to", env)
        + "</section>"
        + _related(data)
        + "<section aria-labelledby=changes><h2 id=changes>Recent changes</h2>"
        + _changes(m.slug, data.get("recent_changes", []))
        + "</section>"
    )
    return page(data["name"], body, nav=nav)
