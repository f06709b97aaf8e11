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
    "delete_user_sessions",
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
        .where(
            web_sessions.c.session_hash == session_hash,
            web_sessions.c.expires_us > now_us,
            users.c.disabled_us.is_(None),
        )
    ).first()
    return dict(row._mapping) if row else None


def delete_user_sessions(conn: Connection, user_id: str, *, keep: str | None = None) -> int:
    """End every session of the user but `keep` (a session hash): at once, on every node."""
    stmt = delete(web_sessions).where(web_sessions.c.user_id == user_id)
    if keep is not None:
        stmt = stmt.where(web_sessions.c.session_hash != keep)
    return int(conn.execute(stmt).rowcount or 0)


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
    subjects: list[tuple[str, int, bool]],
    now_us: int,
    decayed: Callable[[int, int], int],
    block_us: Callable[[int, int], int],
) -> tuple[int, dict[str, tuple[int, int]]]:
    """Count a sign-in attempt against each subject (name, failures allowed free, whether
    its block refuses before the password is checked) before the password is checked, so
    that attempts sent at once are counted one by one. `decayed(failures, since_us)` is what
    is left of earlier failures; `block_us(failures, free)` how long failures block.

    Returns the time (µs) until which a refusing block holds (the attempt is then not
    counted), or 0; and, per subject, (blocked until before, blocked until now), so that a
    right password can take its own attempt back."""
    names = [name for name, _free, _refuses in subjects]
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
    refusing = [rows[n].blocked_until_us for n, _free, refuses in subjects if refuses]
    if refusing and max(refusing) > now_us:
        return int(max(refusing)), {}
    blocks: dict[str, tuple[int, int]] = {}
    for name, free, _refuses in subjects:
        row = rows[name]
        failures = decayed(row.failures, now_us - row.last_failure_us) + 1
        until = max(row.blocked_until_us, now_us + block_us(failures, free))
        blocks[name] = (int(row.blocked_until_us), until)
        conn.execute(
            update(login_throttle)
            .where(login_throttle.c.subject == name)
            .values(failures=failures, last_failure_us=now_us, blocked_until_us=until)
        )
    return 0, blocks


def forgive_attempt(conn: Connection, own: list[str], others: dict[str, tuple[int, int]]) -> None:
    """The password was right: the `own` subjects (this account from this address) start
    afresh; for the `others` the attempt no longer counts, and the block it added goes, unless
    another attempt moved it since."""
    conn.execute(delete(login_throttle).where(login_throttle.c.subject.in_(own)))
    for name, (before, after) in others.items():
        conn.execute(
            update(login_throttle)
            .where(login_throttle.c.subject == name, login_throttle.c.failures > 0)
            .values(failures=login_throttle.c.failures - 1)
        )
        conn.execute(
            update(login_throttle)
            .where(login_throttle.c.subject == name, login_throttle.c.blocked_until_us == after)
            .values(blocked_until_us=before)
        )
