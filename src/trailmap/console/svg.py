"""Pictures drawn on the server as inline SVG: a layered graph and a line chart. No script
draws them, so they show under the console's strict CSP, and an SVG `<title>` gives each
node and edge a native tooltip (docs/console.md, "Graph and services")."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trailmap.console.pages import e

__all__ = [
    "KIND_STYLES",
    "Box",
    "bar_chart",
    "edge_text",
    "graph_svg",
    "layers",
    "legend",
    "line_chart",
]

# Each kind its colours and a shape: (fill, stroke, shape)
KIND_STYLES: dict[str, tuple[str, str, str]] = {
    "service": ("#dbeafe", "#1d4ed8", "box"),
    "database": ("#dcfce7", "#15803d", "pill"),
    "cache": ("#fef9c3", "#a16207", "hexagon"),
    "queue": ("#fae8ff", "#a21caf", "slant"),
    "topic": ("#fae8ff", "#a21caf", "slant"),
    "external_api": ("#f3f4f6", "#4b5563", "dashed"),
    "ai_model": ("#ffedd5", "#c2410c", "ellipse"),
}
_OTHER = ("#e5e7eb", "#374151", "box")

_W, _H = 170, 34  # a node's box
_COLUMN, _ROW = 240, 50  # the distance between columns and between rows
_ROWS = 18  # a layer with more nodes wraps into several columns
_PAD = 12
_LABEL = 22  # characters of a name shown in its box


@dataclass(frozen=True, slots=True)
class Box:
    """A node as drawn: where, what, and where it leads."""

    id: str
    name: str
    kind: str
    environment: str
    href: str
    x: int = 0
    y: int = 0


def layers(node_ids: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """A layer for each node, left to right the way edges point: the longest path from a
    node nothing points to, after the edges that close a cycle are set aside."""
    out: dict[str, list[str]] = {n: [] for n in node_ids}
    for source, target in edges:
        if source in out and target in out and source != target:
            out[source].append(target)
    order, forward = _acyclic(node_ids, out)
    layer = dict.fromkeys(node_ids, 0)
    for node in reversed(order):  # a topological order of the forward edges
        for nxt in forward[node]:
            layer[nxt] = max(layer[nxt], layer[node] + 1)
    # A node nothing points to sits just before the first of what it points to, so that
    # its edges are short rather than run behind the boxes between.
    pointed = {nxt for nexts in forward.values() for nxt in nexts}
    for node in node_ids:
        if node not in pointed and forward[node]:
            layer[node] = min(layer[nxt] for nxt in forward[node]) - 1
    return layer


def _acyclic(
    node_ids: Sequence[str], out: dict[str, list[str]]
) -> tuple[list[str], dict[str, list[str]]]:
    """Depth-first, iteratively: the nodes in finishing order, and the edges but those to a
    node still on the stack (which close a cycle)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    order: list[str] = []
    forward: dict[str, list[str]] = {n: [] for n in node_ids}
    for root in node_ids:
        if root in state:
            continue
        state[root] = 1
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, i = stack[-1]
            if i == len(out[node]):
                state[node] = 2
                order.append(node)
                stack.pop()
                continue
            stack[-1] = (node, i + 1)
            nxt = out[node][i]
            seen = state.get(nxt)
            if seen != 1:
                forward[node].append(nxt)
            if seen is None:
                state[nxt] = 1
                stack.append((nxt, 0))
    return order, forward


