"""An organization's Event page: all of one event (its data as JSON), and for a deployment the
metrics around it, each drawn before and after with the change marked (the same
`get_metrics_around_event` as REST `/api/v1/events/{id}/metrics`), and the changes near it in
the graph (the same `find_changes_near` as REST and MCP)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap import clock
from trailmap.console.orgs import org_member, org_nav
from trailmap.console.pages import e, page
from trailmap.console.reading import reader_of
from trailmap.console.timeline import absolute_time, event_link
from trailmap.errors import NotFound, TrailmapError
from trailmap.graph.ask.near import find_changes_near
from trailmap.graph.ask.queries import GraphQuery
from trailmap.http.context import context_of
from trailmap.metrics.around import get_metrics_around_event
from trailmap.timeline.queries import get_event

__all__ = ["metric_chart", "router"]

router = APIRouter(include_in_schema=False)

# The changes whose metrics are drawn: what ships new code or configuration.
_CHANGES: Final = frozenset({"deployment", "rollback", "config-change", "feature-flag"})
_NEAR_SPAN: Final = timedelta(hours=2)
_STYLE: Final = (
    "<style>dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}"
    "dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}"
    "figure{margin:1rem 0}svg{width:100%;height:auto;max-width:40rem;display:block}"
    ".verdict{font-weight:700}.v-increased,.v-decreased,.v-regressed{color:#a00}"
    ".table{overflow-x:auto}</style>"
)
# The chart's drawing area inside its viewBox.
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 600, 200, 64, 12, 14, 30


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.3g}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.4g}"


def _shown(value: float | None, unit: str | None) -> str:
    """A figure as a person reads it: a ratio as a percentage, a latency in ms."""
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{_number(value * 100)}%"
    if unit == "ms":
        return f"{_number(value)} ms"
    if unit == "requests/s":
        return f"{_number(value)}/s"
    return _number(value)


def _offset(seconds: float) -> str:
    sign = "-" if seconds < 0 else "+"
    minutes = round(abs(seconds) / 60)
    if minutes == 0:
        return "0"
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{sign}{rest}m"
    return f"{sign}{hours}h" + (f"{rest:02d}m" if rest else "")


def metric_chart(metric: dict[str, Any]) -> str:
    """The metric's points as an inline SVG: before in blue, after in orange, the change as a
    vertical line at 0, the value range on the left and the time from the change below."""
    points: list[list[float]] = metric.get("points") or []
    if not points:
        return ""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x_low, x_high = min(*xs, 0.0), max(*xs, 0.0)
    y_low, y_high = min(ys), max(ys)
    if y_high == y_low:
        y_low, y_high = y_low - 1, y_high + 1
    x_span = x_high - x_low or 1.0
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(v: float) -> float:
        return round(_LEFT + (v - x_low) / x_span * plot_w, 1)

    def y(v: float) -> float:
        return round(_TOP + (y_high - v) / (y_high - y_low) * plot_h, 1)

    unit = metric.get("unit")
    before = [p for p in points if p[0] < 0]
    after = [p for p in points if p[0] >= 0]
    dots = "".join(
        f"<circle class=before cx={x(px)} cy={y(py)} r=2.2 fill='#2b6cb0'/>" for px, py in before
    ) + "".join(
        f"<circle class=after cx={x(px)} cy={y(py)} r=2.2 fill='#c05621'/>" for px, py in after
    )
    means = ""
    for side, fill, low, high in (
        ("before", "#2b6cb0", x_low, 0.0),
        ("after", "#c05621", 0.0, x_high),
    ):
        mean = (metric.get(side) or {}).get("mean")
        if mean is not None and y_low <= mean <= y_high:
            means += (
                f"<line x1={x(low)} x2={x(high)} y1={y(mean)} y2={y(mean)} stroke='{fill}' "
                "stroke-dasharray='4 3' stroke-width=1 />"
            )
    bottom = _H - _BOTTOM
    ticks = "".join(
        f"<text x={x(v)} y={bottom + 16} text-anchor={anchor}>{e(_offset(v))}</text>"
        for v, anchor in (
            (x_low, "start"),
            (x_low / 2, "middle"),
            (0.0, "middle"),
            (x_high / 2, "middle"),
            (x_high, "end"),
        )
        if v == 0 or abs(v) > x_span / 10
    )
    name = str(metric["name"])
    label = (
        f"{name}: {len(before)} points before the change and {len(after)} after, from "
        f"{_shown(y_low, unit)} to {_shown(y_high, unit)}"
    )
    return (
        f"<figure><svg viewBox='0 0 {_W} {_H}' role=img aria-label='{e(label)}' "
        "font-size=11 font-family=system-ui,sans-serif>"
        f"<rect x={_LEFT} y={_TOP} width={plot_w} height={plot_h} fill='#fafafa' "
        "stroke='#ccc'/>"
        f"<text x={_LEFT - 6} y={_TOP + 4} text-anchor=end>{e(_shown(y_high, unit))}</text>"
        f"<text x={_LEFT - 6} y={bottom} text-anchor=end>{e(_shown(y_low, unit))}</text>"
        f"{means}{dots}"
        f"<line class=change x1={x(0)} x2={x(0)} y1={_TOP} y2={bottom} stroke='#a00' "
        "stroke-width=2 />"
        f"<text x={x(0) + 4} y={_TOP + 12} fill='#a00'>change</text>{ticks}</svg>"
        f"<figcaption class=muted>{e(name)}: blue before, orange after the change; dashed "
        "lines are the means; time from the change below.</figcaption></figure>"
    )


def _figures(metric: dict[str, Any]) -> str:
    unit = metric.get("unit")
    verdict = str(metric["verdict"])
    if "before" not in metric:
        return f"<p><span class=verdict>{e(verdict)}</span>: {e(metric.get('reason') or '')}</p>"
    before, after = metric["before"], metric["after"]
    relative = metric.get("relative_change")
    change = _shown(metric.get("absolute_change"), unit) + (
        f" ({relative * 100:+.3g}%)" if relative is not None else ""
    )
    p_value = metric.get("p_value")
    return (
        "<div class=table><table><thead><tr><th></th><th>Before</th><th>After</th></tr></thead>"
        f"<tbody><tr><th scope=row>Mean</th><td>{e(_shown(before.get('mean'), unit))}</td>"
        f"<td>{e(_shown(after.get('mean'), unit))}</td></tr>"
        f"<tr><th scope=row>Median</th><td>{e(_shown(before.get('median'), unit))}</td>"
        f"<td>{e(_shown(after.get('median'), unit))}</td></tr>"
        f"<tr><th scope=row>p95</th><td>{e(_shown(before.get('p95'), unit))}</td>"
        f"<td>{e(_shown(after.get('p95'), unit))}</td></tr>"
        f"<tr><th scope=row>Points</th><td>{e(before.get('points', 0))}</td>"
        f"<td>{e(after.get('points', 0))}</td></tr></tbody></table></div>"
        f"<p>Change of the mean: {e(change)}; p-value "
        f"{e('n/a' if p_value is None else p_value)} (Mann-Whitney U); verdict "
        f"<span class='verdict v-{e(verdict.replace(' ', '-'))}'>{e(verdict)}</span>"
        + (f" ({e(metric['reason'])})" if metric.get("reason") else "")
        + f"; from {e(metric.get('source') or 'no source')}.</p>"
    )


def _metrics_section(answer: dict[str, Any]) -> str:
    where = ""
    if answer.get("service"):
        where = f" of {e(answer['service'])} ({e(answer.get('environment', ''))})"
    parts = [
        (
            f"<section aria-labelledby=metrics-h><h2 id=metrics-h>Metrics{where}</h2>"
            f"<p class=muted>{e(answer['window'])} before ({e(answer['before']['from'])} to "
            f"{e(answer['before']['to'])}) and after ({e(answer['after']['from'])} to "
            f"{e(answer['after']['to'])}). {e(answer.get('summary', ''))}</p>"
        )
    ]
    for metric in answer["metrics"]:
        name = e(metric["name"])
        parts.append(
            f"<article class=metric data-metric='{name}'><h3>{name}</h3>"
            f"{metric_chart(metric)}{_figures(metric)}</article>"
        )
    return "".join(parts) + "</section>"


def _near_section(slug: str, event: dict[str, Any], near: dict[str, Any] | str) -> str:
    head = "<section aria-labelledby=near-h><h2 id=near-h>Changes near it in the graph</h2>"
    if isinstance(near, str):
        return f"{head}<p class=muted>{e(near)}</p></section>"
    items = [
        (
            f"<li><a href='{e(event_link(slug, c['event']))}'>{e(c['event']['type'])} of "
            f"{e(c['node']['name'])} {e(c['event'].get('version') or '')}"
            f"</a>: {e(c['reason'])}</li>"
        )
        for c in near["changes"]
        if c["event"].get("trailmap_id") != event["trailmap_id"]
    ]
    if not items:
        return (
            f"{head}<p class=muted>No other change within {near['nodes_searched']} services "
            f"of {e(near['node']['name'])}, from {e(near['from'])} to {e(near['to'])}.</p>"
            "</section>"
        )
    return (
        f"{head}<p class=muted>From {e(near['from'])} to {e(near['to'])}, nearest and closest "
        f"in time first.</p><ul>{''.join(items)}</ul></section>"
    )


async def _near(request: Request, q: GraphQuery, event: dict[str, Any]) -> Any:
    service = event.get("service")
    if not service:
        return "The event names no service, so it has no place in the graph."
    moment = datetime.fromisoformat(event["time"])
    end = min(moment + _NEAR_SPAN, clock.now())
    try:
        return await find_changes_near(
            context_of(request).db,
            q,
            str(service),
            from_=(moment - _NEAR_SPAN).isoformat(),
            to=end.isoformat(),
            environment=event.get("subject"),
        )
    except TrailmapError as error:
        return error.message


def _details(event: dict[str, Any]) -> str:
    shown = (
        ("Type", "type"),
        ("Service", "service"),
        ("Version", "version"),
        ("Environment", "subject"),
        ("Severity", "severity"),
        ("Description", "description"),
        ("Source", "source"),
        ("Id", "id"),
        ("Trailmap id", "trailmap_id"),
        ("Received", "received"),
    )
    rows = [
        (
            f"<dt>When</dt><dd><time datetime='{e(event['time'])}'>"
            f"{e(event['time_relative'])}</time> · {e(absolute_time(str(event['time'])))}</dd>"
        )
    ]
    rows += [
        f"<dt>{label}</dt><dd>{e(event[key])}</dd>"
        for label, key in shown
        if event.get(key) is not None
    ]
    if also := event.get("also_reported_by"):
        rows.append(f"<dt>Also reported by</dt><dd>{e(', '.join(also))}</dd>")
    if verdict := event.get("verdict"):
        found = event.get("verdict_details") or {}
        rows.append(
            f"<dt>Verdict</dt><dd><span class='verdict v-{e(verdict)}'>"
            f"{e(str(verdict).replace('_', ' '))}</span> <span class=muted>(reached "
            f"{e(found.get('reached', ''))} over the {e(found.get('window', ''))} after it)"
            "</span></dd>"
        )
    if violations := event.get("violations"):
        items = "".join(f"<li>{e(v.get('kind'))}: {e(v.get('message'))}</li>" for v in violations)
        rows.append(f"<dt>Guardrail violations</dt><dd><ul class=violations>{items}</ul></dd>")
    return f"<dl>{''.join(rows)}</dl>"


@router.get("/orgs/{slug}/events/{event_id:path}")
async def event_page(request: Request, slug: str, event_id: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    ctx = context_of(request)
    principal = await reader_of(request, m)
    source = request.query_params.get("source") or None
    tz = request.query_params.get("tz") or None
    try:
        event = await get_event(
            ctx.db,
            principal,
            event_id,
            source=source,
            timezone=tz,
            default_timezone=ctx.settings.default_timezone,
        )
    except TrailmapError as error:
        title = "Event not found" if isinstance(error, NotFound) else "Which event?"
        details = "".join(f"<li>{e(d.message)}</li>" for d in error.details)
        body = (
            f"<p class=error role=alert>{e(error.message)}</p>"
            + (f"<ul>{details}</ul>" if details else "")
            + f"<p><a href=/orgs/{e(m.slug)}/timeline>Back to the timeline</a></p>"
        )
        return page(title, body, nav=org_nav(m), status=error.status)
    source = str(event["source"])
    sections = [_details(event)]
    data = event.get("data")
    if data is not None:
        pretty = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True)
        sections.append(f"<h2>Data</h2><pre><code>{e(pretty)}</code></pre>")
    elif event.get("data_base64"):
        sections.append(f"<h2>Data (base64)</h2><pre><code>{e(event['data_base64'])}</code></pre>")
    if ext := event.get("extensions"):
        pretty = json.dumps(ext, indent=2, ensure_ascii=False, sort_keys=True)
        sections.append(f"<h2>Extensions</h2><pre><code>{e(pretty)}</code></pre>")
    if event["type"] in _CHANGES:
        try:
            answer = await get_metrics_around_event(
                ctx.db,
                principal,
                event_id,
                source=source,
                outbound=ctx.settings.outbound,
                secret_key=ctx.settings.encryption_secret,
                default_timezone=tz or ctx.settings.default_timezone,
                points=True,
            )
            sections.append(_metrics_section(answer))
        except TrailmapError as error:
            sections.append(f"<h2>Metrics</h2><p class=error>{e(error.message)}</p>")
    q = GraphQuery(
        principal=principal,
        stale_after_days=ctx.settings.graph_stale_after_days,
        default_timezone=tz or ctx.settings.default_timezone,
    )
    sections.append(_near_section(m.slug, event, await _near(request, q, event)))
    sections.append(f"<p><a href=/orgs/{e(m.slug)}/timeline>Back to the timeline</a></p>")
    title = f"{event['type']}" + (f" of {event['service']}" if event.get("service") else "")
    if event.get("version"):
        title += f" {event['version']}"
    return page(title, _STYLE + "".join(sections), nav=org_nav(m))
