"""The installation's own secrets (not any organization's): made once, shared by every node."""

from __future__ import annotations

import secrets

from trailmap.storage import Database
from trailmap.storage import instance as store

__all__ = ["installation_secret", "remember_public_url", "served_public_url"]

_PUBLIC_URL = "served_public_url"


async def installation_secret(db: Database, name: str) -> bytes:
    """The 32-byte secret called `name`, made on first use; every node gets the one stored
    first, so what one node signs another can check."""
    stored = await db.write(store.first_setting, name, secrets.token_hex(32))
    return bytes.fromhex(stored)


async def remember_public_url(db: Database, url: str) -> None:
    """Note the public URL `trailmap serve` names, for the commands run beside it: a link
    that `user create` prints then names the port the server was moved to with --port."""
    await db.write(store.set_setting, _PUBLIC_URL, url)


async def served_public_url(db: Database) -> str | None:
    """The public URL the latest `trailmap serve` on this database named, if any."""
    return await db.read(store.get_setting, _PUBLIC_URL)
