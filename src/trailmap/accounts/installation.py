"""The installation's own secrets (not any organization's): made once, shared by every node."""

from __future__ import annotations

import secrets

from trailmap.storage import Database
from trailmap.storage import instance as store

__all__ = ["installation_secret"]


async def installation_secret(db: Database, name: str) -> bytes:
    """The 32-byte secret called `name`, made on first use; every node gets the one stored
    first, so what one node signs another can check."""
    stored = await db.write(store.first_setting, name, secrets.token_hex(32))
    return bytes.fromhex(stored)
