"""The `Principal`: who is calling, for which organization, with which scopes. Resolved once per
request by a face and handed to the domain, which never looks further."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trailmap.accounts.plans import Plan
from trailmap.errors import Forbidden

__all__ = ["Principal", "Scope"]

Scope = Literal["READ_ONLY", "READ_WRITE"]


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

    @property
    def can_write(self) -> bool:
        return self.scope == "READ_WRITE"

    def require_write(self) -> None:
        if not self.can_write:
            raise Forbidden(
                f"The API key {self.key_name!r} is READ_ONLY; pushing events needs a "
                "READ_WRITE key (trailmap key create --scope read-write)."
            )
