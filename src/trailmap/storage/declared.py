"""Queries for declarations (what repositories, clusters and catalogs say the graph holds) and
for each declaring source's last reading; every one scoped to one organization."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, and_, bindparam, delete, or_, select, update

from trailmap.storage.database import Connection
from trailmap.storage.dialect import insert_for
from trailmap.storage.tables import graph_declarations, graph_declared_sources

__all__ = [
    "declarations_of",
    "delete_source",
    "insert_declarations",
    "live_declarations",
    "mark_removed",
    "purge_removed_before",
    "put_source",
    "source_row",
    "source_rows",
    "touch_declarations",
    "update_declarations",
]

_CHUNK = 500


def declarations_of(conn: Connection, org_id: str, source_key: str) -> list[Row[Any]]:
    """Every declaration the source has made, removed ones included (they may come back)."""
    d = graph_declarations.c
    return list(
        conn.execute(
            select(graph_declarations).where(d.org_id == org_id, d.source_key == source_key)
        )
    )


def live_declarations(conn: Connection, org_id: str, moment_us: int) -> list[Row[Any]]:
    """The declarations that held at `moment_us`: made by then and not removed by then."""
    d = graph_declarations.c
    return list(
        conn.execute(
            select(graph_declarations)
            .where(
                d.org_id == org_id,
                d.first_seen_us <= moment_us,
                or_(d.removed_us.is_(None), d.removed_us > moment_us),
            )
            .order_by(d.source_key, d.key)
        )
    )


def insert_declarations(conn: Connection, org_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Rows: source_key, key, subject, body, evidence, first_seen_us, last_seen_us."""
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        conn.execute(
            insert_for(conn, graph_declarations),
            [{**row, "org_id": org_id, "removed_us": None} for row in chunk],
        )


def update_declarations(conn: Connection, org_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Rewrite body and evidence of declarations whose content moved (and bring back removed
    ones): rows with source_key, key, body, evidence, last_seen_us, first_seen_us."""
    if not rows:
        return
    d = graph_declarations.c
    stmt = (
        update(graph_declarations)
        .where(
            d.org_id == bindparam("p_org"),
            d.source_key == bindparam("p_source"),
            d.key == bindparam("p_key"),
        )
        .values(
            body=bindparam("p_body", type_=d.body.type),
            evidence=bindparam("p_evidence", type_=d.evidence.type),
            first_seen_us=bindparam("p_first"),
            last_seen_us=bindparam("p_last"),
            removed_us=None,
        )
    )
    conn.execute(
        stmt,
        [
            {
                "p_org": org_id,
                "p_source": row["source_key"],
                "p_key": row["key"],
                "p_body": row["body"],
                "p_evidence": row["evidence"],
                "p_first": row["first_seen_us"],
                "p_last": row["last_seen_us"],
            }
            for row in rows
        ],
    )


def touch_declarations(
    conn: Connection, org_id: str, source_key: str, keys: Sequence[str], now_us: int
) -> None:
    """Move the last-seen time of declarations the source still makes, unchanged."""
    d = graph_declarations.c
    for start in range(0, len(keys), _CHUNK):
        conn.execute(
            update(graph_declarations)
            .where(
                d.org_id == org_id,
                d.source_key == source_key,
                d.key.in_(keys[start : start + _CHUNK]),
            )
            .values(last_seen_us=now_us)
        )


def mark_removed(
    conn: Connection, org_id: str, source_key: str, keys: Sequence[str] | None, now_us: int
) -> int:
    """Declarations the source no longer makes (all of them when `keys` is None) are kept,
    marked removed now; returns how many."""
    d = graph_declarations.c
    where = [d.org_id == org_id, d.source_key == source_key, d.removed_us.is_(None)]
    if keys is None:
        return int(
            conn.execute(
                update(graph_declarations).where(*where).values(removed_us=now_us)
            ).rowcount
        )
    total = 0
    for start in range(0, len(keys), _CHUNK):
        stmt = (
            update(graph_declarations)
            .where(*where, d.key.in_(keys[start : start + _CHUNK]))
            .values(removed_us=now_us)
        )
        total += int(conn.execute(stmt).rowcount)
    return total


def purge_removed_before(conn: Connection, org_id: str, cutoff_us: int) -> int:
    """Forget declarations removed before `cutoff_us` (the organization's retention)."""
    d = graph_declarations.c
    stmt = delete(graph_declarations).where(
        d.org_id == org_id, and_(d.removed_us.is_not(None), d.removed_us < cutoff_us)
    )
    return int(conn.execute(stmt).rowcount)


def put_source(conn: Connection, org_id: str, row: dict[str, Any]) -> None:
    """Insert or replace a source's last reading: source_key, kind, label, revision, read_us,
    nodes, edges, skipped, error, error_us."""
    values = {**row, "org_id": org_id}
    stmt = insert_for(conn, graph_declared_sources).values(values)
    keep = {k: v for k, v in values.items() if k not in ("org_id", "source_key")}
    conn.execute(stmt.on_conflict_do_update(index_elements=["org_id", "source_key"], set_=keep))


def source_row(conn: Connection, org_id: str, source_key: str) -> Row[Any] | None:
    s = graph_declared_sources.c
    return conn.execute(
        select(graph_declared_sources).where(s.org_id == org_id, s.source_key == source_key)
    ).first()


def source_rows(conn: Connection, org_id: str) -> list[Row[Any]]:
    s = graph_declared_sources.c
    return list(
        conn.execute(
            select(graph_declared_sources).where(s.org_id == org_id).order_by(s.label, s.source_key)
        )
    )


def delete_source(conn: Connection, org_id: str, source_key: str) -> None:
    s = graph_declared_sources.c
    conn.execute(
        delete(graph_declared_sources).where(s.org_id == org_id, s.source_key == source_key)
    )
