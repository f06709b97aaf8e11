"""The one statement whose SQL differs between SQLite and PostgreSQL: insert-or-update."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

__all__ = ["insert_for", "upsert"]


def insert_for(conn: Connection, table: Table) -> Any:
    """An INSERT with the dialect's ON CONFLICT clauses available."""
    return (pg_insert if conn.dialect.name == "postgresql" else sqlite_insert)(table)


def upsert(
    conn: Connection,
    table: Table,
    values: dict[str, Any],
    keys: Sequence[str],
    updates: dict[str, Any] | None = None,
) -> Any:
    stmt = insert_for(conn, table).values(**values)
    changes = updates if updates is not None else {k: v for k, v in values.items() if k not in keys}
    return stmt.on_conflict_do_update(index_elements=list(keys), set_=changes)
