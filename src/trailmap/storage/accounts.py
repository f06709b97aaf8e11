"""Queries for organizations, users, memberships, service accounts and API keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, delete, func, insert, select, update

from trailmap.storage.tables import (
    api_keys,
    invitations,
    memberships,
    organizations,
    password_resets,
    service_accounts,
    users,
)

__all__ = [
    "close_invitation",
    "count_active_keys",
    "count_members",
    "count_owners",
    "delete_membership",
    "find_invitation",
    "find_key_by_hash",
    "find_password_reset",
    "get_key",
    "get_membership",
    "get_org_by_id",
    "get_org_by_slug",
    "get_service_account_by_name",
    "get_user",
    "get_user_by_email",
    "insert_api_key",
    "insert_invitation",
    "insert_membership",
    "insert_org",
    "insert_password_reset",
    "insert_service_account",
    "insert_user",
    "list_api_keys",
    "list_invitations",
    "list_members",
    "list_memberships",
    "list_orgs",
    "purge_links_before",
    "revoke_key",
    "revoke_personal_keys",
    "set_role",
    "take_password_reset",
    "touch_key",
    "update_org",
    "update_user",
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
        select(
            organizations.c.id,
            organizations.c.slug,
            organizations.c.name,
            organizations.c.members_write_keys,
            memberships.c.role,
        )
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
        api_keys.c.last_mcp_us,
        organizations.c.slug.label("org_slug"),
        organizations.c.plan.label("org_plan"),
        organizations.c.retention_days.label("org_retention_days"),
        # A personal key speaks for its person only while they are a member, not disabled.
        memberships.c.role.label("user_role"),
        users.c.disabled_us.label("user_disabled_us"),
    )
    .join(organizations, organizations.c.id == api_keys.c.org_id)
    .outerjoin(
        memberships,
        and_(
            memberships.c.org_id == api_keys.c.org_id, memberships.c.user_id == api_keys.c.user_id
        ),
    )
    .outerjoin(users, users.c.id == api_keys.c.user_id)
    .where(api_keys.c.token_hash == bindparam("token_hash"))
)


def find_key_by_hash(conn: Connection, token_hash: str) -> Row | None:
    """The key with this hash and its organization, in one indexed read per request."""
    row = conn.execute(_KEY_BY_HASH, {"token_hash": token_hash}).first()
    return dict(row._mapping) if row else None


def touch_key(
    conn: Connection, org_id: str, key_id: str, now_us: int, *, mcp: bool = False
) -> None:
    """Record a use of the key now; `mcp`: a use at the MCP endpoint, recorded as such too."""
    values = {"last_used_us": now_us, "last_mcp_us": now_us} if mcp else {"last_used_us": now_us}
    conn.execute(
        update(api_keys).where(api_keys.c.org_id == org_id, api_keys.c.id == key_id).values(values)
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


# -- the account lifecycle ------------------------------------------------------------------


def list_members(conn: Connection, org_id: str) -> list[Row]:
    """The organization's members: user id, e-mail, role, joined, last sign-in, disabled."""
    stmt = (
        select(
            users.c.id,
            users.c.email,
            memberships.c.role,
            memberships.c.created_us,
            users.c.last_sign_in_us,
            users.c.disabled_us,
        )
        .join(memberships, memberships.c.user_id == users.c.id)
        .where(memberships.c.org_id == org_id)
        .order_by(users.c.email)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def count_owners(conn: Connection, org_id: str) -> int:
    stmt = (
        select(func.count())
        .select_from(memberships)
        .where(memberships.c.org_id == org_id, memberships.c.role == "owner")
    )
    return int(conn.execute(stmt).scalar_one())


def set_role(conn: Connection, org_id: str, user_id: str, role: str) -> None:
    conn.execute(
        update(memberships)
        .where(memberships.c.org_id == org_id, memberships.c.user_id == user_id)
        .values(role=role)
    )


def delete_membership(conn: Connection, org_id: str, user_id: str) -> None:
    conn.execute(
        delete(memberships).where(memberships.c.org_id == org_id, memberships.c.user_id == user_id)
    )


def revoke_personal_keys(
    conn: Connection, user_id: str, now_us: int, *, org_id: str | None = None
) -> list[Row]:
    """Revoke the user's own keys (MCP keys included), in one organization or all; service
    account keys are not theirs and stay. Returns what was revoked (id, name, prefix)."""
    live = and_(api_keys.c.user_id == user_id, api_keys.c.revoked_us.is_(None))
    if org_id is not None:
        live = and_(live, api_keys.c.org_id == org_id)
    rows = [
        dict(r._mapping)
        for r in conn.execute(
            select(api_keys.c.org_id, api_keys.c.id, api_keys.c.name, api_keys.c.prefix).where(live)
        )
    ]
    if rows:
        conn.execute(update(api_keys).where(live).values(revoked_us=now_us))
    return rows


def get_user(conn: Connection, user_id: str) -> Row | None:
    row = conn.execute(select(users).where(users.c.id == user_id)).first()
    return dict(row._mapping) if row else None


def update_user(conn: Connection, user_id: str, values: Row) -> None:
    conn.execute(update(users).where(users.c.id == user_id).values(**values))


def insert_invitation(conn: Connection, org_id: str, row: Row) -> None:
    conn.execute(insert(invitations), {**row, "org_id": org_id})


def find_invitation(conn: Connection, token_hash: str) -> Row | None:
    """The invitation with this token's hash, with its organization's slug and name."""
    stmt = (
        select(
            invitations,
            organizations.c.slug.label("org_slug"),
            organizations.c.name.label("org_name"),
        )
        .join(organizations, organizations.c.id == invitations.c.org_id)
        .where(invitations.c.token_hash == token_hash)
    )
    row = conn.execute(stmt).first()
    return dict(row._mapping) if row else None


def list_invitations(conn: Connection, org_id: str, now_us: int) -> list[Row]:
    """The organization's open invitations: not accepted, not revoked, not expired."""
    stmt = (
        select(invitations)
        .where(
            invitations.c.org_id == org_id,
            invitations.c.accepted_us.is_(None),
            invitations.c.revoked_us.is_(None),
            invitations.c.expires_us > now_us,
        )
        .order_by(invitations.c.created_us)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def close_invitation(
    conn: Connection,
    org_id: str,
    invitation_id: str,
    *,
    accepted_us: int | None = None,
    revoked_us: int | None = None,
) -> bool:
    """Mark an open invitation accepted or revoked: true for exactly one caller."""
    values = {"accepted_us": accepted_us} if accepted_us is not None else {"revoked_us": revoked_us}
    result = conn.execute(
        update(invitations)
        .where(
            invitations.c.org_id == org_id,
            invitations.c.id == invitation_id,
            invitations.c.accepted_us.is_(None),
            invitations.c.revoked_us.is_(None),
        )
        .values(**values)
    )
    return result.rowcount == 1


def insert_password_reset(conn: Connection, row: Row) -> None:
    conn.execute(insert(password_resets), row)


def take_password_reset(conn: Connection, token_hash: str, now_us: int) -> str | None:
    """Spend a live reset link: the user id, for exactly one caller; None when it is unknown,
    spent or expired."""
    result = conn.execute(
        update(password_resets)
        .where(
            password_resets.c.token_hash == token_hash,
            password_resets.c.used_us.is_(None),
            password_resets.c.expires_us > now_us,
        )
        .values(used_us=now_us)
    )
    if result.rowcount != 1:
        return None
    row = conn.execute(
        select(password_resets.c.user_id).where(password_resets.c.token_hash == token_hash)
    ).first()
    return None if row is None else str(row[0])


def find_password_reset(conn: Connection, token_hash: str, now_us: int) -> str | None:
    """The user id of a live reset link, without spending it."""
    row = conn.execute(
        select(password_resets.c.user_id).where(
            password_resets.c.token_hash == token_hash,
            password_resets.c.used_us.is_(None),
            password_resets.c.expires_us > now_us,
        )
    ).first()
    return None if row is None else str(row[0])


def purge_links_before(conn: Connection, cutoff_us: int) -> int:
    """Delete invitations and reset links that ended (expired, spent) before the cutoff."""
    removed = conn.execute(
        delete(password_resets).where(password_resets.c.expires_us < cutoff_us)
    ).rowcount
    removed += conn.execute(
        delete(invitations).where(invitations.c.expires_us < cutoff_us)
    ).rowcount
    return int(removed or 0)
