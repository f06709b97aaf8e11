"""Asking the timeline: filtered pages newest first, one event, summaries; REST and MCP both
call these, and no answer holds an event older than the retention window."""

from __future__ import annotations

import base64
import binascii
import difflib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from trailmap import clock
from trailmap.accounts.principal import Principal
from trailmap.errors import ValidationFailed
from trailmap.storage import Connection, Database
from trailmap.storage import events as store
from trailmap.storage.events import EventFilter
from trailmap.timeline.events import DETECTED_SOURCE_PREFIX, SEVERITIES
from trailmap.timeline.lookup import find_event
from trailmap.timeline.times import (
    TimeExpressionError,
    format_local_time,
    format_relative,
    format_relative_us,
    format_time,
    parse_time_expression,
    resolve_timezone,
)
from trailmap.timeline.verdicts import verdict_of, with_verdicts

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "SAME_CHANGE_US",
    "EventPage",
    "EventQuery",
    "Summary",
    "TimeRange",
    "get_event",
    "known_values",
    "list_facet",
    "one_per_change",
    "query_events",
    "render_event",
    "resolve_range",
    "summarize_events",
]

DEFAULT_LIMIT: Final = 25
MAX_LIMIT: Final = 100
# A deployment that CI reported and that traces revealed (a new service.version) within this
# long of each other, with the same type, service and version, is one change.
SAME_CHANGE_US: Final = 15 * 60 * 1_000_000
_MAX_FILTER_VALUES = 20
# find_changes_near asks for the changes of every service near a node: up to 200 of them.
_MAX_SERVICES = 200
_MAX_SEARCH_WORDS = 8
_CURSOR = re.compile(r"^v1:(\d{1,19}):([0-9a-f-]{36})$")
_MAX_TIME_US = 2**63 - 1


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A query as a person or a model phrases it; `resolve_range` turns the times into bounds."""

    from_: str = "-24h"
    to: str = "now"
    types: Sequence[str] = ()
    sources: Sequence[str] = ()
    subjects: Sequence[str] = ()
    severities: Sequence[str] = ()
    services: Sequence[str] = ()
    search: str | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    timezone: str | None = None


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime  # as asked
    end: datetime
    effective_start: datetime  # clipped to the retention window
    retention_start: datetime
    tz: ZoneInfo
    now: datetime

    @property
    def before_retention(self) -> bool:
        """True when the whole range lies before the oldest time that can be asked."""
        return self.end < self.retention_start

    @property
    def clipped(self) -> bool:
        return self.start < self.retention_start <= self.end


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[dict[str, Any]]
    next_cursor: str | None
    range: TimeRange
    note: str | None = None  # why the page is empty or its range shorter than asked
    # On an empty answer to a filtered query: the asked values that match nothing, with the
    # closest values that exist, and what the organization does have in the range.
    hint: dict[str, Any] | None = None


def range_note(time_range: TimeRange, *, empty: bool, org_has_events: bool) -> str | None:
    """Why an answer is empty or its range shorter than asked: one wording for every face."""
    retention_start = format_time(time_range.retention_start, time_range.tz)
    if time_range.before_retention:
        return (
            "The whole range is older than this organization's retention window; the oldest "
            f"time that can be asked is {retention_start}."
        )
    if time_range.clipped:
        clipped = (
            "The range starts before the retention window; it was shortened to start at "
            f"{retention_start}."
        )
        return f"{clipped} No events in what remains." if empty else clipped
    if not empty:
        return None
    if not org_has_events:
        return (
            "This organization has no events yet. Send one with `trailmap send` or "
            "POST /api/v1/events (see the README)."
        )
    return "No events of that kind in this range; widen the range or drop a filter."


@dataclass(frozen=True, slots=True)
class Summary:
    total: int
    by_type: list[dict[str, Any]]
    by_subject: list[dict[str, Any]]
    by_source: list[dict[str, Any]]
    by_severity: list[dict[str, Any]]
    latest: list[dict[str, Any]]
    range: TimeRange
    note: str | None = None  # why the summary is empty or its range shorter than asked

    def counts_json(self) -> dict[str, Any]:
        """What every face shows of a summary; each adds the range in its own words."""
        return {
            "total": self.total,
            "by_type": self.by_type,
            "by_subject": self.by_subject,
            "by_source": self.by_source,
            "by_severity": self.by_severity,
            "latest": self.latest,
        }


def resolve_range(
    principal: Principal,
    from_: str | None,
    to: str | None,
    timezone: str | None,
    *,
    default_timezone: str = "UTC",
    now: datetime | None = None,
) -> TimeRange:
    now = now or clock.now()
    try:
        tz = resolve_timezone(timezone, default=default_timezone)
    except TimeExpressionError as error:
        raise ValidationFailed.field("timezone", str(error)) from None
    start = _parse("from", from_ or "-24h", now, tz)
    end = _parse("to", to or "now", now, tz)
    if start > end:
        raise ValidationFailed.field(
            "from",
            f"from ({format_time(start, tz)}) is after to ({format_time(end, tz)}); "
            "swap them or widen the range",
        )
    retention_start = now - timedelta(days=principal.retention_days)
    return TimeRange(
        start=start,
        end=end,
        effective_start=max(start, retention_start),
        retention_start=retention_start,
        tz=tz,
        now=now,
    )


def _parse(name: str, text: str, now: datetime, tz: ZoneInfo) -> datetime:
    try:
        return parse_time_expression(text, now=now, tz=tz)
    except TimeExpressionError as error:
        raise ValidationFailed.field(name, str(error)) from None


def _values(
    name: str, values: Sequence[str], limit: int, *, most: int = _MAX_FILTER_VALUES
) -> list[str]:
    cleaned = [v.strip() for v in values if v and v.strip()]
    if len(cleaned) > most:
        raise ValidationFailed.field(name, f"give at most {most} values")
    for value in cleaned:
        if len(value) > limit:
            raise ValidationFailed.field(name, f"a value is longer than {limit} characters")
        _refuse_nul(name, value)
    return cleaned


def _refuse_nul(name: str, value: str) -> None:
    # No stored event holds a NUL, and PostgreSQL refuses one even as a query parameter.
    if "\x00" in value:
        raise ValidationFailed.field(
            name, "a value contains a NUL character (\\u0000), which no event can hold"
        )


def _filter(query: EventQuery, time_range: TimeRange) -> EventFilter:
    severities = [s.upper() for s in _values("severity", query.severities, 20)]
    for severity in severities:
        if severity not in SEVERITIES:
            raise ValidationFailed.field(
                "severity", f"{severity!r} is not a severity; use {', '.join(SEVERITIES)}"
            )
    words: list[str] = []
    if query.search is not None:
        if len(query.search) > 200:
            raise ValidationFailed.field("search", "search text is at most 200 characters")
        _refuse_nul("search", query.search)
        words = query.search.lower().split()
        if len(words) > _MAX_SEARCH_WORDS:
            raise ValidationFailed.field("search", f"search with at most {_MAX_SEARCH_WORDS} words")
    return EventFilter(
        from_us=clock.to_us(time_range.effective_start),
        to_us=clock.to_us(time_range.end),
        types=_values("type", query.types, 200),
        sources=_values("source", query.sources, 500),
        subjects=_values("subject", query.subjects, 50),
        severities=severities,
        services=_values("service", query.services, 200, most=_MAX_SERVICES),
        words=words,
        detected_prefix=DETECTED_SOURCE_PREFIX,
        same_change_us=SAME_CHANGE_US,
    )


def encode_cursor(time_us: int, event_id: str) -> str:
    return base64.urlsafe_b64encode(f"v1:{time_us}:{event_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The position a cursor names; anything not made by `encode_cursor` is refused."""
    problem = ValidationFailed.field(
        "cursor", "this cursor is not one Trailmap issued; pass next_cursor from the previous page"
    )
    if len(cursor) > 200:
        raise problem
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise problem from None
    match = _CURSOR.match(text)
    if not match:
        raise problem
    try:
        uuid.UUID(match.group(2))
    except ValueError:
        raise problem from None
    time_us = int(match.group(1))
    if time_us > _MAX_TIME_US:
        # 19 digits can exceed a 64-bit column; neither database would accept it as a bound.
        raise problem
    return time_us, match.group(2)


