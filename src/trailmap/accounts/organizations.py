"""Organizations: create, look up, and decide their retention window."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trailmap import clock, ids
from trailmap.accounts.plans import Plan, get_plan
from trailmap.errors import Conflict, NotFound, ValidationFailed
from trailmap.storage import Connection, Database
from trailmap.storage import accounts as store

__all__ = [
    "Organization",
    "check_retention",
    "check_slug",
    "create_org",
    "get_org",
    "get_org_by_id",
    "insert_new_org",
    "list_orgs",
    "new_org_row",
    "retention_days_for",
    "set_retention",
]

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_MAX_RETENTION_DAYS = 36_500


@dataclass(frozen=True, slots=True)
class Organization:
    id: str
    slug: str
    name: str
    plan: Plan
    retention_days: int
    members_write_keys: bool = False  # members may create READ_WRITE keys
    max_key_days: int | None = None  # the longest an API key may live; None: no limit

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Organization:
        plan = get_plan(row["plan"])
        return cls(
            id=row["id"],
            slug=row["slug"],
            name=row["name"],
            plan=plan,
            retention_days=retention_days_for(plan, row["retention_days"]),
            members_write_keys=bool(row.get("members_write_keys", False)),
            max_key_days=row.get("max_key_days"),
        )


def retention_days_for(plan: Plan, configured: int | None) -> int:
    """The window in force: a self-hosted organization's own choice, else the plan's."""
    if configured is not None and plan.retention_configurable:
        return configured
    return plan.retention_days


def check_slug(slug: str) -> None:
    if not _SLUG.match(slug):
        raise ValidationFailed.field(
            "slug",
            "use 1 to 64 lower-case letters, digits and hyphens, not starting or ending "
            "with a hyphen (for example acme or acme-prod)",
        )


async def create_org(
    db: Database, slug: str, *, name: str | None = None, plan: str = "self-hosted"
) -> Organization:
    row = new_org_row(slug, name=name, plan=plan)
    await db.write(insert_new_org, row)
    return Organization.from_row(row)


def new_org_row(slug: str, *, name: str | None = None, plan: str = "self-hosted") -> dict[str, Any]:
    """The row of a new organization, checked: for `insert_new_org`."""
    check_slug(slug)
    try:
        plan_obj = get_plan(plan)
    except ValueError as error:
        raise ValidationFailed.field("plan", str(error)) from None
    return {
        "id": ids.new_id(),
        "slug": slug,
        "name": (name or slug)[:200],
        "plan": plan_obj.name,
        "retention_days": None,
        "created_us": clock.now_us(),
    }


def insert_new_org(conn: Connection, row: dict[str, Any]) -> None:
    """Store `row` (from `new_org_row`) in the caller's transaction; a slug taken is a
    conflict that names it."""
    slug = row["slug"]
    if store.get_org_by_slug(conn, slug) is not None:
        raise Conflict(f"An organization with the slug {slug!r} already exists.")
    store.insert_org(conn, row)


async def get_org(db: Database, slug: str) -> Organization:
    row = await db.read(store.get_org_by_slug, slug)
    if row is None:
        raise NotFound(f"No organization has the slug {slug!r}; see `trailmap org list`.")
    return Organization.from_row(row)


async def get_org_by_id(db: Database, org_id: str) -> Organization:
    row = await db.read(store.get_org_by_id, org_id)
    if row is None:
        raise NotFound("No organization has that id.")
    return Organization.from_row(row)


async def list_orgs(db: Database) -> list[Organization]:
    return [Organization.from_row(r) for r in await db.read(store.list_orgs)]


async def set_retention(db: Database, slug: str, days: int) -> Organization:
    org = await get_org(db, slug)
    check_retention(org, days)
    await db.write(store.update_org, org.id, {"retention_days": days})
    return await get_org(db, slug)


def check_retention(org: Organization, days: int) -> None:
    """Refuse a retention window the organization may not choose."""
    if not org.plan.retention_configurable:
        raise ValidationFailed.field(
            "retention_days",
            f"the {org.plan.name} plan keeps events {org.plan.retention_days} days; "
            "only self-hosted organizations choose their own window",
        )
    if not 1 <= days <= _MAX_RETENTION_DAYS:
        raise ValidationFailed.field("retention_days", f"give 1 to {_MAX_RETENTION_DAYS} days")
