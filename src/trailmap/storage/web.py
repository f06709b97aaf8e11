"""Queries for the console: signed-in browsers, the sign-in throttle, a user's organizations."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, select

from trailmap.storage.dialect import upsert
from trailmap.storage.tables import (
    login_throttle,
    memberships,
    organizations,
    service_accounts,
    users,
    web_sessions,
)

__all__ = [
    "delete_session",
    "get_session_user",
    "get_throttle",
    "insert_session",
    "list_service_accounts",
    "list_user_orgs",
    "membership",
    "record_failure",
    "reset_throttle",
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


def list_user_orgs(conn: Connection, user_id: str) -> list[Row]:
    """The organizations a user belongs to, with their role, by slug."""
    stmt = (
        select(organizations.c.id, organizations.c.slug, organizations.c.name, memberships.c.role)
        .join(memberships, memberships.c.org_id == organizations.c.id)
        .where(memberships.c.user_id == user_id)
        .order_by(organizations.c.slug)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def membership(conn: Connection, org_slug: str, user_id: str) -> Row | None:
    """The organization (id, slug, name) and the user's role in it, or None if not a member."""
    for org in list_user_orgs(conn, user_id):
        if org["slug"] == org_slug:
            return org
    return None


def list_service_accounts(conn: Connection, org_id: str) -> list[Row]:
    stmt = (
        select(service_accounts)
        .where(service_accounts.c.org_id == org_id)
        .order_by(service_accounts.c.name)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def get_throttle(conn: Connection, subjects: list[str]) -> list[Row]:
    rows = conn.execute(select(login_throttle).where(login_throttle.c.subject.in_(subjects)))
    return [dict(r._mapping) for r in rows]


def record_failure(conn: Connection, subject: str, now_us: int, blocked_until_us: int) -> None:
    """Count one more failure for `subject`; the caller worked out the new block."""
    row = {
        "subject": subject,
        "failures": 1,
        "last_failure_us": now_us,
        "blocked_until_us": blocked_until_us,
    }
    conn.execute(
        upsert(
            conn,
            login_throttle,
            row,
            ["subject"],
            {
                "failures": login_throttle.c.failures + 1,
                "last_failure_us": now_us,
                "blocked_until_us": blocked_until_us,
            },
        )
    )


def reset_throttle(conn: Connection, subject: str) -> None:
    conn.execute(delete(login_throttle).where(login_throttle.c.subject == subject))
