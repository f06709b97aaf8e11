"""Usage counters per organization, metric and period (a UTC day or month)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from trailmap.storage.dialect import upsert
from trailmap.storage.tables import usage_counters

__all__ = ["add_usage", "add_usage_returning", "get_usage"]


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
    values = {"org_id": org_id, "metric": metric, "period": period, "count": amount}
    keys = ["org_id", "metric", "period"]
    conn.execute(
        upsert(conn, usage_counters, values, keys, {"count": usage_counters.c.count + amount})
    )


def add_usage_returning(
    conn: Connection, org_id: str, metric: str, period: str, amount: int
) -> int:
    """Add `amount` (which may be negative, to give some back) and return the new count, in
    one statement: the row stays locked to this transaction on PostgreSQL until it ends, so
    concurrent requests count one after another, never from the same stale value."""
    values = {"org_id": org_id, "metric": metric, "period": period, "count": amount}
    keys = ["org_id", "metric", "period"]
    stmt = upsert(conn, usage_counters, values, keys, {"count": usage_counters.c.count + amount})
    return int(conn.execute(stmt.returning(usage_counters.c.count)).scalar_one())
