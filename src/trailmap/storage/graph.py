"""The graph's queries: nodes, edges, per-minute statistics, versions and pending span halves,
written so that any number of app nodes can record the same rows at once (docs/internals.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import Row, bindparam, case, delete, func, or_, select, tuple_, update

from trailmap.storage.database import Connection
from trailmap.storage.dialect import insert_for
from trailmap.storage.tables import (
    LATENCY_BUCKETS,
    graph_declarations,
    graph_declared_sources,
    graph_edges,
    graph_metric_cursors,
    graph_minutes,
    graph_nodes,
    graph_versions,
    pending_spans,
    service_versions,
)

__all__ = [
    "BUCKET_COLUMNS",
    "SEEN_RESOLUTION_US",
    "CursorRow",
    "MinuteRow",
    "add_minutes",
    "add_pending",
    "bump_version",
    "claim_expired",
    "claim_pending",
    "clear_org",
    "count_pending",
    "cursors_for_update",
    "edge_rows",
    "find_pending",
    "graph_version",
    "minute_totals",
    "new_versions",
    "newest_minute",
    "node_rows",
    "purge_before",
    "purge_minutes",
    "put_cursors",
    "traffic",
    "upsert_edges",
    "upsert_nodes",
]

BUCKET_COLUMNS = tuple(f"b{i:02d}" for i in range(LATENCY_BUCKETS))
# last_seen is kept to the minute: a row is rewritten only when it moves further than this,
# and an app node that remembers what it wrote (graph/learn/record.py) skips a row for as long
# again; together, never more than a minute behind.
SEEN_RESOLUTION_US = 30_000_000
_CHUNK = 500
# (subject id, minute, calls, errors, summed duration in ms, latency bucket counts)
MinuteRow = tuple[str, int, int, int, float, Sequence[int]]
_MINUTE_COLUMNS = ("subject_id", "minute_us", "calls", "errors", "duration_ms", *BUCKET_COLUMNS)


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _upsert_seen(conn: Connection, table: Any, org_id: str, rows: list[dict[str, Any]]) -> int:
    """Insert the rows that are new (returning how many), and move first/last seen of the rest."""
    if not rows:
        return 0
    rows = sorted(rows, key=lambda row: str(row["id"]))
    insert, moved = _statement(conn, table.name, _seen_statements)
    # One statement, many parameter sets: built once, compiled once and cached, sent as
    # executemany (multi-row VALUES built per call cost more to compile than to run).
    created = set(conn.execute(insert, [_columns_of(row, org_id) for row in rows]).scalars())
    older = [row for row in rows if row["id"] not in created]
    if older:
        params = [
            {
                "p_org": org_id,
                "p_id": row["id"],
                "p_first": row["first_seen_us"],
                "p_last": row["last_seen_us"],
                "p_stale": row["last_seen_us"] - SEEN_RESOLUTION_US,
                "p_force": bool(row.get("force") and row.get("attributes")),
                "p_refresh": bool(row.get("refresh") and row.get("attributes")),
                "p_attributes": row.get("attributes") or {},
            }
            for row in older
        ]
        conn.execute(moved, params)
    return len(created)


def _statement(conn: Connection, name: str, build: Callable[[Connection, str], Any]) -> Any:
    """A statement built once per dialect: building one (above all its ON CONFLICT clause)
    costs more than compiling it, and compiled forms are cached by what was built."""
    key = (conn.dialect.name, name)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = build(conn, name)
    return stmt


_STATEMENTS: dict[tuple[str, str], Any] = {}


def _seen_statements(conn: Connection, name: str) -> tuple[Any, Any]:
    table = graph_nodes if name == graph_nodes.name else graph_edges
    insert = (
        insert_for(conn, table)
        .on_conflict_do_nothing(index_elements=["org_id", "id"])
        .returning(table.c.id)
    )
    c = table.c
    moved = (
        update(table)
        .where(
            c.org_id == bindparam("p_org"),
            c.id == bindparam("p_id"),
            or_(
                c.last_seen_us < bindparam("p_stale"),
                c.first_seen_us > bindparam("p_first"),
                bindparam("p_force"),
            ),
        )
        .values(
            first_seen_us=case(
                (c.first_seen_us > bindparam("p_first"), bindparam("p_first")),
                else_=c.first_seen_us,
            ),
            last_seen_us=case(
                (c.last_seen_us < bindparam("p_last"), bindparam("p_last")),
                else_=c.last_seen_us,
            ),
            attributes=case(
                (
                    or_(bindparam("p_force"), bindparam("p_refresh")),
                    bindparam("p_attributes", type_=c.attributes.type),
                ),
                else_=c.attributes,
            ),
        )
    )
    return insert, moved


def _columns_of(row: dict[str, Any], org_id: str) -> dict[str, Any]:
    # `force` (rewrite the attributes of an existing row) and `refresh` (rewrite them when
    # the row is rewritten anyway) are instructions, not columns.
    return {**{k: v for k, v in row.items() if k not in _INSTRUCTIONS}, "org_id": org_id}


_INSTRUCTIONS = frozenset({"force", "refresh"})


def upsert_nodes(conn: Connection, org_id: str, rows: list[dict[str, Any]]) -> int:
    """Rows: id, kind, name, environment, attributes, sources, first/last_seen_us, and
    optionally force=True to rewrite an existing node's attributes, or refresh=True to
    rewrite them when its first or last seen time is rewritten. Returns how many are new."""
    return _upsert_seen(conn, graph_nodes, org_id, rows)


def upsert_edges(conn: Connection, org_id: str, rows: list[dict[str, Any]]) -> int:
    """Rows: id, source_id, target_id, kind, attributes, sources, first/last_seen_us."""
    return _upsert_seen(conn, graph_edges, org_id, rows)


def add_minutes(conn: Connection, org_id: str, rows: Sequence[MinuteRow]) -> None:
    """Rows: (subject id, minute, calls, errors, summed duration, b00..b31); added to what
    is there."""
    if not rows:
        return
    _execute_many(
        conn,
        _statement(conn, graph_minutes.name, _minutes_sql),
        [(org_id, *row[:5], *row[5]) for row in sorted(rows, key=lambda row: (row[0], row[1]))],
    )


def _minutes_sql(conn: Connection, _name: str) -> _DriverSql:
    stmt = insert_for(conn, graph_minutes)
    added = {
        name: graph_minutes.c[name] + stmt.excluded[name]
        for name in ("calls", "errors", "duration_ms", *BUCKET_COLUMNS)
    }
    upsert = stmt.on_conflict_do_update(
        index_elements=["org_id", "subject_id", "minute_us"], set_=added
    )
    return _driver_sql(conn, upsert, ("org_id", *_MINUTE_COLUMNS))


# An INSERT's SQL as the driver takes it, and the names of its parameters in order (None
# when the driver takes named parameters).
_DriverSql = tuple[str, tuple[str, ...], bool]


def _driver_sql(conn: Connection, stmt: Any, columns: tuple[str, ...]) -> _DriverSql:
    """Compile an INSERT once for the driver. The hottest writes (a few dozen rows of many
    values per OTLP request, and the span halves an app node stores) go to the driver as
    they are: SQLAlchemy's handling of each value cost more than the database's work (five
    times more on SQLite)."""
    compiled = stmt.compile(dialect=conn.dialect, column_keys=list(columns))
    order = compiled.positiontup
    if order is not None and tuple(order) != columns:
        raise RuntimeError(f"unexpected parameter order {order} for {columns}")
    return str(compiled), columns, order is not None


def _execute_many(conn: Connection, sql: _DriverSql, rows: list[tuple[Any, ...]]) -> None:
    """Rows as tuples in the statement's column order; JSON values already as text."""
    text, columns, positional = sql
    params: list[Any] = (
        rows if positional else [dict(zip(columns, row, strict=True)) for row in rows]
    )
    conn.exec_driver_sql(text, params)


