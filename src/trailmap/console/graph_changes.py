"""The Graph changes page: what appeared in or went away from the organization's graph between
two times, over traces and declared sources, and what is declared but not observed or observed
but not declared (docs/console.md, "Graph and services")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from trailmap.console.graph import graph_query, service_href
from trailmap.console.orgs import OrgMember, org_member, org_nav
from trailmap.console.pages import e, page, problem_text
from trailmap.errors import TrailmapError
from trailmap.graph.ask.changes import get_graph_changes
from trailmap.graph.ask.compare import compare_declared_and_observed

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_LIMIT = 100
_STYLE = (
    "<style>.controls{display:flex;flex-wrap:wrap;gap:0 1rem;align-items:end}"
    ".controls input{width:auto}.wide{overflow-x:auto}</style>"
)


def changes_href(slug: str) -> str:
    return f"/orgs/{quote(slug, safe='')}/graph/changes"


def _controls(m: OrgMember, params: Mapping[str, str]) -> str:
    def field(name: str, label: str, default: str) -> str:
        value = params.get(name) or default
        return (
            f"<div><label for={name}>{e(label)}</label><input id={name} name={name} size=12 "
            f"value='{e(value)}'></div>"
        )

    return (
        f"<form method=get action='{e(changes_href(m.slug))}' class=controls>"
        + field("from", "Changes since", "-1d")
        + field("window", "Calls measured since", "-7d")
        + field("environment", "Environment", "")
        + "<div><button type=submit>Show</button></div></form>"
    )


def _link(m: OrgMember, name: str, environment: str | None = None) -> str:
    return f"<a href='{e(service_href(m.slug, name, environment))}'>{e(name)}</a>"


def _changes(m: OrgMember, data: Mapping[str, Any]) -> str:
    counts = data["summary"]
    head = (
        f"<p>From {e(data['from'][:16].replace('T', ' '))} to "
        f"{e(data['to'][:16].replace('T', ' '))} UTC: {counts['edges_appeared']} edges "
        f"appeared, {counts['edges_went_away']} went away, {counts['sources_changed']} changed "
        f"sources; {counts['nodes_appeared']} nodes appeared, {counts['nodes_went_away']} went "
        "away.</p>"
    )
    rows: list[str] = []
    for c in data["changes"]:
        if "node" in c:
            what = f"node {_link(m, c['node'], c['environment'])} ({e(c['kind'])})"
        else:
            what = f"{_link(m, c['from'])} — {e(c['kind'])} → {_link(m, c['to'])}"
        sources = e(c["sources"]) + (
            f" <span class=muted>was {e(c['before'])}</span>" if c.get("before") else ""
        )
        why = c.get("why") or c.get("declared_at", "")
        when = c.get("first_seen") or c.get("last_seen") or ""
        rows.append(
            f"<tr><td>{e(c['change'].replace('_', ' '))}</td><td>{what}</td><td>{sources}</td>"
            f"<td>{e(when[:16].replace('T', ' '))}</td><td>{e(why)}</td></tr>"
        )
    if not rows:
        return head
    more = f"<p class=muted>{e(data['more'])} more not shown.</p>" if data.get("more") else ""
    return (
        head + "<div class=wide><table><thead><tr><th>Change</th><th>What</th><th>Sources</th>"
        "<th>When</th><th>Why, or where declared</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
        + more
    )


def _edges(m: OrgMember, lines: Sequence[Mapping[str, Any]], last: str) -> str:
    if not lines:
        return "<p class=muted>None.</p>"
    rows = "".join(
        f"<tr><td>{_link(m, line['from'])}</td><td>{e(line['kind'])}</td>"
        f"<td>{_link(m, line['to'])}</td><td>{e(line.get(last, ''))}</td>"
        f"<td>{e(line.get('declared_at', ''))}</td></tr>"
        for line in lines
    )
    return (
        "<div class=wide><table><thead><tr><th>From</th><th>Edge</th><th>To</th>"
        f"<th>{'Likely' if last == 'likely' else 'Calls'}</th><th>Declared at</th></tr>"
        f"</thead><tbody>{rows}</tbody></table></div>"
    )


def _compare(m: OrgMember, data: Mapping[str, Any]) -> str:
    note = f"<p>{e(data['note'])}</p>" if data.get("note") else ""
    return (
        note
        + f"<p>{data['declared_nodes']} declared nodes; {data['declared_dependencies']} declared "
        f"and {data['observed_dependencies']} observed dependencies.</p>"
        + f"<h3>Declared but not called ({data['declared_not_observed_total']})</h3>"
        + "<p class=muted>No call measured in the window: unused, or not instrumented.</p>"
        + _edges(m, data["declared_not_observed"], "likely")
        + f"<h3>Called but not declared ({data['observed_not_declared_total']})</h3>"
        + "<p class=muted>Hidden dependencies of declared services.</p>"
        + _edges(m, data["observed_not_declared"], "calls")
    )


@router.get("/orgs/{slug}/graph/changes")
async def graph_changes_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    params = {k: v.strip() for k, v in request.query_params.items()}
    environment = params.get("environment") or None
    db, q = await graph_query(request, m)
    nav = org_nav(m)
    try:
        changes = await get_graph_changes(
            db, q, from_=params.get("from") or "-1d", environment=environment, limit=_LIMIT
        )
        compared = await compare_declared_and_observed(
            db, q, from_=params.get("window") or "-7d", environment=environment, limit=_LIMIT
        )
    except TrailmapError as error:
        if error.status >= 500:
            raise
        body = (
            _STYLE
            + _controls(m, params)
            + f"<p class=error role=alert>{e(problem_text(error))}</p>"
        )
        return page("Graph changes", body, status=error.status, nav=nav)
    body = (
        _STYLE
        + _controls(m, params)
        + "<section aria-labelledby=changes><h2 id=changes>What changed in the graph</h2>"
        + _changes(m, changes)
        + "</section><section aria-labelledby=compare><h2 id=compare>Declared and observed</h2>"
        + _compare(m, compared)
        + "</section>"
    )
    return page("Graph changes", body, nav=nav)
