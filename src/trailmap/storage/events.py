"""Queries for the change timeline: insert idempotently, page newest first, count, purge."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect

from trailmap.storage.dialect import DriverSelect, compile_for_driver, fetch_on_driver
from trailmap.storage.tables import events

__all__ = [
    "TWIN_COLUMN",
    "EventFilter",
    "clear_org",
    "count_events",
    "distinct_values",
    "facet_counts",
    "find_by_producer_id",
    "find_existing",
    "get_event",
    "insert_events",
    "producer_id_statement",
    "purge_before",
    "select_events",
    "values_like",
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
    # One entry per change: an event whose source starts with `detected_prefix` (a deployment
    # the graph detected in traces) is left out when an event from elsewhere that passes the
    # same filters has its type, service and version within `same_change_us` of it. The
    # twin's own time decides, not the range: each change is counted in one range only.
    detected_prefix: str | None = None
    same_change_us: int = 0


def insert_events(conn: Connection, org_id: str, rows: list[Row]) -> set[tuple[str, str]]:
    """Insert rows, skipping any whose (source, event_id) exists; return the keys inserted."""
    if not rows:
        return set()
    if conn.dialect.name == "postgresql":
        return _insert_events_postgres(conn, org_id, rows)
    return _insert_events_sqlite(conn, org_id, rows)


@cache
def _columns() -> tuple[tuple[str, bool], ...]:
    """(name, is JSON) of every events column but org_id, in table order."""
    return tuple((c.name, isinstance(c.type, JSON)) for c in events.columns if c.name != "org_id")


def _json_text(value: Any) -> str:
    # As the engines' JSON type writes it: orjson (Database's json_serializer), and None as the
    # JSON null rather than SQL NULL (SQLAlchemy's JSON none_as_null=False).
    return orjson.dumps(value).decode()


# On SQLite a batch is first tried as a few multi-row INSERTs (500 rows at most), with no
# RETURNING, issued straight to the driver. Two costs are avoided. SQLAlchemy's form spends
# longer binding its 19 parameters per row, in Python under the GIL, than SQLite spends
# storing them. And the driver releases the GIL around every step of a statement: a statement
# per row (executemany), or a row of RETURNING each, means a re-acquisition per row, each of
# which can wait out the interpreter's 5 ms switch interval while the event loop validates
# the next request (the "convoy effect"); one statement per 500 rows waits once.
# The row count says whether every row went in (the usual case). When some did not, that
# attempt is rolled back to its savepoint and the batch goes in with RETURNING, which names
# exactly the rows stored.
# Rows per statement, largest first; a batch is cut greedily into these sizes, so that only
# five statement texts are ever built and prepared (the driver caches prepared statements per
# connection, and a 500-row one is large), whatever the sizes of the batches. 500 rows of 20
# parameters are 10,000, under SQLite's limit of 32,766.
_SQLITE_STATEMENT_ROWS = (500, 100, 20, 5, 1)


def _sqlite_chunks(rows: list[Row]) -> Iterator[list[Row]]:
    start = 0
    for size in _SQLITE_STATEMENT_ROWS:
        while len(rows) - start >= size:
            yield rows[start : start + size]
            start += size


@cache
def _sqlite_insert_sql(row_count: int) -> str:
    names = ", ".join(name for name, _ in _columns())
    row = "(" + ", ".join("?" for _ in range(len(_columns()) + 1)) + ")"
    # Only column names from the table definition go into the text; values are bound.
    return (
        f"INSERT INTO events (org_id, {names}) VALUES {', '.join([row] * row_count)} "  # noqa: S608
        "ON CONFLICT (org_id, source, event_id) DO NOTHING"
    )


def _insert_events_sqlite(conn: Connection, org_id: str, rows: list[Row]) -> set[tuple[str, str]]:
    columns = _columns()
    with conn.begin_nested() as attempt:
        stored = 0
        for chunk in _sqlite_chunks(rows):
            params = tuple(
                value
                for row in chunk
                for value in (
                    org_id,
                    *[_json_text(row[name]) if is_json else row[name] for name, is_json in columns],
                )
            )
            stored += conn.exec_driver_sql(_sqlite_insert_sql(len(chunk)), params).rowcount
        if stored == len(rows):
            return {(row["source"], row["event_id"]) for row in rows}
        attempt.rollback()
    stmt = (
        sqlite_insert(events)
        .on_conflict_do_nothing(index_elements=["org_id", "source", "event_id"])
        .returning(events.c.source, events.c.event_id)
    )
    return {(r[0], r[1]) for r in conn.execute(stmt, [{**row, "org_id": org_id} for row in rows])}


# On PostgreSQL a batch is one INSERT ... SELECT FROM unnest(...) with one array parameter per
# column. The multi-row VALUES statement SQLAlchemy would build carries 19 parameters per row,
# and psycopg re-parses the text of so long a statement on every execution (it caches only
# short ones): at 500 rows that parsing took longer than the insert itself. This statement is
# short, so psycopg caches it and, after a few uses, prepares it on the server. The arrays
# travel in binary (%(name)b): psycopg writes the text form of an array in Python, escaping
# every element with a regular expression, several times slower.
@cache
def _postgres_insert_sql() -> str:
    columns = [c for c in events.columns if c.name != "org_id"]
    names = ", ".join(c.name for c in columns)
    # Arrays of unbounded text, not varchar(n): an explicit cast to varchar(n) would truncate
    # silently, where assigning to the column refuses a value that is too long, as before.
    arrays = ", ".join(f"%({c.name})b::{_postgres_array_type(c.type)}" for c in columns)
    return (
        f"INSERT INTO events (org_id, {names}) "  # noqa: S608 - column names from the table
        f"SELECT CAST(%(org_id)s AS TEXT), * FROM unnest({arrays}) "
        "ON CONFLICT (org_id, source, event_id) DO NOTHING "
        "RETURNING source, event_id"
    )


def _postgres_array_type(column_type: Any) -> str:
    if isinstance(column_type, JSON):
        return "text[]::jsonb[]"
    if isinstance(column_type, Integer):  # BigInteger too
        return "bigint[]"
    return "text[]"


def _insert_events_postgres(conn: Connection, org_id: str, rows: list[Row]) -> set[tuple[str, str]]:
    params: dict[str, Any] = {"org_id": org_id}
    for name, is_json in _columns():
        if is_json:
            params[name] = [_json_text(row[name]) for row in rows]
        else:
            params[name] = [row[name] for row in rows]
    result = conn.exec_driver_sql(_postgres_insert_sql(), params)
    return {(r[0], r[1]) for r in result}


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


# (parameter name and column, EventFilter attribute) of the filters that take a list of values.
_LIST_FILTERS = (
    ("type", "types"),
    ("source", "sources"),
    ("subject", "subjects"),
    ("severity", "severities"),
    ("service", "services"),
)


@dataclass(frozen=True, slots=True)
class _Shape:
    """What decides a filter's SQL text; the values travel as bound parameters."""

    counts: tuple[int, ...]  # values per list filter, in _LIST_FILTERS order
    words: int
    one_per_change: bool = False