def new_versions(
    conn: Connection, org_id: str, seen: list[tuple[str, str, int]]
) -> list[tuple[str, str, int, bool]]:
    """Record (node id, version, first seen); return the new ones, each with whether the
    service had another version before (a deployment) or this is the first one known."""
    if not seen:
        return []
    stmt = (
        insert_for(conn, service_versions)
        .values(
            [
                {"org_id": org_id, "node_id": node, "version": version, "first_seen_us": first}
                for node, version, first in sorted(seen)
            ]
        )
        .on_conflict_do_nothing(index_elements=["org_id", "node_id", "version"])
        .returning(service_versions.c.node_id, service_versions.c.version)
    )
    created = {(row.node_id, row.version) for row in conn.execute(stmt)}
    if not created:
        return []
    counts: dict[str, int] = dict(
        conn.execute(
            select(service_versions.c.node_id, func.count())
            .where(
                service_versions.c.org_id == org_id,
                service_versions.c.node_id.in_({node for node, _ in created}),
            )
            .group_by(service_versions.c.node_id)
        ).all()
    )
    fresh_per_node: dict[str, int] = {}
    for node, _ in created:
        fresh_per_node[node] = fresh_per_node.get(node, 0) + 1
    out = []
    for node, version, first in seen:
        if (node, version) in created:
            # The first version ever recorded for a service is when Trailmap began to watch
            # it, not a deployment; when several arrive at once, all but the oldest are.
            earlier = counts.get(node, 0) > fresh_per_node[node] or any(
                other_node == node and other_first < first
                for other_node, _, other_first in seen
                if (other_node, _) in created
            )
            out.append((node, version, first, earlier))
    return out


