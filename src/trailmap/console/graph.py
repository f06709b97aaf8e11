"""The Graph page: the services and what they depend on, drawn on the server as SVG; a node's
neighbourhood to a chosen depth, the graph as of a chosen time, search, and Mermaid export
(docs/console.md, "Graph and services")."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from trailmap.console.orgs import OrgMember, org_member, org_nav
from trailmap.console.pages import e, page, problem_text
from trailmap.console.reading import reader_of
from trailmap.console.svg import Box, graph_svg, layers, legend
from trailmap.errors import TrailmapError
from trailmap.graph.ask.picture import MAX_DEPTH, graph_picture
from trailmap.graph.ask.queries import Format, GraphQuery, search_nodes
from trailmap.http.context import context_of

__all__ = ["graph_query", "router", "service_href"]

router = APIRouter(include_in_schema=False)

_DIRECTIONS = {
    "both": "both ways",
    "downstream": "what it depends on",
    "upstream": "what depends on it",
}
_LISTED_OPEN = 30  # a longer list of the nodes drawn starts folded
_STYLE = (
    "<style>.picture{overflow:auto;max-width:100%;border:1px solid #ddd;margin:1rem 0}"
    # A wide picture takes the window's width, not the text column's.
    ".picture.wide{width:calc(100vw - 3rem);max-width:none;margin-left:calc(50% - 50vw + 1.5rem)}"
    ".picture svg{display:block}.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;"
    "gap:.3rem 1.2rem}.legend li{display:flex;align-items:center;gap:.3rem}"
    ".controls{display:flex;flex-wrap:wrap;gap:0 1rem;align-items:end}"
    ".controls label{margin-top:.5rem}.controls input,.controls select{width:auto}"
    ".edge:hover path:first-of-type{stroke:#1d4ed8}a.node:hover text{text-decoration:underline}"
    "</style>"
)


async def graph_query(
    request: Request, m: OrgMember, *, at: str | None = None, fmt: Format = "json"
) -> tuple[Any, GraphQuery]:
    """The database and the graph question of a member: read-only, as their role allows."""
    ctx = context_of(request)
    query = GraphQuery(
        principal=await reader_of(request, m),
        at=at or None,
        format=fmt,
        stale_after_days=ctx.settings.graph_stale_after_days,
        default_timezone=ctx.settings.default_timezone,
    )
    return ctx.db, query


def service_href(slug: str, name: str, environment: str | None = None) -> str:
    path = f"/orgs/{quote(slug, safe='')}/services/{quote(name, safe='')}"
    return path + (f"?{urlencode({'environment': environment})}" if environment else "")


def graph_href(slug: str, **params: object) -> str:
    kept = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return f"/orgs/{quote(slug, safe='')}/graph" + (f"?{urlencode(kept)}" if kept else "")


def _number(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return -1  # refused by graph_picture, with the field named


def _controls(m: OrgMember, params: dict[str, str], environments: list[str]) -> str:
    depth = params.get("depth") or "1"
    direction = params.get("direction") or "both"
    depths = "".join(
        f"<option{' selected' if str(d) == depth else ''}>{d}</option>"
        for d in range(1, MAX_DEPTH + 1)
    )
    directions = "".join(
        f"<option value={v}{' selected' if v == direction else ''}>{e(t)}</option>"
        for v, t in _DIRECTIONS.items()
    )
    chosen = params.get("environment", "")
    known = environments if not chosen or chosen in environments else [*environments, chosen]
    places = "<option value=''>all</option>" + "".join(
        f"<option{' selected' if env == chosen else ''}>{e(env)}</option>" for env in known
    )
    return (
        f"<form method=get action='/orgs/{e(m.slug)}/graph' class=controls role=search>"
        f"<div><label for=q>Search</label><input id=q name=q type=search "
        f"value='{e(params.get('q', ''))}' placeholder='checkout, postgres, kafka'></div>"
        f"<div><label for=node>Focus on</label><input id=node name=node "
        f"value='{e(params.get('node', ''))}' placeholder='a node name'></div>"
        f"<div><label for=depth>Depth</label><select id=depth name=depth>{depths}</select></div>"
        f"<div><label for=direction>Direction</label>"
        f"<select id=direction name=direction>{directions}</select></div>"
        f"<div><label for=environment>Environment</label>"
        f"<select id=environment name=environment>{places}</select></div>"
        f"<div><label for=at>As of</label><input id=at name=at size=12 "
        f"value='{e(params.get('at', ''))}' placeholder='now, -2h, 2026-01-31T09:00'></div>"
        f"<div><button type=submit>Show</button></div></form>"
    )


def _node_row(m: OrgMember, n: dict[str, Any], params: dict[str, str]) -> str:
    """A node in a table: a link that focuses the graph on it, and one to its page."""
    focus = graph_href(
        m.slug,
        node=n["name"],
        depth=params.get("depth"),
        direction=params.get("direction"),
        environment=params.get("environment"),
        at=params.get("at"),
    )
    page_of = service_href(m.slug, n["name"], n["environment"])
    return (
        f"<tr><td><a href='{e(focus)}'>{e(n['name'])}</a></td><td>{e(n['kind'])}</td>"
        f"<td>{e(n['environment'])}</td><td><a href='{e(page_of)}' "
        f"aria-label='{e(n['name'])}: details'>details</a></td></tr>"
    )


async def _search(m: OrgMember, db: Any, q: GraphQuery, text: str, params: dict[str, str]) -> str:
    found = await search_nodes(db, q, text, limit=20)
    if not found["nodes"]:
        return f"<p>Nothing is named like <strong>{e(text)}</strong>.</p>"
    rows = "".join(_node_row(m, n, params) for n in found["nodes"])
    more = (
        f"<p class=muted>{found['more']} more match; be more precise.</p>"
        if found.get("more")
        else ""
    )
    return (
        f"<section aria-labelledby=found><h2 id=found>Nodes matching “{e(text)}”</h2>"
        "<table><thead><tr><th>Focus on</th><th>Kind</th><th>Environment</th><th>Service page"
        f"</th></tr></thead><tbody>{rows}</tbody></table>{more}</section>"
    )


def _picture(m: OrgMember, data: dict[str, Any], params: dict[str, str]) -> str:
    nodes = data["nodes"]
    focus = data["focus"]
    boxes = [
        Box(
            n["id"],
            n["name"],
            n["kind"],
            n["environment"],
            service_href(m.slug, n["name"], n["environment"]),
        )
        for n in nodes
    ]
    if focus is not None:
        low = min(n["depth"] for n in nodes)
        layer_of = {n["id"]: n["depth"] - low for n in nodes}
    else:
        layer_of = layers(
            [n["id"] for n in nodes], [(x["from_id"], x["to_id"]) for x in data["edges"]]
        )
    label = (
        f"{focus['name']} and its neighbours to depth {data['depth']}"
        if focus
        else "The busiest part of the graph"
    )
    svg, width = graph_svg(
        boxes, data["edges"], layer_of, focus=focus["id"] if focus else None, label=label
    )
    frame = "picture wide" if width > 900 else "picture"
    kinds = sorted({n["kind"] for n in nodes})
    env = data.get("environment")
    when = (f" in {e(env)}" if env else "") + (
        f" as of {e(data['as_of'])}" if data.get("as_of") else ""
    )
    if focus:
        heading = (
            f"<h2 id=picture>{e(focus['name'])}: {e(_DIRECTIONS[data['direction']])}, "
            f"depth {data['depth']}{when}</h2>"
            f"<p>{len(nodes)} nodes and {len(data['edges'])} edges. Upstream (what depends on "
            f"it) to the left, downstream (what it depends on) to the right. "
            f"<a href='{e(service_href(m.slug, focus['name'], focus['environment']))}'>"
            f"The page of {e(focus['name'])}</a> · "
            f"<a href='{e(graph_href(m.slug, at=params.get('at'), environment=env))}'>"
            "the busiest part</a></p>"
        )
    elif data["total_nodes"] > len(nodes):
        heading = (
            f"<h2 id=picture>The {len(nodes)} busiest of {data['total_nodes']} nodes{when}</h2>"
            f"<p>The graph has {data['total_nodes']} nodes and {data['total_edges']} edges: too "
            "many to read at once. These are the nodes with the most calls in the last hour and "
            "the edges between them. To see the rest, search above, or focus on a node (choose "
            "it below or type its name) to draw its neighbourhood.</p>"
        )
    else:
        heading = (
            f"<h2 id=picture>All {len(nodes)} nodes and {len(data['edges'])} edges{when}</h2>"
            "<p>Choose a node (or type its name above) to focus on its neighbourhood.</p>"
        )
    truncated = (
        f"<p class=muted>{data['more']} more nodes are within reach; the nearest are drawn. "
        "A smaller depth or one direction narrows the picture.</p>"
        if data.get("truncated") and focus
        else ""
    )
    if not nodes:
        return (
            "<section aria-labelledby=picture><h2 id=picture>No services yet</h2><p>The graph "
            "is learned from OpenTelemetry traces; send some (docs/opentelemetry.md) and they "
            "appear here.</p></section>"
        )
    rows = "".join(
        _node_row(m, n, params) for n in sorted(nodes, key=lambda n: (n["name"], n["environment"]))
    )
    mermaid = graph_href(
        m.slug,
        node=focus["name"] if focus else None,
        depth=params.get("depth"),
        direction=params.get("direction"),
        environment=env,
        at=params.get("at"),
    ).replace("/graph", "/graph.mmd", 1)
    return (
        f"<section aria-labelledby=picture>{heading}{legend(kinds)}"
        f"<div class='{frame}' tabindex=0 aria-label='The picture; scroll it sideways'>{svg}</div>"
        f"{truncated}<p class=muted>Hover over an arrow for its calls/min, error rate and p95 "
        "latency over the last hour; a node opens its page. Red arrows fail 5% or more.</p>"
        f"<details><summary>Mermaid</summary><p><a href='{e(mermaid)}' download>Download "
        f"graph.mmd</a></p><pre>{e(data.get('mermaid', ''))}</pre></details>"
        # The picture in words; folded away when it is long.
        f"<details{' open' if len(nodes) <= _LISTED_OPEN else ''}><summary>The {len(nodes)} "
        "nodes drawn</summary><table><thead><tr><th>Focus on</th><th>Kind</th>"
        f"<th>Environment</th><th>Service page</th></tr></thead><tbody>{rows}</tbody></table>"
        "</details></section>"
    )


async def _answer(
    request: Request, slug: str
) -> tuple[OrgMember, Any, GraphQuery, dict[str, str]] | Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    params = {k: v.strip() for k, v in request.query_params.items()}
    db, q = await graph_query(request, m, at=params.get("at"), fmt="mermaid")
    return m, db, q, params


@router.get("/orgs/{slug}/graph")
async def graph_page(request: Request, slug: str) -> Response:
    answer = await _answer(request, slug)
    if isinstance(answer, Response):
        return answer
    m, db, q, params = answer
    nav = org_nav(m)
    try:
        found = await _search(m, db, q, params["q"], params) if params.get("q") else ""
        data = await _drawn(db, q, params)
    except TrailmapError as error:
        if error.status >= 500:
            raise
        return page(
            "Graph",
            _STYLE
            + _controls(m, params, [])
            + f"<p class=error role=alert>{e(problem_text(error))}</p>",
            status=error.status,
            nav=nav,
        )
    controls = _controls(m, params, data["environments"])
    changes = (
        f"<p><a href='/orgs/{e(quote(m.slug, safe=''))}/graph/changes'>What changed in the "
        "graph, and what is declared but not observed</a></p>"
    )
    return page("Graph", _STYLE + controls + changes + found + _picture(m, data, params), nav=nav)


async def _drawn(db: Any, q: GraphQuery, params: dict[str, str]) -> dict[str, Any]:
    return await graph_picture(
        db,
        q,
        node=params.get("node"),
        depth=_number(params.get("depth"), 1),
        direction=params.get("direction") or "both",
        environment=params.get("environment") or None,
    )


@router.get("/orgs/{slug}/graph.mmd")
async def graph_mermaid(request: Request, slug: str) -> Response:
    answer = await _answer(request, slug)
    if isinstance(answer, Response):
        return answer
    m, db, q, params = answer
    try:
        data = await _drawn(db, q, params)
    except TrailmapError as error:
        if error.status >= 500:
            raise
        return PlainTextResponse(problem_text(error) + "\n", status_code=error.status)
    name = f"{m.slug}-{data['focus']['name'] if data['focus'] else 'graph'}.mmd"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return PlainTextResponse(
        data["mermaid"],
        media_type="text/vnd.mermaid",
        headers={
            "Content-Disposition": f'attachment; filename="{safe}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
