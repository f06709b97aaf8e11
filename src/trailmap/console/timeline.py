"""An organization's Timeline page: its events newest first, filtered as REST's
`GET /api/v1/events` filters them (the same `query_events`), one entry per change, pages by
the domain's cursor, and new events added without a reload by `static/timeline.js`."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, Final
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, available_timezones

from fastapi import APIRouter, Request
from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse, Response

from trailmap.accounts.principal import Principal
from trailmap.console.orgs import OrgMember, org_member, org_nav
from trailmap.console.pages import e, page
from trailmap.console.reading import reader_of
from trailmap.errors import TrailmapError
from trailmap.http.context import context_of
from trailmap.timeline.events import SEVERITIES
from trailmap.timeline.queries import EventPage, EventQuery, known_values, query_events

__all__ = ["absolute_time", "event_link", "router", "with_live_updates"]

router = APIRouter(include_in_schema=False)

PRESETS: Final = (
    ("Last hour", "-1h"),
    ("6 hours", "-6h"),
    ("24 hours", "-24h"),
    ("7 days", "-7d"),
    ("Today", "today"),
)
# (form field, label, the timeline's facet of the same values)
FILTERS: Final = (
    ("type", "Type", "type"),
    ("environment", "Environment", "subject"),
    ("service", "Service", "service"),
    ("severity", "Severity", ""),
    ("source", "Source", "source"),
)
_FIELDS: Final = ("from", "to", *(f[0] for f in FILTERS), "search", "tz")
_PAGE_SIZE: Final = 25
# The filters' suggestions, per organization, kept a minute: a page load costs one query less.
_SUGGESTIONS: dict[str, tuple[float, dict[str, list[str]]]] = {}
_SUGGESTIONS_FOR_S: Final = 60.0
_MAX_KEPT: Final = 1000
_FRACTION: Final = re.compile(r"\.\d+(?=[+-]\d\d:\d\d$|Z$)")
_STYLE: Final = (
    "<style>ol.events{list-style:none;padding:0;margin:1rem 0}"
    "ol.events li{border-bottom:1px solid #ddd;padding:.5rem 0;overflow-wrap:anywhere}"
    ".type{font-weight:600}.sev{font-size:.8rem;padding:0 .3rem;border:1px solid #999}"
    ".sev-MAJOR,.sev-CRITICAL{border-color:#a00;color:#a00}"
    ".verdict{font-size:.8rem;padding:0 .3rem;border:1px solid #999}"
    ".verdict-regressed{border-color:#a00;color:#a00}.verdict-improved{color:#060}"
    ".violation{font-size:.8rem;padding:0 .3rem;border:1px solid #8a5a00;color:#6b4500}"
    ".filters{display:flex;flex-wrap:wrap;gap:0 1rem}.filters div{flex:1 1 12rem}"
    ".presets a{margin-right:.8rem;white-space:nowrap}.presets a[aria-current]{font-weight:700}"
    "li.new{background:#fffbe0}summary{margin-top:1rem;cursor:pointer}</style>"
)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _asked(params: QueryParams) -> dict[str, str]:
    """The page's fields as asked, empty ones left out."""
    return {name: value for name in _FIELDS if (value := params.get(name, "").strip())}


def _query(asked: dict[str, str], cursor: str | None) -> EventQuery:
    return EventQuery(
        from_=asked.get("from", "-24h"),
        to=asked.get("to", "now"),
        types=_split(asked.get("type", "")),
        subjects=_split(asked.get("environment", "")),
        services=_split(asked.get("service", "")),
        severities=_split(asked.get("severity", "").upper()),
        sources=_split(asked.get("source", "")),
        search=asked.get("search"),
        limit=_PAGE_SIZE,
        cursor=cursor,
        timezone=asked.get("tz"),
    )


def event_link(slug: str, event: Mapping[str, Any]) -> str:
    """The Event page of `event`: the producer's id, with its source (ids may repeat)."""
    return (
        f"/orgs/{quote(slug, safe='')}/events/{quote(str(event['id']), safe='')}"
        f"?{urlencode({'source': event['source']})}"
    )


def _moment(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).isoformat(timespec="seconds").replace("T", " ")


def absolute_time(time_text: str) -> str:
    """An ISO time as a person reads it: a space for the T, whole seconds."""
    return _FRACTION.sub("", time_text.replace("T", " "))


