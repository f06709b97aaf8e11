"""Queries for organizations, users, memberships, service accounts and API keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, func, insert, select, update

from trailmap.storage.tables import (
    api_keys,
    memberships,
    organizations,
    service_accounts,
    users,
)

__all__ = [
    "count_active_keys",
    "count_members",
    "find_key_by_hash",
    "get_key",
    "get_membership",
    "get_org_by_id",
    "get_org_by_slug",
    "get_service_account_by_name",
    "get_user_by_email",
    "insert_api_key",
    "insert_membership",
    "insert_org",
    "insert_service_account",
    "insert_user",
    "list_api_keys",
    "list_memberships",
    "list_orgs",
    "revoke_key",
    "touch_key",
    "update_org",
]

Row = dict[str, Any]


def insert_org(conn: Connection, row: Row) -> None:
    conn.execute(insert(organizations), row)


def update_org(conn: Connection, org_id: str, values: Row) -> None:
    conn.execute(update(organizations).where(organizations.c.id == org_id).values(**values))


def get_org_by_slug(conn: Connection, slug: str) -> Row | None:
    row = conn.execute(select(organizations).where(organizations.c.slug == slug)).first()
    return dict(row._mapping) if row else None


def get_org_by_id(conn: Connection, org_id: str) -> Row | None:
    row = conn.execute(select(organizations).where(organizations.c.id == org_id)).first()
    return dict(row._mapping) if row else None


def list_orgs(conn: Connection) -> list[Row]:
    rows = conn.execute(select(organizations).order_by(organizations.c.slug))
    return [dict(r._mapping) for r in rows]


def insert_user(conn: Connection, row: Row) -> None:
    conn.execute(insert(users), row)


def get_user_by_email(conn: Connection, email: str) -> Row | None:
    row = conn.execute(select(users).where(users.c.email == email)).first()
    return dict(row._mapping) if row else None


def insert_membership(conn: Connection, org_id: str, row: Row) -> None:
    conn.execute(insert(memberships), {**row, "org_id": org_id})


def _memberships_of(user_id: str) -> Select[Any]:
    return (
        select(organizations.c.id, organizations.c.slug, organizations.c.name, memberships.c.role)
        .join(memberships, memberships.c.org_id == organizations.c.id)
        .where(memberships.c.user_id == user_id)
    )


def list_memberships(conn: Connection, user_id: str) -> list[Row]:
    """The organizations a user belongs to (id, slug, name) with their role, by slug."""
    stmt = _memberships_of(user_id).order_by(organizations.c.slug)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def get_membership(
    conn: Connection, user_id: str, *, org_id: str | None = None, org_slug: str | None = None
) -> Row | None:
    """One organization of the user's (by id or slug) with their role, or None."""
    stmt = _memberships_of(user_id)
    if org_id is not None:
        stmt = stmt.where(organizations.c.id == org_id)
    if org_slug is not None:
        stmt = stmt.where(organizations.c.slug == org_slug)
    row = conn.execute(stmt).first()
    return dict(row._mapping) if row else None


def count_members(conn: Connection, org_id: str) -> int:
    stmt = select(func.count()).select_from(memberships).where(memberships.c.org_id == org_id)
    return int(conn.execute(stmt).scalar_one())


def insert_service_account(conn: Connection, org_id: str, row: Row) -> None:
    conn.execute(insert(service_accounts), {**row, "org_id": org_id})


def get_service_account_by_name(conn: Connection, org_id: str, name: str) -> Row | None:
    row = conn.execute(
        select(service_accounts).where(
            service_accounts.c.org_id == org_id, service_accounts.c.name == name
        )
    ).first()
    return dict(row._mapping) if row else None


def insert_api_key(conn: Connection, org_id: str, row: Row) -> None:
    conn.execute(insert(api_keys), {**row, "org_id": org_id})


def _active(now_us: int) -> Any:
    return and_(
        api_keys.c.revoked_us.is_(None),
        (api_keys.c.expires_us.is_(None)) | (api_keys.c.expires_us > now_us),
    )


def count_active_keys(conn: Connection, org_id: str, now_us: int) -> int:
    stmt = (
        select(func.count())
        .select_from(api_keys)
        .where(api_keys.c.org_id == org_id, _active(now_us))
    )
    return int(conn.execute(stmt).scalar_one())


def list_api_keys(conn: Connection, org_id: str) -> list[Row]:
    columns = [c for c in api_keys.c if c.name != "token_hash"]
    stmt = (
        select(*columns)
        .where(api_keys.c.org_id == org_id)
        .order_by(api_keys.c.created_us.desc(), api_keys.c.id)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def get_key(conn: Connection, key_id: str) -> Row | None:
    """A key by its globally unique id (for `trailmap key revoke KEY_ID`)."""
    columns = [c for c in api_keys.c if c.name != "token_hash"]
    row = conn.execute(select(*columns).where(api_keys.c.id == key_id)).first()
    return dict(row._mapping) if row else None


# Every request runs this statement: it is built once, and the hash travels as a parameter.
_KEY_BY_HASH = (
    select(
        api_keys.c.org_id,
        api_keys.c.id,
        api_keys.c.name,
        api_keys.c.token_hash,
        api_keys.c.scope,
        api_keys.c.user_id,
        api_keys.c.expires_us,
        api_keys.c.revoked_us,
        api_keys.c.last_used_us,
        organizations.c.slug.label("org_slug"),
        organizations.c.plan.label("org_plan"),
        organizations.c.retention_days.label("org_retention_days"),
    )
    .join(organizations, organizations.c.id == api_keys.c.org_id)
    .where(api_keys.c.token_hash == bindparam("token_hash"))
)


def find_key_by_hash(conn: Connection, token_hash: str) -> Row | None:
    """The key with this hash and its organization, in one indexed read per request."""
    row = conn.execute(_KEY_BY_HASH, {"token_hash": token_hash}).first()
    return dict(row._mapping) if row else None


def touch_key(conn: Connection, org_id: str, key_id: str, now_us: int) -> None:
    conn.execute(
        update(api_keys)
        .where(api_keys.c.org_id == org_id, api_keys.c.id == key_id)
        .values(last_used_us=now_us)
    )


def revoke_key(conn: Connection, org_id: str, key_id: str, now_us: int) -> bool:
    result = conn.execute(
        update(api_keys)
        .where(
            api_keys.c.org_id == org_id,
            api_keys.c.id == key_id,
            api_keys.c.revoked_us.is_(None),
        )
        .values(revoked_us=now_us)
    )
    return result.rowcount > 0
