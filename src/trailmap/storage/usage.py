"""Usage counters per organization, metric and period (a UTC day or month)."""

from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from trailmap.storage.tables import usage_counters

__all__ = ["add_usage", "get_usage"]


def get_usage(conn: Connection, org_id: str, metric: str, period: str) -> int:
    stmt = select(usage_counters.c.count).where(
        usage_counters.c.org_id == org_id,
        usage_counters.c.metric == metric,
        usage_counters.c.period == period,
    )
    value = conn.execute(stmt).scalar_one_or_none()
    return int(value or 0)


def add_usage(conn: Connection, org_id: str, metric: str, period: str, amount: int) -> None:
    if amount <= 0:
        return
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = dialect_insert(usage_counters).values(
        org_id=org_id, metric=metric, period=period, count=amount
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["org_id", "metric", "period"],
        set_={"count": usage_counters.c.count + amount},
    )
    conn.execute(stmt)