def _unfiltered(flt: EventFilter) -> bool:
    return not (
        flt.types or flt.sources or flt.subjects or flt.severities or flt.services or flt.words
    )


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed.field("limit", f"limit must be 1 to {MAX_LIMIT}, not {limit}")


async def query_events(
    db: Database,
    principal: Principal,
    query: EventQuery,
    *,
    default_timezone: str = "UTC",
    now: datetime | None = None,
    full: bool = False,
) -> EventPage:
    _check_limit(query.limit)
    time_range = resolve_range(
        principal, query.from_, query.to, query.timezone, default_timezone=default_timezone, now=now
    )
    flt = _filter(query, time_range)
    before = decode_cursor(query.cursor) if query.cursor else None
    if time_range.before_retention:
        return EventPage(
            [], None, time_range, range_note(time_range, empty=True, org_has_events=True)
        )
    values = await _resolve_values(db, principal.org_id, flt)
    flt = values.filter
    # An unfiltered page walks at most limit + 1 entries of the (org_id, time_us, id) index
    # (and for each, a seek of the (org_id, service, time_us) index: its twin, to leave out
    # or to name): work bounded like a point lookup, which SQLite does faster than a hop to
    # a worker thread. A filter or search words may scan the whole range, so those take the
    # hop.
    read = db.read_point if _unfiltered(flt) else db.read_one
    rows = await read(
        store.select_events,
        principal.org_id,
        flt,
        limit=query.limit + 1,
        before=before,
        full=full,
        direct=True,
    )
    next_cursor = None
    if len(rows) > query.limit:
        rows = rows[: query.limit]
        next_cursor = encode_cursor(rows[-1]["time_us"], rows[-1]["id"])
    events = _rendered(rows, time_range, full=full)
    await with_verdicts(db, principal.org_id, events)
    has_events = bool(events) or await _has_events(db, principal)
    note = range_note(time_range, empty=not events, org_has_events=has_events)
    hint = None
    if not events and has_events and before is None and not _unfiltered(flt):
        hint = await _empty_hint(db, principal.org_id, flt, values)
        note = f"{note} {_hint_text(hint)}" if note else _hint_text(hint)
    return EventPage(events=events, next_cursor=next_cursor, range=time_range, note=note, hint=hint)