def event_row(slug: str, event: dict[str, Any]) -> str:
    """One change as a list item; every value escaped."""
    what = f"<span class=type>{e(event['type'])}</span>"
    if service := event.get("service"):
        what += f" of {e(service)}"
    if version := event.get("version"):
        what += f" {e(version)}"
    where = f" in {e(event['subject'])}" if event.get("subject") else ""
    severity = event.get("severity")
    badge = f" <span class='sev sev-{e(severity)}'>{e(severity)}</span>" if severity else ""
    if verdict := event.get("verdict"):
        badge += (
            f" <span class='verdict verdict-{e(verdict)}' title='automatic verdict'>"
            f"{e(str(verdict).replace('_', ' '))}</span>"
        )
    if violations := event.get("violations"):
        # A deployment stored against a guardrail: flagged, with what it went against.
        said = "; ".join(str(v.get("message", v.get("kind"))) for v in violations)
        count = len(violations)
        badge += (
            f" <span class=violation title='{e(said)}'>⚠ {count} guardrail "
            f"violation{'s' if count > 1 else ''}</span>"
        )
    description = f"<div>{e(event['description'])}</div>" if event.get("description") else ""
    sources = [event["source"], *event.get("also_reported_by", [])]
    reported = " and ".join(f"<code>{e(s)}</code>" for s in sources)
    return (
        f"<li data-id='{e(event['trailmap_id'])}'>"
        f"<div><time datetime='{e(event['time'])}' title='{e(absolute_time(event['time']))}'>"
        f"{e(event['time_relative'])}</time> <span class=muted>· "
        f"{e(absolute_time(event['time']))}</span></div>"
        f"<div><a href='{e(event_link(slug, event))}'>{what}</a>{where}{badge}</div>"
        f"{description}<div class=muted>reported by {reported}</div></li>"
    )


def _url(slug: str, asked: dict[str, str], **changes: str | None) -> str:
    values = {**asked, **changes}
    query = urlencode({k: v for k, v in values.items() if v})
    return f"/orgs/{quote(slug, safe='')}/timeline" + (f"?{query}" if query else "")


@cache
def _zone_options() -> str:
    """Every IANA zone as an option, rendered once (the select is on every page)."""
    return "".join(f"<option value='{e(z)}'>{e(z)}</option>" for z in sorted(available_timezones()))


def _zone_select(zone: str) -> str:
    option = f"<option value='{e(zone)}'>"
    return _zone_options().replace(option, f"<option value='{e(zone)}' selected>", 1)


async def _known_values(request: Request, principal: Principal) -> dict[str, list[str]]:
    """What each filter can be, for the fields' suggestions: values the organization has."""
    now = time.monotonic()
    kept = _SUGGESTIONS.get(principal.org_id)
    if kept is not None and kept[0] > now:
        return kept[1]
    facets = {field: facet for field, _, facet in FILTERS if facet}
    found = await known_values(context_of(request).db, principal, list(facets.values()))
    known = {field: found[facet] for field, facet in facets.items()}
    known["severity"] = list(SEVERITIES)
    if len(_SUGGESTIONS) >= _MAX_KEPT:
        _SUGGESTIONS.clear()
    _SUGGESTIONS[principal.org_id] = (now + _SUGGESTIONS_FOR_S, known)
    return known


def _form(
    m: OrgMember, asked: dict[str, str], known: dict[str, list[str]], zone: str, problems: str
) -> str:
    slug = e(m.slug)
    current = asked.get("from", "-24h")
    presets = " ".join(
        f"<a href='{e(_url(m.slug, asked, **{'from': value, 'to': None}))}'"
        f"{' aria-current=true' if value == current and 'to' not in asked else ''}>{label}</a>"
        for label, value in PRESETS
    )
    # The filters fold away until one is used: on a phone the events come first.
    filtered = any(asked.get(field) for field, _, _ in FILTERS)
    fields = []
    lists = []
    for field, label, _ in FILTERS:
        list_id = f"known-{field}"
        fields.append(
            f"<div><label for=f-{field}>{label}</label>"
            f"<input id=f-{field} name={field} value='{e(asked.get(field, ''))}' "
            f"list={list_id} autocomplete=off placeholder='any'></div>"
        )
        lists.append(
            f"<datalist id={list_id}>"
            + "".join(f"<option value='{e(v)}'>" for v in known.get(field, []))
            + "</datalist>"
        )
    return (
        f"<p class=presets>{presets}</p>"
        f"<form method=get action=/orgs/{slug}/timeline role=search>{problems}"
        "<div class=filters>"
        f"<div><label for=f-search>Search</label><input id=f-search name=search type=search "
        f"value='{e(asked.get('search', ''))}' maxlength=200 "
        "placeholder='words that must all appear'></div>"
        f"<div><label for=f-from>From</label><input id=f-from name=from "
        f"value='{e(asked.get('from', '-24h'))}' placeholder='-24h, today, 2026-01-31T09:00'></div>"
        f"<div><label for=f-to>To</label><input id=f-to name=to "
        f"value='{e(asked.get('to', 'now'))}' placeholder='now'></div>"
        f"</div><details{' open' if filtered else ''}><summary>Filters and time zone</summary>"
        f"<div class=filters>{''.join(fields)}"
        f"<div><label for=f-tz>Time zone</label><select id=f-tz name=tz "
        f"data-asked='{e(asked.get('tz', ''))}'>{_zone_select(zone)}</select></div>"
        f"</div></details>{''.join(lists)}<button type=submit>Show</button>"
        f"<a href=/orgs/{slug}/timeline>Clear</a></form>"
    )


