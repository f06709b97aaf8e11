"""Queries for the change timeline: insert idempotently, page newest first, count, purge."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, func, literal_column, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from trailmap.storage.tables import events, organizations

__all__ = [
    "EventFilter",
    "count_events",
    "facet_counts",
    "find_existing",
    "get_event",
    "insert_events",
    "oldest_event_us",
    "org_retention_rows",
    "purge_before",
    "select_events",
]

Row = dict[str, Any]

FACETS = {
    "type": events.c.type,
    "source": events.c.source,
    "subject": events.c.subject,
    "severity": events.c.severity,
    "service": events.c.service,
}


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What a query asks for; every field narrows, none widens past the organization."""

    from_us: int
    to_us: int
    types: Sequence[str] = ()
    sources: Sequence[str] = ()
    subjects: Sequence[str] = ()
    severities: Sequence[str] = ()
    services: Sequence[str] = ()
    # Lower-cased words that must all appear in the event's searchable text.
    words: Sequence[str] = ()


def insert_events(conn: Connection, org_id: str, rows: list[Row]) -> set[tuple[str, str]]:
    """Insert rows, skipping any whose (source, event_id) exists; return the keys inserted."""
    if not rows:
        return set()
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = (
        dialect_insert(events)
        .on_conflict_do_nothing(index_elements=["org_id", "source", "event_id"])
        .returning(events.c.source, events.c.event_id)
    )
    params = [{**row, "org_id": org_id} for row in rows]
    return {(r[0], r[1]) for r in conn.execute(stmt, params)}


def find_existing(
    conn: Connection, org_id: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """Trailmap ids of the events stored under these (source, event_id) keys."""
    found: dict[tuple[str, str], str] = {}
    for start in range(0, len(keys), 400):
        chunk = list(keys[start : start + 400])
        stmt = select(events.c.source, events.c.event_id, events.c.id).where(
            events.c.org_id == org_id,
            tuple_(events.c.source, events.c.event_id).in_(chunk),
        )
        found.update({(r.source, r.event_id): r.id for r in conn.execute(stmt)})
    return found


def _where(org_id: str, flt: EventFilter) -> list[Any]:
    clauses: list[Any] = [
        events.c.org_id == org_id,
        events.c.time_us >= flt.from_us,
        events.c.time_us <= flt.to_us,
    ]
    for column, values in (
        (events.c.type, flt.types),
        (events.c.source, flt.sources),
        (events.c.subject, flt.subjects),
        (events.c.severity, flt.severities),
        (events.c.service, flt.services),
    ):
        if len(values) == 1:
            clauses.append(column == values[0])
        elif values:
            clauses.append(column.in_(list(values)))
    for word in flt.words:
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(events.c.search_text.like(f"%{escaped}%", escape="\\"))
    return clauses


def select_events(
    conn: Connection,
    org_id: str,
    flt: EventFilter,
    *,
    limit: int,
    before: tuple[int, str] | None = None,
) -> list[Row]:
    """Newest first; `before` is the (time_us, id) of the last event of the previous page."""
    clauses = _where(org_id, flt)
    if before is not None:
        time_us, event_id = before
        clauses.append(
            or_(
                events.c.time_us < time_us,
                and_(events.c.time_us == time_us, events.c.id < event_id),
            )
        )
    stmt = (
        select(events)
        .where(*clauses)
        .order_by(events.c.time_us.desc(), events.c.id.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def get_event(conn: Connection, org_id: str, event_id: str) -> Row | None:
    row = conn.execute(
        select(events).where(events.c.org_id == org_id, events.c.id == event_id)
    ).first()
    return dict(row._mapping) if row else None


def count_events(conn: Connection, org_id: str, flt: EventFilter) -> int:
    stmt = select(func.count()).select_from(events).where(*_where(org_id, flt))
    return int(conn.execute(stmt).scalar_one())


def facet_counts(
    conn: Connection, org_id: str, facet: str, flt: EventFilter, *, limit: int = 50
) -> list[Row]:
    """Each value of one attribute with its count and when it was last seen, most frequent first."""
    column = FACETS[facet]
    count = func.count().label("count")
    stmt = (
        select(column.label("value"), count, func.max(events.c.time_us).label("last_us"))
        .where(*_where(org_id, flt), column.is_not(None))
        .group_by(column)
        .order_by(literal_column("count").desc(), column)
        .limit(limit)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def oldest_event_us(conn: Connection, org_id: str) -> int | None:
    stmt = select(func.min(events.c.time_us)).where(events.c.org_id == org_id)
    value = conn.execute(stmt).scalar_one_or_none()
    return None if value is None else int(value)


def org_retention_rows(conn: Connection) -> list[Row]:
    stmt = select(organizations.c.id, organizations.c.plan, organizations.c.retention_days)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def purge_before(conn: Connection, org_id: str, cutoff_us: int, *, chunk: int = 5000) -> int:
    """Delete up to `chunk` events older than the cutoff; the caller repeats until 0."""
    doomed = (
        select(events.c.id)
        .where(events.c.org_id == org_id, events.c.time_us < cutoff_us)
        .limit(chunk)
        .scalar_subquery()
    )
    result = conn.execute(delete(events).where(events.c.org_id == org_id, events.c.id.in_(doomed)))
    return int(result.rowcount or 0)
