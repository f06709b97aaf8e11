"""Queries for the audit log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select, tuple_

from trailmap.storage.tables import audit_events

__all__ = ["insert_event", "list_events", "purge_before"]

Row = dict[str, Any]


def insert_event(conn: Connection, org_id: str, row: Row) -> None:
    conn.execute(insert(audit_events), {**row, "org_id": org_id})


def list_events(
    conn: Connection, org_id: str, *, limit: int, before_us: int | None = None
) -> list[Row]:
    c = audit_events.c
    stmt = select(audit_events).where(c.org_id == org_id)
    if before_us is not None:
        stmt = stmt.where(c.time_us < before_us)
    stmt = stmt.order_by(c.time_us.desc(), c.id.desc()).limit(limit)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def purge_before(conn: Connection, org_id: str, cutoff_us: int, *, chunk: int = 5000) -> int:
    """Delete up to `chunk` entries older than the cutoff; the caller repeats until 0."""
    c = audit_events.c
    doomed = select(c.org_id, c.id).where(c.org_id == org_id, c.time_us < cutoff_us).limit(chunk)
    removed = conn.execute(
        delete(audit_events).where(c.org_id == org_id, tuple_(c.org_id, c.id).in_(doomed))
    ).rowcount
    return int(removed or 0)
