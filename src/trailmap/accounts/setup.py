"""First-run setup: a one-time link, printed by `trailmap serve`, that creates the owner. Only the
link's hash is stored; it works until an owner exists, and exactly once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from trailmap.accounts.keys import ApiKey, create_key
from trailmap.accounts.organizations import Organization, check_slug, create_org
from trailmap.accounts.passwords import DEFAULT_HASHING, PasswordHashing
from trailmap.accounts.users import User, add_user, check_email, check_password
from trailmap.errors import Forbidden
from trailmap.storage import Database
from trailmap.storage import instance as store

__all__ = ["SetupResult", "complete_setup", "issue_setup_token", "setup_is_open"]

_SETTING = "setup_token_sha256"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class SetupResult:
    org: Organization
    owner: User
    key: ApiKey
    token: str  # the first API key, shown once


async def issue_setup_token(db: Database) -> str | None:
    """A fresh one-time token while nobody has an account yet; None once someone does."""
    if await db.read(store.count_users) > 0:
        return None
    token = secrets.token_urlsafe(32)
    await db.write(store.set_setting, _SETTING, _digest(token))
    return token


async def setup_is_open(db: Database, token: str) -> bool:
    stored = await db.read(store.get_setting, _SETTING)
    if stored is None or await db.read(store.count_users) > 0:
        return False
    return secrets.compare_digest(stored, _digest(token))


async def complete_setup(
    db: Database,
    token: str,
    *,
    org_slug: str,
    org_name: str,
    email: str,
    password: str,
    hashing: PasswordHashing = DEFAULT_HASHING,
) -> SetupResult:
    """Create the organization, its owner and a first READ_WRITE key, consuming the token."""
    check_slug(org_slug)
    check_email(email)
    check_password(password)
    if not await setup_is_open(db, token):
        raise Forbidden(
            "This setup link has been used or replaced; restart the server for a new one."
        )
    # Hashed before the token is taken: a hash refused for want of a turn (503) leaves the
    # link working, not spent on an organization without an owner.
    password_hash = await hashing.hash(password)
    # Only one request can take the token; a second submission of the form fails here.
    if not await db.write(store.take_setting, _SETTING, _digest(token)):
        raise Forbidden("This setup link has just been used.")
    org = await create_org(db, org_slug, name=org_name or org_slug)
    owner = await add_user(db, email, org_slug=org.slug, role="owner", password_hash=password_hash)
    key, api_token = await create_key(
        db,
        org.slug,
        name="first key",
        scope="READ_WRITE",
        created_by=f"setup ({owner.email})",
        user_id=owner.id,
    )
    return SetupResult(org=org, owner=owner, key=key, token=api_token)
