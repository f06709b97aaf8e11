"""Who belongs to which organization with which role, and what each role may do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trailmap.accounts.permissions import ROLES, Action, Role, Scope, role_may
from trailmap.errors import Forbidden
from trailmap.storage import Connection, Database
from trailmap.storage import accounts as store

__all__ = [
    "Membership",
    "find_membership",
    "list_memberships",
    "membership_in",
]

_KEY_ACTIONS: dict[Scope, Action] = {
    "READ_ONLY": "create_key",
    "READ_WRITE": "create_write_key",
    "ADMIN": "create_admin_key",
}


@dataclass(frozen=True, slots=True)
class Membership:
    """A user's place in one organization."""

    user_id: str
    org_id: str
    org_slug: str
    org_name: str
    role: Role
    members_write_keys: bool = False  # the organization lets members make READ_WRITE keys

    def may(self, action: Action) -> bool:
        return role_may(self.role, action, members_write_keys=self.members_write_keys)

    def require(self, action: Action) -> None:
        if not self.may(action):
            raise Forbidden(f"A {self.role} of {self.org_slug} may not do this.")

    def require_key_scope(self, scope: Scope) -> None:
        """Raise `Forbidden` unless this member may create a key of `scope`."""
        if not self.may(_KEY_ACTIONS[scope]):
            allowed = [s for s, action in _KEY_ACTIONS.items() if self.may(action)]
            raise Forbidden(
                f"A {self.role} of {self.org_slug} may create {' or '.join(allowed)} keys, "
                f"not {scope}; ask an owner or admin."
            )

    def may_manage_key(self, owner_user_id: str | None) -> bool:
        """Whether this member may see and revoke a key created by `owner_user_id`."""
        return self.may("manage_all_keys") or owner_user_id == self.user_id


def _membership(user_id: str, row: Mapping[str, Any]) -> Membership:
    role = row["role"]
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return Membership(
        user_id, row["id"], row["slug"], row["name"], role, bool(row["members_write_keys"])
    )


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
