"""Users and their memberships in organizations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import cast, get_args

from trailmap import clock, ids
from trailmap.accounts.memberships import membership_in
from trailmap.accounts.organizations import get_org
from trailmap.accounts.passwords import DEFAULT_HASHING, PasswordHashing
from trailmap.accounts.permissions import Role
from trailmap.errors import Conflict, Forbidden, ValidationFailed
from trailmap.storage import Connection, Database
from trailmap.storage import accounts as store

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "Role",
    "User",
    "add_user",
    "check_email",
    "check_password",
    "user_exists",
]

MIN_PASSWORD_LENGTH = 10
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    role: Role
    org_slug: str
    created: bool  # False when the user existed and only the membership is new


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed.field("password", f"use at least {MIN_PASSWORD_LENGTH} characters")


def check_email(email: str) -> str:
    """The address, normalized, or a validation error saying what an address looks like."""
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise ValidationFailed.field("email", "give an e-mail address such as ada@example.com")
    return email


async def add_user(
    db: Database,
    email: str,
    *,
    org_slug: str,
    role: str = "member",
    password: str | None = None,
    password_hash: str | None = None,
    hashing: PasswordHashing = DEFAULT_HASHING,
) -> User:
    """Create the user (or find them by e-mail) and make them a member of the organization.
    The password is hashed with `hashing`, unless its hash comes made (`password_hash`)."""
    email = check_email(email)
    if role not in get_args(Role):
        raise ValidationFailed.field("role", "choose owner, admin or member")
    if password is not None:
        check_password(password)
    org = await get_org(db, org_slug)
    if password is not None:
        password_hash = await hashing.hash(password)
    now_us = clock.now_us()

    def _add(conn: Connection) -> tuple[str, bool]:
        existing = store.get_user_by_email(conn, email)
        if existing is None:
            user_id, created = ids.new_id(), True
            store.insert_user(
                conn,
                {
                    "id": user_id,
                    "email": email,
                    "password_hash": password_hash,
                    "created_us": now_us,
                },
            )
        else:
            user_id, created = existing["id"], False
        if not created and membership_in(conn, user_id, org_id=org.id) is not None:
            raise Conflict(f"{email} is already a member of {org.slug}.")
        members = store.count_members(conn, org.id)
        if org.plan.members is not None and members >= org.plan.members:
            raise Forbidden(
                f"The {org.plan.name} plan allows {org.plan.members} members and "
                f"{org.slug} has {members}; remove one or change plan."
            )
        store.insert_membership(
            conn, org.id, {"user_id": user_id, "role": role, "created_us": now_us}
        )
        return user_id, created

    user_id, created = await db.write(_add)
    return User(id=user_id, email=email, role=cast(Role, role), org_slug=org.slug, created=created)


async def user_exists(db: Database, email: str) -> bool:
    """Whether someone has an account under this address (an invitation's page asks)."""
    return await db.read(store.get_user_by_email, email.strip().lower()) is not None
