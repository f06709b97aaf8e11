"""The `Principal`: who is calling, for which organization, with which scopes. Resolved once per
request by a face and handed to the domain, which never looks further."""

from __future__ import annotations

from dataclasses import dataclass

from trailmap.accounts.permissions import Action, Role, Scope, role_may, scope_allows
from trailmap.accounts.plans import Plan
from trailmap.errors import Forbidden

__all__ = ["Principal", "Scope"]


@dataclass(frozen=True, slots=True)
class Principal:
    org_id: str
    org_slug: str
    plan: Plan
    retention_days: int
    scope: Scope
    key_id: str | None = None
    key_name: str | None = None
    user_id: str | None = None
    # The role of the key's person in the organization; None for a service account's key.
    role: Role | None = None

    @property
    def can_write(self) -> bool:
        return scope_allows(self.scope, "write")

    def may(self, action: Action) -> bool:
        """The key's scope allows `action`, and so does its person's role, if it has one."""
        return scope_allows(self.scope, action) and (
            self.role is None or role_may(self.role, action)
        )

    def require_write(self) -> None:
        if not self.can_write:
            raise Forbidden(
                f"The API key {self.key_name!r} is READ_ONLY; pushing events needs a "
                "READ_WRITE key (trailmap key create --scope read-write)."
            )

    def require(self, action: Action) -> None:
        """Raise `Forbidden`, saying what is missing, unless this caller may do `action`."""
        if not scope_allows(self.scope, action):
            raise Forbidden(
                f"The API key {self.key_name!r} is {self.scope}; this needs an ADMIN key of "
                "an owner or admin, or of a service account (trailmap key create --scope admin)."
            )
        if self.role is not None and not role_may(self.role, action):
            raise Forbidden(
                f"The key {self.key_name!r} belongs to a {self.role} of {self.org_slug}; only "
                "owners and admins may do this."
            )