def bump_version(conn: Connection, org_id: str, now_us: int) -> None:
    stmt = insert_for(conn, graph_versions).values(org_id=org_id, version=1, changed_us=now_us)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["org_id"],
            set_={"version": graph_versions.c.version + 1, "changed_us": now_us},
        )
    )


def graph_version(conn: Connection, org_id: str) -> int:
    value = conn.execute(
        select(graph_versions.c.version).where(graph_versions.c.org_id == org_id)
    ).scalar()
    return int(value or 0)


def claim_pending(
    conn: Connection, org_id: str, keys: Iterable[str], side: str
) -> list[tuple[str, dict[str, Any]]]:
    """Take (delete and return) the waiting halves of `side` with these pair keys."""
    found: list[tuple[str, dict[str, Any]]] = []
    for chunk in _chunks(list(keys)):
        stmt = (
            delete(pending_spans)
            .where(
                pending_spans.c.org_id == org_id,
                pending_spans.c.side == side,
                pending_spans.c.pair_key.in_(chunk),
            )
            .returning(pending_spans.c.pair_key, pending_spans.c.payload)
        )
        found.extend((row.pair_key, row.payload) for row in conn.execute(stmt))
    return found


def find_pending(
    conn: Connection, org_id: str, keys: Iterable[str], side: str
) -> list[tuple[str, dict[str, Any]]]:
    """The waiting halves of `side` with these pair keys, left in place (producers, whose
    messages may have more consumers to come)."""
    found: list[tuple[str, dict[str, Any]]] = []
    p = pending_spans.c
    for chunk in _chunks(list(keys)):
        stmt = select(p.pair_key, p.payload).where(
            p.org_id == org_id, p.side == side, p.pair_key.in_(chunk)
        )
        found.extend((row.pair_key, row.payload) for row in conn.execute(stmt))
    return found


def add_pending(
    conn: Connection,
    org_id: str,
    halves: list[tuple[str, str, str, dict[str, Any]]],
    expires_us: int,
) -> None:
    """Halves as (pair key, side, own span id, payload)."""
    if not halves:
        return
    _execute_many(
        conn,
        _statement(conn, pending_spans.name, _pending_sql),
        [
            (org_id, key, side, span_id, orjson.dumps(payload).decode(), expires_us)
            for key, side, span_id, payload in sorted(halves, key=lambda half: half[:3])
        ],
    )


def _pending_sql(conn: Connection, _name: str) -> _DriverSql:
    insert = insert_for(conn, pending_spans).on_conflict_do_nothing(
        index_elements=["org_id", "pair_key", "side", "span_id"]
    )
    return _driver_sql(
        conn, insert, ("org_id", "pair_key", "side", "span_id", "payload", "expires_us")
    )


