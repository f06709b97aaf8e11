"""Metric series, their points and each organization's metric settings. A point is stored once
per series and time (ON CONFLICT): a new value for the same time replaces the old one."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Dialect, Row, bindparam, delete, func, select, tuple_

from trailmap.storage.database import Connection
from trailmap.storage.dialect import (
    DriverSelect,
    compile_for_driver,
    fetch_on_driver,
    insert_for,
    upsert,
)
from trailmap.storage.tables import (
    LATENCY_BUCKETS,
    graph_minutes,
    metric_points,
    metric_series,
    metric_settings,
    organizations,
)

__all__ = [
    "add_points",
    "add_series",
    "clear_org",
    "count_series",
    "new_series",
    "points",
    "purge_before",
    "read_settings",
    "series_names",
    "span_minutes",
    "write_settings",
]

_CHUNK = 500
BUCKET_COLUMNS = tuple(f"b{i:02d}" for i in range(LATENCY_BUCKETS))


def new_series(conn: Connection, org_id: str, series_ids: Sequence[str]) -> list[str]:
    """Those of `series_ids` the organization does not have yet, in the order given."""
    known: set[str] = set()
    for start in range(0, len(series_ids), _CHUNK):
        chunk = list(series_ids[start : start + _CHUNK])
        known.update(
            conn.execute(
                select(metric_series.c.series_id).where(
                    metric_series.c.org_id == org_id, metric_series.c.series_id.in_(chunk)
                )
            ).scalars()
        )
    return [sid for sid in series_ids if sid not in known]


def count_series(conn: Connection, org_id: str, *, lock: bool = True) -> int:
    """How many series the organization keeps. On PostgreSQL the organization's row is
    locked first (unless `lock` is false, for a reader), so that two requests adding series
    count one after the other."""
    if lock and conn.dialect.name == "postgresql":
        conn.execute(
            select(organizations.c.id).where(organizations.c.id == org_id).with_for_update()
        )
    stmt = select(func.count()).select_from(metric_series).where(metric_series.c.org_id == org_id)
    return int(conn.execute(stmt).scalar_one())


def add_series(conn: Connection, org_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Rows: series_id, name, service, environment, labels, created_us; known ones are kept."""
    if not rows:
        return
    stmt = insert_for(conn, metric_series).on_conflict_do_nothing(
        index_elements=["org_id", "series_id"]
    )
    for start in range(0, len(rows), _CHUNK):
        conn.execute(stmt, [{**row, "org_id": org_id} for row in rows[start : start + _CHUNK]])


def add_points(conn: Connection, org_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Rows: series_id, time_us, value. A point already there takes the new value."""
    if not rows:
        return
    stmt = insert_for(conn, metric_points)
    stmt = stmt.on_conflict_do_update(
        index_elements=["org_id", "series_id", "time_us"], set_={"value": stmt.excluded.value}
    )
    for start in range(0, len(rows), _CHUNK):
        conn.execute(stmt, [{**row, "org_id": org_id} for row in rows[start : start + _CHUNK]])


def points(
    conn: Connection,
    org_id: str,
    *,
    service: str,
    environment: str,
    names: Sequence[str],
    from_us: int,
    to_us: int,
) -> list[Any]:
    """(name, kind, series_id, time_us, value) of every series of these names, in
    [from_us, to_us), by name, series and time.

    A window holds thousands of points, and SQLAlchemy's execution and row objects cost
    more than the database takes to send them: the statement, compiled once per dialect and
    number of names, runs on the driver's cursor, and through SQLAlchemy only to report a
    driver error its way. Run it on its own (`Database.read`), never inside a transaction.
    """
    params = {
        "org_id": org_id,
        "service": service,
        "environment": environment,
        "from_us": from_us,
        "to_us": to_us,
        **{f"name_{i}": name for i, name in enumerate(names)},
    }
    rows = fetch_on_driver(conn, _points_sql(conn.dialect, len(names)), params)
    return rows if rows is not None else list(conn.execute(_points_statement(len(names)), params))


def _points_statement(count: int) -> Any:
    s, p = metric_series.c, metric_points.c
    return (
        select(s.name, s.kind, s.series_id, p.time_us, p.value)
        .join(metric_points, (p.org_id == s.org_id) & (p.series_id == s.series_id))
        .where(
            s.org_id == bindparam("org_id"),
            s.service == bindparam("service"),
            s.environment == bindparam("environment"),
            s.name.in_([bindparam(f"name_{i}") for i in range(count)]),
            p.time_us >= bindparam("from_us"),
            p.time_us < bindparam("to_us"),
        )
        .order_by(s.name, s.series_id, p.time_us)
    )


@lru_cache(maxsize=64)
def _points_sql(dialect: Dialect, count: int) -> DriverSelect:
    return compile_for_driver(_points_statement(count), dialect)


def span_minutes(
    conn: Connection, org_id: str, subject_id: str, *, from_us: int, to_us: int
) -> list[Row[Any]]:
    """The graph's per-minute rows (calls, errors, duration, buckets) of one node or edge."""
    m = graph_minutes.c
    stmt = (
        select(m.minute_us, m.calls, m.errors, m.duration_ms, *(m[c] for c in BUCKET_COLUMNS))
        .where(
            m.org_id == org_id,
            m.subject_id == subject_id,
            m.minute_us >= from_us,
            m.minute_us < to_us,
        )
        .order_by(m.minute_us)
    )
    return list(conn.execute(stmt))


def series_names(conn: Connection, org_id: str, *, service: str, environment: str) -> list[str]:
    """The metric names pushed for a service and environment."""
    s = metric_series.c
    stmt = (
        select(s.name)
        .where(s.org_id == org_id, s.service == service, s.environment == environment)
        .distinct()
        .order_by(s.name)
    )
    return [row.name for row in conn.execute(stmt)]


def read_settings(conn: Connection, org_id: str) -> Any:
    c = metric_settings.c
    return conn.execute(
        select(c.settings, c.auth_header_encrypted, c.updated_us).where(c.org_id == org_id)
    ).first()


def write_settings(
    conn: Connection,
    org_id: str,
    *,
    settings: dict[str, Any],
    auth_header_encrypted: str | None,
    updated_us: int,
) -> None:
    conn.execute(
        upsert(
            conn,
            metric_settings,
            {
                "org_id": org_id,
                "settings": settings,
                "auth_header_encrypted": auth_header_encrypted,
                "updated_us": updated_us,
            },
            ["org_id"],
        )
    )


def purge_before(conn: Connection, org_id: str, cutoff_us: int, *, chunk: int = 5000) -> int:
    """Delete up to `chunk` metric points older than the cutoff; the caller repeats until 0."""
    p = metric_points.c
    doomed_points = (
        select(p.series_id, p.time_us).where(p.org_id == org_id, p.time_us < cutoff_us).limit(chunk)
    )
    removed = conn.execute(
        delete(metric_points).where(
            p.org_id == org_id, tuple_(p.series_id, p.time_us).in_(doomed_points)
        )
    ).rowcount
    return int(removed or 0)


def clear_org(conn: Connection, org_id: str) -> int:
    """Delete the organization's metric series and points (its metric settings stay)."""
    removed = conn.execute(delete(metric_points).where(metric_points.c.org_id == org_id)).rowcount
    removed += conn.execute(delete(metric_series).where(metric_series.c.org_id == org_id)).rowcount
    return int(removed or 0)
