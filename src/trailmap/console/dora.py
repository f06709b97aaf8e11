"""An organization's DORA page: the four key metrics over a range (the same
`get_dora_metrics` as REST `/api/v1/dora` and MCP), each with its level, drawn by week as
server-side SVG, and the events each figure was computed from."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.console.orgs import org_member, org_nav
from trailmap.console.pages import e, page
from trailmap.console.reading import reader_of
from trailmap.console.svg import bar_chart
from trailmap.errors import TrailmapError
from trailmap.http.context import context_of
from trailmap.timeline.dora import get_dora_metrics

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_STYLE: Final = (
    "<style>.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(14rem,1fr));"
    "gap:1rem}.figure{border:1px solid #ddd;padding:.6rem}.figure b{font-size:1.3rem}"
    ".level{font-weight:700}.level-elite,.level-high{color:#060}.level-low{color:#a00}"
    "form.range{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:end}"
    "svg{max-width:40rem;display:block}</style>"
)
_SHOWN_EVIDENCE: Final = 10


def _level(level: str | None) -> str:
    return f"<span class='level level-{e(level or 'none')}'>{e(level or 'no figure')}</span>"


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)


def _form(asked: dict[str, str]) -> str:
    fields = "".join(
        f"<label>{label}<br><input name={name} value='{e(asked.get(name, ''))}' "
        f"placeholder='{e(hint)}'></label>"
        for name, label, hint in (
            ("from", "From", "quarter, -90d, 2026-10-01"),
            ("to", "To", "now"),
            ("service", "Service", "all"),
            ("environment", "Environment", "all"),
        )
    )
    return f"<form class=range method=get>{fields}<button type=submit>Show</button></form>"


def _link(slug: str, event_id: str) -> str:
    return f"/orgs/{quote(slug, safe='')}/events/{quote(event_id, safe='')}"


def _evidence(slug: str, ids: list[str], total: int) -> str:
    links = ", ".join(
        f"<a href='{e(_link(slug, i))}'>{e(i[:8])}</a>" for i in ids[:_SHOWN_EVIDENCE]
    )
    more = f" and {total - min(total, _SHOWN_EVIDENCE)} more" if total > _SHOWN_EVIDENCE else ""
    return f"<p class=muted>From: {links or 'no events'}{more}</p>"


def _figures(slug: str, a: dict[str, Any]) -> str:
    df, lt = a["deployment_frequency"], a["lead_time"]
    cfr, ttr = a["change_failure_rate"], a["time_to_restore"]
    rate = "n/a" if cfr["rate"] is None else f"{cfr['rate'] * 100:.1f}%"
    cards = [
        (
            "Deployment frequency",
            f"{df['per_week']}/week",
            f"{df['deployments']} deployments",
            df["level"],
            _evidence(slug, df["events"]["items"], df["events"]["total"]),
        ),
        (
            "Lead time for changes",
            lt["median"] or "n/a",
            f"median over {lt['changes']} changes",
            lt["level"],
            _evidence(slug, [s["change"] for s in lt["events"]["items"]], lt["events"]["total"]),
        ),
        (
            "Change failure rate",
            rate,
            f"{cfr['failed']} of {cfr['deployments']} deployments",
            cfr["level"],
            _evidence(
                slug, [f["deployment"] for f in cfr["events"]["items"]], cfr["events"]["total"]
            ),
        ),
        (
            "Time to restore",
            ttr["median"] or "n/a",
            f"median over {ttr['restored']} incidents, {ttr['unresolved']} unresolved",
            ttr["level"],
            _evidence(
                slug, [r["incident"] for r in ttr["events"]["items"]], ttr["events"]["total"]
            ),
        ),
    ]
    return (
        "<div class=figures>"
        + "".join(
            f"<section class=figure><h2>{e(name)}</h2><b>{e(value)}</b> {_level(level)}"
            f"<div class=muted>{e(note)}</div>{evidence}</section>"
            for name, value, note, level, evidence in cards
        )
        + "</div>"
    )


def _charts(a: dict[str, Any]) -> str:
    weeks = a["weeks"]
    labels = [w["week"] for w in weeks]
    charts = (
        ("Deployments by week", [float(w["deployments"]) for w in weeks], "deployments"),
        (
            "Change failure rate by week",
            [
                None if w["change_failure_rate"] is None else w["change_failure_rate"] * 100
                for w in weeks
            ],
            "%",
        ),
        (
            "Lead time by week (median)",
            [_hours(w["lead_time_median_seconds"]) for w in weeks],
            "hours",
        ),
        (
            "Time to restore by week (median)",
            [_hours(w["time_to_restore_median_seconds"]) for w in weeks],
            "hours",
        ),
    )
    return "".join(
        f"<figure data-chart='{e(title)}'><figcaption>{e(title)} ({e(unit)})</figcaption>"
        f"{bar_chart(labels, values, title=title, unit=unit)}</figure>"
        for title, values, unit in charts
    )


@router.get("/orgs/{slug}/dora")
async def dora_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    ctx = context_of(request)
    principal = await reader_of(request, m)
    asked = {k: v for k, v in request.query_params.items() if v}
    try:
        answer = await get_dora_metrics(
            ctx.db,
            principal,
            from_=asked.get("from", "quarter"),
            to=asked.get("to", "now"),
            service=asked.get("service"),
            environment=asked.get("environment"),
            timezone=asked.get("tz"),
            default_timezone=ctx.settings.default_timezone,
            evidence_limit=_SHOWN_EVIDENCE,
        )
    except TrailmapError as error:
        body = _form(asked) + f"<p class=error role=alert>{e(error.message)}</p>"
        return page("DORA metrics", body, nav=org_nav(m), status=error.status)
    body = (
        _STYLE
        + _form(asked)
        + f"<p class=muted>{e(answer['from'][:10])} to {e(answer['to'][:10])}; levels in the "
        f"bands of the {e(answer['edition'])} (<a href=https://dora.dev>dora.dev</a>).</p>"
        + _figures(m.slug, answer)
        + _charts(answer)
    )
    return page("DORA metrics", body, nav=org_nav(m))
