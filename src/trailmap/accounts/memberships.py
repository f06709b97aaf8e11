"""Who belongs to which organization with which role, and what each role may do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from trailmap.storage import Connection, Database
from trailmap.storage import accounts as store

__all__ = [
    "PERMISSIONS",
    "ROLES",
    "Action",
    "Membership",
    "Role",
    "find_membership",
    "list_memberships",
    "membership_in",
]

Role = Literal["owner", "admin", "member"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

Action = Literal[
    "create_own_key",  # an API key of one's own, revoked by oneself
    "manage_all_keys",  # see and revoke every key of the organization, not only one's own
    "manage_service_accounts",  # create service accounts and mint their keys
]

# The one permission table: console, API and CLI ask `Membership.may`, never the role.
PERMISSIONS: Final[Mapping[Action, frozenset[Role]]] = {
    "create_own_key": frozenset(ROLES),
    "manage_all_keys": frozenset({"owner", "admin"}),
    "manage_service_accounts": frozenset({"owner", "admin"}),
}


@dataclass(frozen=True, slots=True)
class Membership:
    """A user's place in one organization."""

    user_id: str
    org_id: str
    org_slug: str
    org_name: str
    role: Role

    def may(self, action: Action) -> bool:
        return self.role in PERMISSIONS[action]

    def may_manage_key(self, owner_user_id: str | None) -> bool:
        """Whether this member may see and revoke a key created by `owner_user_id`."""
        return self.may("manage_all_keys") or owner_user_id == self.user_id


def _membership(user_id: str, row: Mapping[str, str]) -> Membership:
    role = row["role"]
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return Membership(user_id, row["id"], row["slug"], row["name"], role)


def membership_in(
    conn: Connection, user_id: str, *, org_id: str | None = None, org_slug: str | None = None
) -> Membership | None:
    """The user's membership of one organization (by id or slug), inside a transaction."""
    row = store.get_membership(conn, user_id, org_id=org_id, org_slug=org_slug)
    return None if row is None else _membership(user_id, row)


async def find_membership(db: Database, user_id: str, org_slug: str) -> Membership | None:
    """The user's membership of the organization `org_slug`; None if none (or no such org)."""
    return await db.read_one(membership_in, user_id, org_slug=org_slug)


async def list_memberships(db: Database, user_id: str) -> list[Membership]:
    """Every organization the user belongs to, by slug."""
    rows = await db.read_one(store.list_memberships, user_id)
    return [_membership(user_id, row) for row in rows]