def _rendered(
    rows: list[dict[str, Any]], time_range: TimeRange, *, full: bool = False
) -> list[dict[str, Any]]:
    """Rows rendered, each outside report of a deployment naming, in `also_reported_by`, the
    detected report of the same change that the query left out."""
    events = []
    for row in rows:
        event = render_event(row, time_range.tz, time_range.now, full=full)
        if twin := row.get(store.TWIN_COLUMN):
            event["also_reported_by"] = [twin]
        events.append(event)
    return events


# -- values matched whatever their case, and what an empty answer suggests -----------------

# (facet, EventFilter attribute) of the filters matched without regard to case.
_CASELESS = (
    ("type", "types"),
    ("subject", "subjects"),
    ("service", "services"),
    ("source", "sources"),
)
# A facet with more distinct values than this is matched by a scan of its index instead.
_MAX_LISTED_VALUES = 1000
_FACET_WORDS = {
    "type": "type",
    "subject": "environment (subject)",
    "service": "service",
    "source": "source",
}


@dataclass(frozen=True, slots=True)
class _Values:
    """A filter whose values are the stored ones, whatever the case they were asked in."""

    filter: EventFilter
    existing: dict[str, list[str]]  # facet: values that exist (the asked facets only)
    unmatched: dict[str, list[str]]  # facet: asked values that match no stored value


async def _resolve_values(db: Database, org_id: str, flt: EventFilter) -> _Values:
    asked = {facet: list(getattr(flt, attr)) for facet, attr in _CASELESS if getattr(flt, attr)}
    if not asked:
        return _Values(flt, {}, {})

    def resolve(conn: Connection) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        existing: dict[str, list[str]] = {}
        matched: dict[str, list[str]] = {}
        for facet, values in asked.items():
            listed = store.distinct_values(conn, org_id, facet, limit=_MAX_LISTED_VALUES + 1)
            if len(listed) <= _MAX_LISTED_VALUES:
                wanted = {v.lower() for v in values}
                matched[facet] = [v for v in listed if v.lower() in wanted]
            else:
                matched[facet] = store.values_like(conn, org_id, facet, values, limit=100)
            existing[facet] = listed[:_MAX_LISTED_VALUES]
        return existing, matched

    # Each statement stands alone (no BEGIN): the values a filter is matched against.
    existing, matched = await db.read_one(resolve)
    unmatched: dict[str, list[str]] = {}
    changes: dict[str, Any] = {}
    for facet, attribute in _CASELESS:
        if facet not in asked:
            continue
        found = {v.lower() for v in matched[facet]}
        missing = [v for v in asked[facet] if v.lower() not in found]
        if missing:
            unmatched[facet] = missing
        # A value that matches nothing stays, so that the filter still matches nothing.
        changes[attribute] = list(dict.fromkeys([*matched[facet], *missing]))
    return _Values(replace(flt, **changes), existing, unmatched)


