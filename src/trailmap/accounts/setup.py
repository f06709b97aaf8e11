"""First-run setup: a one-time link, printed by `trailmap serve`, that creates the owner. Only the
link's hash is stored; it works until an owner exists, and is spent only by the form that
creates one: the organization, its owner and a first key are stored with the link's taking
in one transaction, so a form that fails (a slug taken) leaves the link working, and two
submissions at once make one owner."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from trailmap import clock, ids
from trailmap.accounts.keys import ApiKey, insert_first_key
from trailmap.accounts.organizations import Organization, insert_new_org, new_org_row
from trailmap.accounts.passwords import DEFAULT_HASHING, PasswordHashing
from trailmap.accounts.users import User, check_email, check_password
from trailmap.errors import Forbidden
from trailmap.storage import Connection, Database
from trailmap.storage import accounts as accounts_store
from trailmap.storage import instance as store

__all__ = [
    "SetupResult",
    "complete_setup",
    "issue_setup_token",
    "setup_also_joins",
    "setup_is_open",
]

_SETTING = "setup_token_sha256"
# The organizations (comma-separated slugs) the owner also joins as an owner: the demo, when
# `trailmap serve --demo` printed the link.
_JOINS = "setup_also_joins"

_SPENT = "This setup link has been used or replaced; restart the server for a new one."


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class SetupResult:
    org: Organization
    owner: User
    key: ApiKey
    token: str  # the first API key, shown once
    also_joined: tuple[str, ...] = ()  # the organizations the owner also owns (the demo)


async def issue_setup_token(db: Database, *, also_join: Sequence[str] = ()) -> str | None:
    """A fresh one-time token while nobody has an account yet; None once someone does. The
    owner it creates also becomes an owner of the organizations `also_join` names (those
    that exist when the form is sent)."""
    if await db.read(store.count_users) > 0:
        return None
    token = secrets.token_urlsafe(32)

    def _issue(conn: Connection) -> None:
        store.set_setting(conn, _SETTING, _digest(token))
        if also_join:
            store.set_setting(conn, _JOINS, ",".join(also_join))
        else:
            store.delete_setting(conn, _JOINS)

    await db.write(_issue)
    return token


async def setup_is_open(db: Database, token: str) -> bool:
    stored = await db.read(store.get_setting, _SETTING)
    if stored is None or await db.read(store.count_users) > 0:
        return False
    return secrets.compare_digest(stored, _digest(token))


async def setup_also_joins(db: Database) -> list[str]:
    """The organizations the owner the setup link makes also owns (that exist now)."""

    def _joins(conn: Connection) -> list[str]:
        return [slug for slug in _join_slugs(conn) if accounts_store.get_org_by_slug(conn, slug)]

    return await db.read(_joins)


def _join_slugs(conn: Connection) -> list[str]:
    named = store.get_setting(conn, _JOINS) or ""
    return [slug for slug in named.split(",") if slug]


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
    """Create the organization, its owner and a first READ_WRITE key, consuming the token
    in the same transaction: all of it, or nothing and the link still works."""
    org_row = new_org_row(org_slug, name=org_name or org_slug)
    email = check_email(email)
    check_password(password)
    if not await setup_is_open(db, token):
        raise Forbidden(_SPENT)
    # Hashed before the transaction (argon2 takes a while and its turn may not come: a 503
    # then leaves the link working).
    password_hash = await hashing.hash(password)
    org = Organization.from_row(org_row)
    owner_id = ids.new_id()

    def _complete(conn: Connection) -> tuple[ApiKey, str, tuple[str, ...]]:
        # Only one transaction can take the token: a second submission waits on the row
        # (PostgreSQL) or the writer (SQLite) and finds it gone. A failure below rolls the
        # taking back with everything else.
        if not store.take_setting(conn, _SETTING, _digest(token)):
            raise Forbidden(_SPENT)
        if store.count_users(conn) > 0:
            raise Forbidden(_SPENT)
        insert_new_org(conn, org_row)
        now_us = clock.now_us()
        accounts_store.insert_user(
            conn,
            {"id": owner_id, "email": email, "password_hash": password_hash, "created_us": now_us},
        )
        owner = {"user_id": owner_id, "role": "owner", "created_us": now_us}
        accounts_store.insert_membership(conn, org.id, owner)
        joined = []
        for slug in _join_slugs(conn):
            other = accounts_store.get_org_by_slug(conn, slug)
            if other is not None and other["id"] != org.id:
                accounts_store.insert_membership(conn, other["id"], owner)
                joined.append(slug)
        store.delete_setting(conn, _JOINS)
        key, api_token = insert_first_key(
            conn,
            org,
            name="first key",
            scope="READ_WRITE",
            created_by=f"setup ({email})",
            user_id=owner_id,
        )
        return key, api_token, tuple(joined)

    key, api_token, joined = await db.write(_complete)
    owner = User(id=owner_id, email=email, role="owner", org_slug=org.slug, created=True)
    return SetupResult(org=org, owner=owner, key=key, token=api_token, also_joined=joined)