def place(
    boxes: Sequence[Box], layer_of: Mapping[str, int], edges: Sequence[tuple[str, str]]
) -> tuple[list[Box], int, int]:
    """Boxes at their places: a column per layer (wrapped when long), each column ordered
    by where its neighbours to the left sit, so fewer edges cross."""
    by_layer: dict[int, list[Box]] = {}
    for box in sorted(boxes, key=lambda b: (b.name, b.environment)):
        by_layer.setdefault(layer_of[box.id], []).append(box)
    left_of: dict[str, list[str]] = {}
    for source, target in edges:
        left_of.setdefault(target, []).append(source)
    row: dict[str, float] = {}
    placed: list[Box] = []
    column = 0
    tallest = 0
    for layer in sorted(by_layer):
        members = by_layer[layer]

        first = {box.id: i for i, box in enumerate(members)}

        def weight(box: Box, first: dict[str, int] = first) -> float:
            rows = [row[s] for s in left_of.get(box.id, ()) if s in row]
            return sum(rows) / len(rows) if rows else first[box.id]

        members.sort(key=weight)
        for start in range(0, len(members), _ROWS):
            chunk = members[start : start + _ROWS]
            tallest = max(tallest, len(chunk))
            for i, box in enumerate(chunk):
                row[box.id] = i
                placed.append(
                    Box(
                        box.id,
                        box.name,
                        box.kind,
                        box.environment,
                        box.href,
                        _PAD + column * _COLUMN,
                        _PAD + i * _ROW,
                    )
                )
            column += 1
    width = _PAD * 2 + max(0, column - 1) * _COLUMN + _W
    height = _PAD * 2 + max(0, tallest - 1) * _ROW + _H
    return placed, width, height


def _shape(kind: str, x: int, y: int, *, focus: bool, w: int = _W, h: int = _H) -> str:
    fill, stroke, shape = KIND_STYLES.get(kind, _OTHER)
    paint = f"fill='{fill}' stroke='{stroke}' stroke-width='{3 if focus else 1.5}'"
    if shape == "pill":
        return f"<rect x='{x}' y='{y}' width='{w}' height='{h}' rx='{h // 2}' {paint}/>"
    if shape == "ellipse":
        return f"<ellipse cx='{x + w / 2}' cy='{y + h / 2}' rx='{w / 2}' ry='{h / 2}' {paint}/>"
    if shape == "hexagon":
        points = (
            f"{x + 10},{y} {x + w - 10},{y} {x + w},{y + h / 2} "
            f"{x + w - 10},{y + h} {x + 10},{y + h} {x},{y + h / 2}"
        )
        return f"<polygon points='{points}' {paint}/>"
    if shape == "slant":
        points = f"{x + 10},{y} {x + w},{y} {x + w - 10},{y + h} {x},{y + h}"
        return f"<polygon points='{points}' {paint}/>"
    dash = " stroke-dasharray='5 3'" if shape == "dashed" else ""
    return f"<rect x='{x}' y='{y}' width='{w}' height='{h}' rx='6' {paint}{dash}/>"


def _short(name: str) -> str:
    return name if len(name) <= _LABEL else name[: _LABEL - 1] + "…"


def edge_text(source: str, target: str, edge: Mapping[str, Any]) -> str:
    """What hovering an edge says: its ends, kind and last-hour figures."""
    text = f"{source} → {target} ({edge['kind']})"
    if edge.get("calls_per_minute") is not None:
        rate = edge.get("error_rate") or 0.0
        text += f": {edge['calls_per_minute']:g} calls/min, {rate * 100:.2f}% errors"
        if edge.get("p95_ms") is not None:
            text += f", p95 {edge['p95_ms']:g} ms"
    else:
        text += ": no calls in the last hour"
    return text