def count_pending(conn: Connection, org_id: str) -> int:
    """How many halves of the organization wait in the database."""
    count = conn.execute(
        select(func.count()).select_from(pending_spans).where(pending_spans.c.org_id == org_id)
    ).scalar()
    return int(count or 0)


def claim_expired(conn: Connection, now_us: int, *, limit: int, max_pending: int) -> list[Row[Any]]:
    """Take the halves that waited too long, with any other half of the same key (which a
    concurrent app node may have stored at the same moment), and the oldest halves of an
    organization that holds more than `max_pending`."""
    p = pending_spans.c
    keys = select(p.org_id, p.pair_key).where(p.expires_us < now_us).order_by(p.expires_us)
    rows = list(_claim(conn, keys.limit(limit)))
    crowded = conn.execute(
        select(p.org_id, func.count()).group_by(p.org_id).having(func.count() > max_pending)
    ).all()
    for org_id, count in crowded:
        oldest = (
            select(p.org_id, p.pair_key)
            .where(p.org_id == org_id)
            .order_by(p.expires_us)
            .limit(int(count) - max_pending)
        )
        rows.extend(_claim(conn, oldest))
    return rows


def _claim(conn: Connection, keys: Any) -> Iterable[Any]:
    p = pending_spans.c
    # Materialized first: SQLite and PostgreSQL both refuse a LIMIT inside IN on some paths.
    chosen = [tuple(row) for row in conn.execute(keys)]
    for chunk in _chunks(chosen):
        yield from conn.execute(
            delete(pending_spans)
            .where(tuple_(p.org_id, p.pair_key).in_(chunk))
            .returning(p.org_id, p.pair_key, p.side, p.payload)
        )


def node_rows(conn: Connection, org_id: str) -> list[Row[Any]]:
    return list(conn.execute(select(graph_nodes).where(graph_nodes.c.org_id == org_id)))


def edge_rows(conn: Connection, org_id: str) -> list[Row[Any]]:
    return list(conn.execute(select(graph_edges).where(graph_edges.c.org_id == org_id)))


def minute_totals(
    conn: Connection, org_id: str, subject_ids: Sequence[str], from_us: int, to_us: int
) -> dict[str, tuple[int, int, float, list[int]]]:
    """Per subject: calls, errors, summed duration and the latency histogram over a range."""
    m = graph_minutes.c
    out: dict[str, tuple[int, int, float, list[int]]] = {}
    for chunk in _chunks(list(subject_ids)):
        stmt = (
            select(
                m.subject_id,
                func.sum(m.calls),
                func.sum(m.errors),
                func.sum(m.duration_ms),
                *(func.sum(m[name]) for name in BUCKET_COLUMNS),
            )
            .where(
                m.org_id == org_id,
                m.subject_id.in_(chunk),
                m.minute_us >= from_us,
                m.minute_us < to_us,
            )
            .group_by(m.subject_id)
        )
        for row in conn.execute(stmt):
            values = tuple(row)
            out[values[0]] = (
                int(values[1]),
                int(values[2]),
                float(values[3]),
                [int(v) for v in values[4:]],
            )
    return out


def traffic(conn: Connection, org_id: str, from_us: int, to_us: int) -> dict[str, int]:
    """Calls per subject (edge or node) over a range."""
    m = graph_minutes.c
    stmt = (
        select(m.subject_id, func.sum(m.calls))
        .where(m.org_id == org_id, m.minute_us >= from_us, m.minute_us < to_us)
        .group_by(m.subject_id)
    )
    return {subject: int(calls) for subject, calls in conn.execute(stmt)}


def purge_minutes(conn: Connection, before_us: int) -> int:
    result = conn.execute(delete(graph_minutes).where(graph_minutes.c.minute_us < before_us))
    return int(result.rowcount or 0)


# -- the servicegraph connector's running totals ---------------------------------------------


# (start_us, time_us, count, sum_ms, buckets) of a stored running total
CursorRow = tuple[int, int, float, float, list[int]]