def _shape_and_params(org_id: str, flt: EventFilter) -> tuple[_Shape, dict[str, Any]]:
    params: dict[str, Any] = {"org_id": org_id, "from_us": flt.from_us, "to_us": flt.to_us}
    counts: list[int] = []
    for name, attribute in _LIST_FILTERS:
        values: Sequence[str] = getattr(flt, attribute)
        counts.append(len(values))
        if len(values) == 1:
            params[name] = values[0]
        elif values:
            params[name] = list(values)
    for i, word in enumerate(flt.words):
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params[f"word_{i}"] = f"%{escaped}%"
    merge = flt.detected_prefix is not None
    if merge:
        params["detected"] = flt.detected_prefix
        params["detected_length"] = len(flt.detected_prefix or "")
        params["same_change_us"] = flt.same_change_us
    return _Shape(tuple(counts), len(flt.words), merge), params


def _where(shape: _Shape) -> list[Any]:
    clauses: list[Any] = [
        events.c.org_id == bindparam("org_id"),
        events.c.time_us >= bindparam("from_us"),
        events.c.time_us <= bindparam("to_us"),
        *_value_filters(shape, events),
    ]
    if shape.one_per_change:
        clauses.append(_not_a_detected_twin(shape))
    return clauses


def _value_filters(shape: _Shape, table: Any) -> list[Any]:
    """The list filters and search words of `shape` on `table` (events, or an alias of it)."""
    clauses: list[Any] = []
    for (name, _attribute), count in zip(_LIST_FILTERS, shape.counts, strict=True):
        column = table.c[name]
        if count == 1:
            clauses.append(column == bindparam(name))
        elif count:
            clauses.append(column.in_(bindparam(name, expanding=True)))
    clauses.extend(
        table.c.search_text.like(bindparam(f"word_{i}"), escape="\\") for i in range(shape.words)
    )
    return clauses


def _detected(table: Any) -> Any:
    return func.substr(table.c.source, 1, bindparam("detected_length")) == bindparam("detected")


