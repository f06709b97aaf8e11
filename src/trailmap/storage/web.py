"""Queries for the console: signed-in browsers, the sign-in throttle, service accounts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, delete, select, update

from trailmap.storage.dialect import insert_for
from trailmap.storage.tables import (
    login_throttle,
    service_accounts,
    users,
    web_sessions,
)

__all__ = [
    "delete_session",
    "forgive_attempt",
    "get_session_user",
    "insert_session",
    "list_service_accounts",
    "reserve_attempt",
]

Row = dict[str, Any]


def insert_session(conn: Connection, row: Row) -> None:
    conn.execute(web_sessions.insert().values(**row))


def get_session_user(conn: Connection, session_hash: str, now_us: int) -> Row | None:
    """The signed-in user behind a live session: id and e-mail."""
    row = conn.execute(
        select(users.c.id, users.c.email)
        .join(web_sessions, web_sessions.c.user_id == users.c.id)
        .where(web_sessions.c.session_hash == session_hash, web_sessions.c.expires_us > now_us)
    ).first()
    return dict(row._mapping) if row else None


def delete_session(conn: Connection, session_hash: str, now_us: int) -> None:
    """End one session, and sweep the expired ones while at it."""
    conn.execute(delete(web_sessions).where(web_sessions.c.session_hash == session_hash))
    conn.execute(delete(web_sessions).where(web_sessions.c.expires_us <= now_us))


def list_service_accounts(conn: Connection, org_id: str) -> list[Row]:
    stmt = (
        select(service_accounts)
        .where(service_accounts.c.org_id == org_id)
        .order_by(service_accounts.c.name)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def reserve_attempt(
    conn: Connection,
    subjects: list[tuple[str, int]],
    now_us: int,
    block_us: Callable[[int, int], int],
) -> int:
    """Count a sign-in attempt against each subject before its password is checked, so that
    attempts sent at once are counted one by one. Returns the time (µs) until which an
    earlier block still holds (the attempt is then not counted), or 0 when it may go on.
    `block_us(failures, free)` is how long `failures` failures block a subject."""
    names = [name for name, _free in subjects]
    for name in names:
        conn.execute(
            insert_for(conn, login_throttle)
            .values(subject=name, failures=0, last_failure_us=0, blocked_until_us=0)
            .on_conflict_do_nothing(index_elements=["subject"])
        )
    # FOR UPDATE holds the rows on PostgreSQL; SQLite's single writer serializes anyway.
    rows = {
        r.subject: r
        for r in conn.execute(
            select(login_throttle)
            .where(login_throttle.c.subject.in_(names))
            .order_by(login_throttle.c.subject)
            .with_for_update()
        )
    }
    blocked_until = max(r.blocked_until_us for r in rows.values())
    if blocked_until > now_us:
        return int(blocked_until)
    for name, free in subjects:
        failures = rows[name].failures + 1
        conn.execute(
            update(login_throttle)
            .where(login_throttle.c.subject == name)
            .values(
                failures=failures,
                last_failure_us=now_us,
                blocked_until_us=now_us + block_us(failures, free),
            )
        )
    return 0


def forgive_attempt(conn: Connection, subject: str, other_subjects: list[str]) -> None:
    """The password was right: `subject` (the address) starts afresh, and the attempt no
    longer counts against the others (the client's address)."""
    conn.execute(delete(login_throttle).where(login_throttle.c.subject == subject))
    conn.execute(
        update(login_throttle)
        .where(login_throttle.c.subject.in_(other_subjects), login_throttle.c.failures > 0)
        .values(failures=login_throttle.c.failures - 1)
    )