def cursors_for_update(
    conn: Connection, org_id: str, starts: Iterable[int]
) -> dict[str, CursorRow]:
    """Every stored cursor of the running totals counted since these start times (each
    start is one Collector's), read once the transaction holds, on PostgreSQL, a lock per
    Collector until it ends: two app nodes given two exports of one Collector at once take
    them in turn, and never both subtract the same old value or both count a new series
    whole. (SQLite's one writer needs no lock.) One lock per Collector, not per row: an
    export's thousands of rows would each be written to be locked."""
    wanted = sorted(set(starts))
    if conn.dialect.name == "postgresql":
        for start in wanted:  # in order: two exports never wait for each other in a circle
            digest = hashlib.sha256(f"servicegraph {org_id} {start}".encode()).digest()
            lock = int.from_bytes(digest[:8], "big", signed=True)
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(lock)s)", {"lock": lock})
    c = graph_metric_cursors.c
    found: dict[str, CursorRow] = {}
    columns = (c.series_key, c.start_us, c.time_us, c["count"], c.sum_ms, c.buckets)
    for chunk in _chunks(wanted):
        stmt = select(*columns).where(c.org_id == org_id, c.start_us.in_(chunk))
        for key, start_us, time_us, count, sum_ms, buckets in conn.execute(stmt).all():
            found[key] = (start_us, time_us, count, sum_ms, buckets)
    return found


def put_cursors(conn: Connection, org_id: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Store each series' cursor, replacing the one before, in key order. Rows:
    (series_key, start_us, time_us, count, sum_ms, buckets as a list of counts)."""
    if not rows:
        return
    _execute_many(
        conn,
        _statement(conn, graph_metric_cursors.name, _cursors_sql),
        [
            (org_id, key, start, time, count, sum_ms, orjson.dumps(list(buckets)).decode())
            for key, start, time, count, sum_ms, buckets in sorted(rows, key=lambda r: r[0])
        ],
    )


def _cursors_sql(conn: Connection, _name: str) -> _DriverSql:
    stmt = insert_for(conn, graph_metric_cursors)
    replaced = ("start_us", "time_us", "count", "sum_ms", "buckets")
    upsert = stmt.on_conflict_do_update(
        index_elements=["org_id", "series_key"],
        set_={name: stmt.excluded[name] for name in replaced},
    )
    return _driver_sql(conn, upsert, ("org_id", "series_key", *replaced))


def purge_before(conn: Connection, org_id: str, cutoff_us: int, *, chunk: int = 5000) -> int:
    """Delete up to `chunk` per-minute figures older than the cutoff, and the servicegraph
    cursors not moved since; the caller repeats until 0."""
    m = graph_minutes.c
    doomed_minutes = (
        select(m.subject_id, m.minute_us)
        .where(m.org_id == org_id, m.minute_us < cutoff_us)
        .limit(chunk)
    )
    removed = conn.execute(
        delete(graph_minutes).where(
            m.org_id == org_id, tuple_(m.subject_id, m.minute_us).in_(doomed_minutes)
        )
    ).rowcount
    # A servicegraph running total not received since the cutoff has stopped (the Collector
    # forgets a series after minutes without calls): its cursor would never be read again.
    removed += conn.execute(
        delete(graph_metric_cursors).where(
            graph_metric_cursors.c.org_id == org_id, graph_metric_cursors.c.time_us < cutoff_us
        )
    ).rowcount
    return int(removed or 0)


def newest_minute(conn: Connection, org_id: str) -> int | None:
    """The start of the newest minute with per-minute figures, if there is one."""
    m = graph_minutes.c
    value = conn.execute(select(func.max(m.minute_us)).where(m.org_id == org_id)).scalar()
    return None if value is None else int(value)


def clear_org(conn: Connection, org_id: str) -> int:
    """Delete everything the organization's graph holds (nodes, edges, figures, versions,
    waiting halves, servicegraph cursors, what its sources declared and their readings) but
    its version counter, which moves on instead: an in-memory graph kept for an old version
    is never taken for the new one."""
    removed = 0
    for table in (
        graph_minutes,
        graph_edges,
        graph_nodes,
        service_versions,
        pending_spans,
        graph_metric_cursors,
        graph_declarations,
        graph_declared_sources,
    ):
        removed += conn.execute(delete(table).where(table.c.org_id == org_id)).rowcount or 0
    bump_version(conn, org_id, 0)
    return int(removed)