def _problems(error: TrailmapError) -> str:
    items = "".join(
        f"<li>{e(d.field)}: {e(d.message)}</li>" if d.field else f"<li>{e(d.message)}</li>"
        for d in error.details
    )
    return (
        f"<div class=error role=alert><p>{e(error.message)}</p>"
        + (f"<ul>{items}</ul>" if items else "")
        + "</div>"
    )


def _hint(found: EventPage) -> str:
    """Why the page is empty and what would match: the domain's note and closest values."""
    if found.events or not found.note:
        return ""
    return f"<p class=notice role=status id=empty-hint>{e(found.note)}</p>"


def with_live_updates(response: Response) -> Response:
    """Let the page's own script ask this server for new rows (fetch is `connect-src`)."""
    csp = response.headers["Content-Security-Policy"]
    response.headers["Content-Security-Policy"] = f"{csp}; connect-src 'self'"
    return response


@router.get("/orgs/{slug}/timeline")
async def timeline_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    ctx = context_of(request)
    principal = await reader_of(request, m)
    asked = _asked(request.query_params)
    cursor = request.query_params.get("cursor") or None
    known = await _known_values(request, principal)
    zone = asked.get("tz") or ctx.settings.default_timezone
    try:
        found = await query_events(
            ctx.db,
            principal,
            _query(asked, cursor),
            default_timezone=ctx.settings.default_timezone,
        )
    except TrailmapError as error:
        body = _STYLE + _form(m, asked, known, zone, _problems(error))
        return page(f"Timeline · {m.name}", body, nav=org_nav(m), status=error.status)
    shown = found.range
    live = cursor is None and asked.get("to", "now") == "now"
    rows = "".join(event_row(m.slug, event) for event in found.events)
    older = (
        f"<p><a rel=next href='{e(_url(m.slug, asked, cursor=found.next_cursor))}'>Older</a></p>"
        if found.next_cursor
        else ""
    )
    newest = f"<p><a href='{e(_url(m.slug, asked))}'>Newest</a></p>" if cursor else ""
    feed = f"{_url(m.slug, asked).replace('/timeline', '/timeline/rows', 1)}" if live else ""
    note = "" if not found.events or not found.note else f"<p class=muted>{e(found.note)}</p>"
    body = (
        _STYLE
        + _form(m, asked, known, shown.tz.key, "")
        + f"<p class=muted>From {e(_moment(shown.effective_start, shown.tz))}"
        f" to {e(_moment(shown.end, shown.tz))}"
        f" ({e(shown.tz.key)}), newest first"
        + ("; new events appear here as they arrive" if live else "")
        + ".</p>"
        + note
        + _hint(found)
        + f"<ol class=events id=events aria-live=polite data-feed='{e(feed)}'>{rows}</ol>"
        + newest
        + older
        + "<script src=/console/timeline.js defer></script>"
    )
    return with_live_updates(page(f"Timeline · {m.name}", body, nav=org_nav(m)))


@router.get("/orgs/{slug}/timeline/rows")
async def timeline_rows(request: Request, slug: str) -> Response:
    """The first page of the timeline as the page's rows: what `timeline.js` polls."""
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    ctx = context_of(request)
    principal = await reader_of(request, m)
    try:
        found = await query_events(
            ctx.db,
            principal,
            _query(_asked(request.query_params), None),
            default_timezone=ctx.settings.default_timezone,
        )
    except TrailmapError as error:
        return JSONResponse(
            {
                "success": False,
                "error": error.message,
                "code": error.code,
                "details": [d.as_json() for d in error.details],
            },
            status_code=error.status,
        )
    rows = [
        {"id": event["trailmap_id"], "html": event_row(m.slug, event)} for event in found.events
    ]
    return JSONResponse({"rows": rows}, headers={"Cache-Control": "no-store"})


@cache
def _script() -> bytes:
    return resources.files("trailmap.console").joinpath("static/timeline.js").read_bytes()


@router.get("/console/timeline.js")
async def timeline_script() -> Response:
    return Response(
        _script(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