async def known_values(
    db: Database, principal: Principal, facets: Sequence[str], *, limit: int = 50
) -> dict[str, list[str]]:
    """Up to `limit` stored values of each facet (type, subject, service, source), in index
    order, for a form's suggestions: a seek per value, however many events (unlike
    `list_facet`, which counts them); a value may be older than the retention window."""
    for facet in facets:
        if facet not in _FACET_WORDS:
            raise ValidationFailed.field("facet", f"one of {', '.join(_FACET_WORDS)}")

    def listed(conn: Connection) -> dict[str, list[str]]:
        return {
            facet: store.distinct_values(conn, principal.org_id, facet, limit=limit)
            for facet in facets
        }

    return await db.read_one(listed)


def closest_values(asked: str, existing: Sequence[str], *, n: int = 3) -> list[str]:
    """The existing values a person most likely meant: those the asked text begins (or that
    begin it), those that contain it, then the nearest by spelling."""
    by_lower: dict[str, str] = {}
    for value in existing:
        by_lower.setdefault(value.lower(), value)
    want = asked.lower()
    prefixed = sorted(
        (
            low
            for low in by_lower
            if low.startswith(want) or (len(low) >= 3 and want.startswith(low))
        ),
        key=len,
    )
    containing = sorted((low for low in by_lower if want in low), key=len)
    near = difflib.get_close_matches(want, list(by_lower), n=n, cutoff=0.6)
    return [by_lower[low] for low in dict.fromkeys([*prefixed, *containing, *near])][:n]


async def _empty_hint(
    db: Database, org_id: str, flt: EventFilter, values: _Values
) -> dict[str, Any]:
    unfiltered = EventFilter(
        from_us=flt.from_us,
        to_us=flt.to_us,
        detected_prefix=flt.detected_prefix,
        same_change_us=flt.same_change_us,
    )

    def in_range(conn: Connection) -> tuple[int, list[dict[str, Any]]]:
        total = store.count_events(conn, org_id, unfiltered)
        return total, store.facet_counts(conn, org_id, "type", unfiltered, limit=10)

    total, by_type = await db.read(in_range)
    unmatched = [
        {
            "filter": facet,
            "value": value,
            "closest": closest_values(value, values.existing.get(facet, [])),
        }
        for facet, asked in values.unmatched.items()
        for value in asked
    ]
    return {
        "unmatched": unmatched,
        "in_range": {
            "total": total,
            "by_type": [{"value": r["value"], "count": int(r["count"])} for r in by_type],
        },
    }


def _hint_text(hint: dict[str, Any]) -> str:
    """The hint in a sentence or two, for a person or a model to act on."""
    parts = []
    for item in hint["unmatched"]:
        what = f'No {_FACET_WORDS[item["filter"]]} is called "{item["value"]}"'
        closest = item["closest"]
        if closest:
            parts.append(f"{what}; did you mean {' or '.join(repr(c) for c in closest)}?")
        else:
            parts.append(f"{what}.")
    in_range = hint["in_range"]
    if in_range["total"]:
        counts = ", ".join(f"{r['value']} {r['count']}" for r in in_range["by_type"])
        parts.append(f"In this range the organization has {in_range['total']} events: {counts}.")
    else:
        parts.append("The organization has no events at all in this range.")
    return " ".join(parts)


async def _has_events(db: Database, principal: Principal) -> bool:
    """Whether the organization has any event in its retention window."""
    return bool(await list_facet(db, principal, "type", limit=1))


async def get_event(
    db: Database,
    principal: Principal,
    event_id: str,
    *,
    source: str | None = None,
    timezone: str | None = None,
    default_timezone: str = "UTC",
    now: datetime | None = None,
) -> dict[str, Any]:
    """One event by the producer's id (with `source` when producers share it) or Trailmap's."""
    now = now or clock.now()
    try:
        tz = resolve_timezone(timezone, default=default_timezone)
    except TimeExpressionError as error:
        raise ValidationFailed.field("timezone", str(error)) from None
    row = await find_event(db, principal, event_id, source=source, now=now)
    event = render_event(row, tz, now, full=True)
    event["received"] = format_time(clock.from_us(row["received_us"]), tz)
    if row["type"] == "deployment" and (
        verdict := await verdict_of(db, principal.org_id, row["id"])
    ):
        event["verdict"] = verdict.pop("verdict")
        event["verdict_details"] = verdict
    return event