def _same_type(twin: Any) -> Any:
    # `type || ''` keeps SQLite off the (org_id, type, time_us) index, which it would pick as
    # readily as the (org_id, service, time_us) one: most changes are deployments, so around
    # a time there are far more of one type than of one service.
    return twin.c.type.concat("") == events.c.type


def _not_a_detected_twin(shape: _Shape) -> Any:
    """True unless the row is a detected event whose change another source reported too.

    Only a detected row pays for the subquery (the OR stops at its first term otherwise), and
    the subquery is a range of the (org_id, service, time_us) index.
    """
    twin = events.alias("twin")
    reported = exists().where(
        twin.c.org_id == bindparam("org_id"),
        twin.c.service == events.c.service,
        twin.c.time_us >= events.c.time_us - bindparam("same_change_us"),
        twin.c.time_us <= events.c.time_us + bindparam("same_change_us"),
        _same_type(twin),
        twin.c.version == events.c.version,
        ~_detected(twin),
        *_value_filters(shape, twin),
    )
    return or_(~_detected(events), ~reported)


# The column that names, beside an event from outside the traces, the detected report of
# the same change (its source, otel://SERVICE, one per service); NULL for the others.
TWIN_COLUMN = "detected_twin"


def _detected_twin() -> Any:
    """Evaluated for the rows a page returns only, each a seek of the (org_id, service,
    time_us) index."""
    twin = events.alias("twin_source")
    source = (
        select(func.min(twin.c.source))
        .where(
            twin.c.org_id == bindparam("org_id"),
            twin.c.service == events.c.service,
            twin.c.time_us >= events.c.time_us - bindparam("same_change_us"),
            twin.c.time_us <= events.c.time_us + bindparam("same_change_us"),
            _same_type(twin),
            twin.c.version == events.c.version,
            _detected(twin),
        )
        .scalar_subquery()
    )
    return case((_detected(events), None), else_=source).label(TWIN_COLUMN)


# What a page of events shows (render_event without `full`): no data, extensions or search
# text, whose JSON columns cost a decode per row and whose bytes cost a copy.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "id",
    "type",
    "source",
    "event_id",
    "time_us",
    "subject",
    "service",
    "version",
    "severity",
    "description",
    "original_type",
    "violations",
)


# A page of events is the query every timeline view runs. Its statement is built once per
# shape and kept: building the clauses and their cache key anew cost more than running the
# indexed query itself on SQLite.
@lru_cache(maxsize=256)
def _select_statement(shape: _Shape, *, paged: bool, limit: int, full: bool = True) -> Select[Any]:
    clauses = _where(shape)
    if paged:
        clauses.append(
            or_(
                events.c.time_us < bindparam("before_us"),
                and_(
                    events.c.time_us == bindparam("before_us"),
                    events.c.id < bindparam("before_id"),
                ),
            )
        )
    columns: list[Any] = [events] if full else [events.c[name] for name in SUMMARY_COLUMNS]
    if shape.one_per_change:
        columns.append(_detected_twin())
    return (
        select(*columns)
        .where(*clauses)
        .order_by(events.c.time_us.desc(), events.c.id.desc())
        .limit(limit)
    )


def select_events(
    conn: Connection,
    org_id: str,
    flt: EventFilter,
    *,
    limit: int,
    before: tuple[int, str] | None = None,
    full: bool = True,
    direct: bool = False,
) -> list[Row]:
    """Newest first; `before` is the (time_us, id) of the last event of the previous page.

    Without `full`, only SUMMARY_COLUMNS are read. With `direct` as well, the statement goes
    straight to the driver (`fetch_on_driver`); only for a statement run on its own
    (`Database.read_one` or `read_point`), never inside a transaction, where a failed
    statement would leave the transaction aborted for the retry through SQLAlchemy.
    """
    shape, params = _shape_and_params(org_id, flt)
    if before is not None:
        params["before_us"], params["before_id"] = before
    paged = before is not None
    if direct and not full and all(count <= 1 for count in shape.counts):
        page = _driver_sql(conn.dialect, shape, paged=paged, limit=limit)
        rows = fetch_on_driver(conn, page, params)
        if rows is not None:
            names = (*SUMMARY_COLUMNS, TWIN_COLUMN) if shape.one_per_change else SUMMARY_COLUMNS
            return [dict(zip(names, row, strict=True)) for row in rows]
    result = conn.execute(_select_statement(shape, paged=paged, limit=limit, full=full), params)
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result.fetchall()]