def graph_svg(
    boxes: Sequence[Box],
    edges: Sequence[Mapping[str, Any]],
    layer_of: Mapping[str, int],
    *,
    focus: str | None = None,
    label: str = "The graph",
) -> tuple[str, int]:
    """The boxes in layers, left to right, and the edges between them as arrows; each node
    a link, each node and edge a `<title>`. Returns the SVG and its width in pixels."""
    pairs = [(str(edge["from_id"]), str(edge["to_id"])) for edge in edges]
    placed, width, height = place(boxes, layer_of, pairs)
    at = {box.id: box for box in placed}
    head = (
        f"<svg xmlns='http://www.w3.org/2000/svg' class=graph width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role=img aria-labelledby=graph-title>"
        f"<title id=graph-title>{e(label)}</title>"
        "<defs><marker id=arrow viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' "
        "markerHeight='7' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' "
        "fill='#555'/></marker></defs>"
    )
    parts = [head]
    for edge, (source, target) in zip(edges, pairs, strict=True):
        a, b = at.get(source), at.get(target)
        if a is None or b is None:
            continue
        parts.append(_edge(a, b, edge))
    parts.extend(
        f"<a href='{e(box.href)}' class=node data-name='{e(box.name)}' "
        f"data-kind='{e(box.kind)}'><title>{e(box.name)} ({e(box.kind)}, "
        f"{e(box.environment)})</title>{_shape(box.kind, box.x, box.y, focus=box.id == focus)}"
        f"<text x='{box.x + _W / 2}' y='{box.y + _H / 2 + 5}' text-anchor='middle' "
        f"font-size='13' fill='#111'>{e(_short(box.name))}</text></a>"
        for box in placed
    )
    parts.append("</svg>")
    return "".join(parts), width


def _edge(a: Box, b: Box, edge: Mapping[str, Any]) -> str:
    x1, y1 = a.x + _W, a.y + _H / 2
    x2, y2 = b.x, b.y + _H / 2
    if x2 <= x1:  # back up the layers, or within one: around the boxes' ends
        x1, x2 = a.x + _W, b.x + _W
        bend = 60 + abs(y2 - y1) / 4
        d = f"M{x1},{y1} C{x1 + bend},{y1} {x2 + bend},{y2} {x2},{y2}"
    else:
        bend = max(40.0, (x2 - x1) / 2)
        d = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
    calls = edge.get("calls_per_minute") or 0.0
    width = 1.2 + min(4.0, math.log10(1 + calls))
    failing = (edge.get("error_rate") or 0.0) >= 0.05
    colour = "#b91c1c" if failing else "#555"
    title = edge_text(a.name, b.name, edge)
    return (
        f"<g class=edge><title>{e(title)}</title>"
        f"<path d='{d}' fill='none' stroke='{colour}' stroke-width='{width:.1f}' "
        f"marker-end='url(#arrow)'/>"
        f"<path d='{d}' fill='none' stroke='transparent' stroke-width='12'/></g>"
    )


def legend(kinds: Sequence[str]) -> str:
    """A key to the shapes and colours of the kinds drawn."""
    items = []
    for kind in kinds:
        shape = KIND_STYLES.get(kind, _OTHER)[2]
        swatch = _shape(kind, 2, 2, focus=False, w=40, h=18)
        items.append(
            f"<li><svg width='44' height='22' aria-hidden=true>{swatch}</svg> "
            f"{e(kind.replace('_', ' '))} <span class=muted>({e(shape)})</span></li>"
        )
    return "<ul class=legend aria-label='Kinds of node'>" + "".join(items) + "</ul>"