async def summarize_events(
    db: Database,
    principal: Principal,
    *,
    from_: str | None = "-24h",
    to: str | None = "now",
    timezone: str | None = None,
    default_timezone: str = "UTC",
    latest: int = 5,
    now: datetime | None = None,
) -> Summary:
    time_range = resolve_range(
        principal, from_, to, timezone, default_timezone=default_timezone, now=now
    )
    flt = _filter(EventQuery(), time_range)

    def _summary(
        conn: Connection,
    ) -> tuple[int, dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
        # Each count counts a change once (see EventFilter.detected_prefix); the latest
        # events name the other sources of their change.
        total = store.count_events(conn, principal.org_id, flt)
        facets = {
            name: store.facet_counts(conn, principal.org_id, name, flt, limit=20)
            for name in ("type", "subject", "source", "severity")
        }
        recent = store.select_events(conn, principal.org_id, flt, limit=latest, full=False)
        return total, facets, _rendered(recent, time_range)

    facets: dict[str, list[dict[str, Any]]]
    recent: list[dict[str, Any]]
    if time_range.before_retention:
        total, facets, recent = 0, {n: [] for n in ("type", "subject", "source", "severity")}, []
    else:
        total, facets, recent = await db.read(_summary)
    return Summary(
        total=total,
        by_type=_render_facet(facets["type"], time_range),
        by_subject=_render_facet(facets["subject"], time_range),
        by_source=_render_facet(facets["source"], time_range),
        by_severity=_render_facet(facets["severity"], time_range),
        latest=recent,
        range=time_range,
        note=range_note(
            time_range,
            empty=total == 0,
            org_has_events=total > 0 or await _has_events(db, principal),
        ),
    )


async def list_facet(
    db: Database,
    principal: Principal,
    facet: str,
    *,
    from_: str | None = None,
    to: str | None = "now",
    timezone: str | None = None,
    default_timezone: str = "UTC",
    limit: int = 100,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Each value of `facet` (type, source, subject, ...) with its count and last seen."""
    now = now or clock.now()
    start = from_ or f"-{principal.retention_days}d"
    time_range = resolve_range(
        principal, start, to, timezone, default_timezone=default_timezone, now=now
    )
    flt = _filter(EventQuery(), time_range)
    rows = await db.read_one(store.facet_counts, principal.org_id, facet, flt, limit=limit)
    return _render_facet(rows, time_range)


def _render_facet(rows: list[dict[str, Any]], time_range: TimeRange) -> list[dict[str, Any]]:
    return [
        {
            "value": r["value"],
            "count": int(r["count"]),
            "last_seen": format_time(clock.from_us(r["last_us"]), time_range.tz),
            "last_seen_relative": format_relative(clock.from_us(r["last_us"]), now=time_range.now),
        }
        for r in rows
    ]


def render_event(
    row: dict[str, Any], tz: ZoneInfo, now: datetime, *, full: bool = False
) -> dict[str, Any]:
    """An event as the API shows it: a CloudEvent as its producer sent it (its `id` is the
    producer's), with Trailmap's own id beside it (`trailmap_id`) and times in the asked zone.
    `event_id` repeats the producer's id for the clients that read it there."""
    time_us = row["time_us"]
    out: dict[str, Any] = {
        "id": row["event_id"],
        "specversion": "1.0",
        "type": row["type"],
        "source": row["source"],
        "trailmap_id": row["id"],
        "event_id": row["event_id"],
        # clock.from_us is aware UTC, so format_time's check is skipped (a page renders 25).
        "time": format_local_time(clock.from_us(time_us).astimezone(tz)),
        "time_relative": format_relative_us(clock.to_us(now) - time_us),
    }
    for name in _FULL_OPTIONAL if full else _OPTIONAL:
        value = row.get(name)
        if value is not None:
            out[name] = value
    # Guardrail violations found when the deployment was stored (JSON text in the row).
    if violations := row.get("violations"):
        out["violations"] = orjson.loads(violations) if isinstance(violations, str) else violations
    return out


_OPTIONAL = ("subject", "service", "version", "severity", "description", "original_type")
_FULL_OPTIONAL = (*_OPTIONAL, "datacontenttype", "dataschema", "data", "data_base64", "extensions")


def one_per_change(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per change, in the order given: reports of the same type, service and
    version within 15 minutes are the same change, listed once with both sources; a report
    from outside the traces is kept, being the richer one. `query_events` already leaves
    out the detected twin of an outside report (in SQL, so pages stay whole); this also
    joins two outside reports of one change, and events gathered from several pages."""
    kept: set[int] = set()
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: str(e["source"]).startswith(DETECTED_SOURCE_PREFIX)):
        if version := event.get("version"):
            key = (event["type"], event.get("service") or "", version)
            first = seen.get(key)
            if first is not None and abs(_time_us(first) - _time_us(event)) <= SAME_CHANGE_US:
                first.setdefault("also_reported_by", []).append(event["source"])
                continue
            seen[key] = event
        kept.add(id(event))
    return [event for event in events if id(event) in kept]


def _time_us(event: dict[str, Any]) -> int:
    return clock.to_us(datetime.fromisoformat(event["time"]))
