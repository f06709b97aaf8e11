"""Service accounts: named owners of API keys that belong to no person (CI, headless use)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from trailmap import clock, ids
from trailmap.accounts.organizations import get_org
from trailmap.errors import Conflict, ValidationFailed
from trailmap.storage import Connection, Database
from trailmap.storage import accounts as account_store
from trailmap.storage import web as store

__all__ = ["ServiceAccount", "create_service_account", "list_service_accounts"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    id: str
    name: str
    created: datetime


async def create_service_account(db: Database, org_slug: str, name: str) -> ServiceAccount:
    name = name.strip()
    if not _NAME.match(name):
        raise ValidationFailed.field(
            "name", "use 1 to 100 letters, digits, spaces, dots, hyphens or underscores"
        )
    org = await get_org(db, org_slug)
    account_id, created_us = ids.new_id(), clock.now_us()
    row = {"id": account_id, "name": name, "created_us": created_us}

    def _create(conn: Connection) -> None:
        if account_store.get_service_account_by_name(conn, org.id, name) is not None:
            raise Conflict(f"{org.slug} already has a service account named {name!r}.")
        account_store.insert_service_account(conn, org.id, row)

    await db.write(_create)
    return ServiceAccount(id=account_id, name=name, created=clock.from_us(created_us))


async def list_service_accounts(db: Database, org_slug: str) -> list[ServiceAccount]:
    org = await get_org(db, org_slug)
    return [
        ServiceAccount(id=r["id"], name=r["name"], created=clock.from_us(r["created_us"]))
        for r in await db.read(store.list_service_accounts, org.id)
    ]
