"""Factories for test data: organizations, keys and events with sensible defaults."""

from __future__ import annotations

import itertools
from typing import Any

from trailmap.accounts import Organization, Principal, create_key, create_org
from trailmap.accounts.keys import parse_scope
from trailmap.storage import Database

__all__ = ["event", "make_key", "make_org", "principal_for"]

_counter = itertools.count(1)


async def make_org(
    db: Database, *, plan: str = "self-hosted", slug: str | None = None
) -> Organization:
    return await create_org(db, slug or f"org-{next(_counter)}", plan=plan)


async def make_key(
    db: Database, org: Organization, *, scope: str = "read-write", name: str | None = None
) -> str:
    _key, token = await create_key(
        db,
        org.slug,
        name=name or f"key-{next(_counter)}",
        scope=parse_scope(scope),
        created_by="tests",
        service_account="tests",
    )
    return token


def principal_for(org: Organization, *, scope: str = "read-write") -> Principal:
    return Principal(
        org_id=org.id,
        org_slug=org.slug,
        plan=org.plan,
        retention_days=org.retention_days,
        scope=parse_scope(scope),
    )


def event(**overrides: Any) -> dict[str, Any]:
    """A valid CloudEvent; pass `name=None` to leave an attribute out."""
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"evt-{next(_counter)}",
        "type": "deployment",
        "source": "//github.com/acme/checkout",
        "time": "NOW",
        "subject": "production",
        "version": "v1.0.0",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}
