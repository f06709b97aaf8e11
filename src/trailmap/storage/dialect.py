"""What differs between SQLite and PostgreSQL: the one statement whose SQL does
(insert-or-update), and reads run on each driver's own cursor, past SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

__all__ = ["DriverSelect", "compile_for_driver", "fetch_on_driver", "insert_for", "upsert"]


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


@dataclass(frozen=True, slots=True)
class DriverSelect:
    """A SELECT compiled for one dialect's driver: its text, the order of its parameters
    (None when the driver takes them by name) and the values compiled into it (a LIMIT)."""

    sql: str
    order: tuple[str, ...] | None
    values: dict[str, Any]


def compile_for_driver(stmt: Any, dialect: Dialect) -> DriverSelect:
    """Compile once (callers cache the result per dialect and statement shape)."""
    compiled = stmt.compile(dialect=dialect)
    order = None if compiled.positiontup is None else tuple(compiled.positiontup)
    return DriverSelect(compiled.string, order, dict(compiled.params))


def fetch_on_driver(
    conn: Connection, statement: DriverSelect, params: dict[str, Any]
) -> list[Any] | None:
    """The rows of `statement`, run straight on the driver's cursor: for reads of many rows,
    SQLAlchemy's execution and row objects cost more than the database takes to answer.
    None on a driver error, for the caller to run the statement through SQLAlchemy, which
    reports it its way (wrapping, pool invalidation). Only for a statement run on its own,
    never inside a transaction, which the failed statement would leave aborted."""
    values = {**statement.values, **params}
    order = statement.order
    arguments = [values[name] for name in order] if order is not None else values
    driver = conn.connection.driver_connection
    assert driver is not None
    try:
        cursor = driver.cursor()
        try:
            cursor.execute(statement.sql, arguments)
            return list(cursor.fetchall())
        finally:
            cursor.close()
    except conn.dialect.loaded_dbapi.Error:
        return None