@lru_cache(maxsize=256)
def _driver_sql(dialect: Dialect, shape: _Shape, *, paged: bool, limit: int) -> DriverSelect:
    """A page statement of SUMMARY_COLUMNS compiled once: SQLAlchemy's execution and result
    machinery cost more per page than SQLite takes to answer it."""
    stmt = _select_statement(shape, paged=paged, limit=limit, full=False)
    return compile_for_driver(stmt, dialect)


def get_event(conn: Connection, org_id: str, event_id: str) -> Row | None:
    row = conn.execute(
        select(events).where(events.c.org_id == org_id, events.c.id == event_id)
    ).first()
    return dict(row._mapping) if row else None


def find_by_producer_id(
    conn: Connection, org_id: str, event_id: str, *, source: str | None = None, limit: int = 20
) -> list[Row]:
    """The events sent with the CloudEvents id `event_id` (from `source`, when given), by
    source; an index seek either way: (org_id, source, event_id) or (org_id, event_id)."""
    stmt = producer_id_statement(org_id, event_id, source=source, limit=limit)
    # Sorted here: an ORDER BY source would lead the planner to the unique index, whose order
    # it gives, walking the whole organization's part of it to find the few rows.
    return sorted((dict(r._mapping) for r in conn.execute(stmt)), key=lambda row: row["source"])


def producer_id_statement(
    org_id: str, event_id: str, *, source: str | None = None, limit: int = 20
) -> Select[Any]:
    """The SELECT of `find_by_producer_id` (apart, so that a test can see its plan)."""
    clauses = [events.c.org_id == org_id, events.c.event_id == event_id]
    if source is not None:
        clauses.append(events.c.source == source)
    return select(events).where(*clauses).limit(limit)


def count_events(conn: Connection, org_id: str, flt: EventFilter) -> int:
    shape, params = _shape_and_params(org_id, flt)
    stmt = select(func.count()).select_from(events).where(*_where(shape))
    return int(conn.execute(stmt, params).scalar_one())


def facet_counts(
    conn: Connection, org_id: str, facet: str, flt: EventFilter, *, limit: int = 50
) -> list[Row]:
    """Each value of one attribute with its count and when it was last seen, most frequent first."""
    column = FACETS[facet]
    count = func.count().label("count")
    shape, params = _shape_and_params(org_id, flt)
    stmt = (
        select(column.label("value"), count, func.max(events.c.time_us).label("last_us"))
        .where(*_where(shape), column.is_not(None))
        .group_by(column)
        .order_by(literal_column("count").desc(), column)
        .limit(limit)
    )
    return [dict(r._mapping) for r in conn.execute(stmt, params)]


def distinct_values(conn: Connection, org_id: str, facet: str, *, limit: int) -> list[str]:
    """The distinct values of a facet (type, source, subject, service), in index order, at most
    `limit`: one seek of the (org_id, facet, ...) index per value (a loose index scan, which
    neither SQLite nor PostgreSQL does by itself for SELECT DISTINCT), however many events."""
    column = FACETS[facet].name
    # Only a column name from the table definition goes into the text; values are bound.
    sql = text(
        f"WITH RECURSIVE found(value, n) AS ("  # noqa: S608
        f"  SELECT (SELECT {column} FROM events WHERE org_id = :org_id AND {column} IS NOT NULL"
        f"          ORDER BY {column} LIMIT 1), 1"
        f"  UNION ALL"
        f"  SELECT (SELECT {column} FROM events WHERE org_id = :org_id AND {column} > found.value"
        f"          ORDER BY {column} LIMIT 1), n + 1"
        f"  FROM found WHERE found.value IS NOT NULL AND n < :limit"
        f") SELECT value FROM found WHERE value IS NOT NULL"
    )
    return [r[0] for r in conn.execute(sql, {"org_id": org_id, "limit": limit})]


def values_like(
    conn: Connection, org_id: str, facet: str, values: Sequence[str], *, limit: int
) -> list[str]:
    """The stored values of a facet equal to one of `values` but for case (lower() on both
    sides); a scan of the facet's index, for a facet with too many values to list."""
    column = FACETS[facet]
    stmt = (
        select(column)
        .where(
            events.c.org_id == org_id,
            func.lower(column).in_([v.lower() for v in values]),
        )
        .group_by(column)
        .limit(limit)
    )
    return [r[0] for r in conn.execute(stmt)]


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


def clear_org(conn: Connection, org_id: str) -> int:
    """Delete every event of the organization."""
    result = conn.execute(delete(events).where(events.c.org_id == org_id))
    return int(result.rowcount or 0)