def _nice(value: float) -> str:
    """A figure as an axis shows it: 1,010 not 1.01e+03, 4.1 not 4.1234."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}".removesuffix(".0")
    return f"{value:.2g}"


def _axis_time(time_us: int) -> str:
    return datetime.fromtimestamp(time_us / 1e6, UTC).strftime("%H:%M")


def line_chart(
    times_us: Sequence[int],
    values: Sequence[float],
    *,
    title: str,
    unit: str,
    start_us: int,
    end_us: int,
    width: int = 320,
    height: int = 130,
) -> str:
    """A line of `values` over [start_us, end_us), its largest value and time marked; the
    figures themselves in the `<title>` and `aria-label`, so a screen reader reads them."""
    left, right, top, bottom = 40, 8, 10, 20
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(values, default=0.0)
    scale = peak if peak > 0 else 1.0
    span = max(1, end_us - start_us)

    def xy(t: int, v: float) -> str:
        x = left + (t - start_us) / span * plot_w
        y = top + plot_h - v / scale * plot_h
        return f"{x:.1f},{y:.1f}"

    summary = (
        f"{title}: no data in this hour"
        if not values
        else f"{title}: latest {_nice(values[-1])} {unit}, peak {_nice(peak)} {unit}"
    )
    line = ""
    if values:
        points = " ".join(xy(t, v) for t, v in zip(times_us, values, strict=True))
        line = f"<polyline points='{points}' fill='none' stroke='#1d4ed8' stroke-width='2'/>"
        if len(values) == 1:
            x, y = xy(times_us[0], values[0]).split(",")
            line += f"<circle cx='{x}' cy='{y}' r='3' fill='#1d4ed8'/>"
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' class=chart width='100%' "
        f"viewBox='0 0 {width} {height}' role=img aria-label='{e(summary)}' "
        f"preserveAspectRatio='xMinYMin meet'><title>{e(summary)}</title>"
        f"<line x1='{left}' y1='{top + plot_h}' x2='{width - right}' y2='{top + plot_h}' "
        "stroke='#999'/>"
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + plot_h}' stroke='#999'/>"
        f"<text x='{left - 4}' y='{top + 10}' text-anchor='end' font-size='11'>"
        f"{_nice(peak)}</text>"
        f"<text x='{left - 4}' y='{top + plot_h}' text-anchor='end' font-size='11'>0</text>"
        f"<text x='{left}' y='{height - 6}' font-size='11'>{_axis_time(start_us)} UTC</text>"
        f"<text x='{width - right}' y='{height - 6}' text-anchor='end' font-size='11'>"
        f"{_axis_time(end_us)}</text>"
        f"{line}</svg>"
    )


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    title: str,
    unit: str,
    width: int = 480,
    height: int = 150,
) -> str:
    """A bar per label (a week), None drawn as no bar; its figures in the `<title>` and
    `aria-label`, and each bar's in its own `<title>`, so a screen reader reads them."""
    left, right, top, bottom = 44, 8, 10, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((v for v in values if v is not None), default=0.0)
    scale = peak if peak > 0 else 1.0
    step = plot_w / max(1, len(values))
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        if value is None:
            continue
        h = value / scale * plot_h
        x = left + i * step + step * 0.15
        bars.append(
            f"<rect x='{x:.1f}' y='{top + plot_h - h:.1f}' width='{step * 0.7:.1f}' "
            f"height='{h:.1f}' fill='#1d4ed8'><title>{e(label)}: {_nice(value)} {e(unit)}"
            "</title></rect>"
        )
    shown = [v for v in values if v is not None]
    summary = (
        f"{title}: no data"
        if not shown
        else f"{title}: {len(shown)} weeks, peak {_nice(peak)} {unit}, last {_nice(shown[-1])}"
    )
    first = labels[0] if labels else ""
    last = labels[-1] if labels else ""
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' class=chart width='100%' "
        f"viewBox='0 0 {width} {height}' role=img aria-label='{e(summary)}' "
        f"preserveAspectRatio='xMinYMin meet'><title>{e(summary)}</title>"
        f"<line x1='{left}' y1='{top + plot_h}' x2='{width - right}' y2='{top + plot_h}' "
        "stroke='#999'/>"
        f"<text x='{left - 4}' y='{top + 10}' text-anchor='end' font-size='11'>"
        f"{_nice(peak)}</text>"
        f"<text x='{left - 4}' y='{top + plot_h}' text-anchor='end' font-size='11'>0</text>"
        f"<text x='{left}' y='{height - 6}' font-size='11'>{e(first)}</text>"
        f"<text x='{width - right}' y='{height - 6}' text-anchor='end' font-size='11'>"
        f"{e(last)}</text>{''.join(bars)}</svg>"
    )
