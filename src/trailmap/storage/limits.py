"""Queries for the request counters behind rate limits, and the sign-in throttle's upkeep."""

from __future__ import annotations

from sqlalchemy import Connection, delete

from trailmap.storage.dialect import insert_for
from trailmap.storage.tables import login_throttle, rate_limits

__all__ = ["count_hit", "purge_before"]


def count_hit(conn: Connection, subject: str, window_us: int) -> int:
    """Add one to the subject's count in this window, atomically on every node; the count."""
    stmt = insert_for(conn, rate_limits).values(subject=subject, window_us=window_us, count=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["subject", "window_us"], set_={"count": rate_limits.c.count + 1}
    ).returning(rate_limits.c.count)
    return int(conn.execute(stmt).scalar_one())


def purge_before(conn: Connection, cutoff_us: int) -> int:
    """Delete the windows that ended, and sign-in throttle rows quiet and unblocked, before
    the cutoff."""
    removed = conn.execute(delete(rate_limits).where(rate_limits.c.window_us < cutoff_us)).rowcount
    removed += conn.execute(
        delete(login_throttle).where(
            login_throttle.c.last_failure_us < cutoff_us,
            login_throttle.c.blocked_until_us < cutoff_us,
        )
    ).rowcount
    return int(removed or 0)
