"""A team's lifecycle: invitations, members and roles, passwords set, changed and reset,
users disabled; each change checked against the permission table and written to the audit log."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, cast, get_args

from trailmap import clock, ids
from trailmap.accounts import tokens
from trailmap.accounts.audit import Actor, record
from trailmap.accounts.organizations import Organization, get_org, set_retention
from trailmap.accounts.passwords import DEFAULT_HASHING, PasswordHashing
from trailmap.accounts.permissions import Action, Role
from trailmap.accounts.users import MIN_PASSWORD_LENGTH, check_email
from trailmap.errors import Conflict, Forbidden, NotFound, ValidationFailed
from trailmap.storage import Connection, Database
from trailmap.storage import accounts as store
from trailmap.storage import web as web_store

__all__ = [
    "OPERATOR_AUTHORITY",
    "Authority",
    "Invitation",
    "Member",
    "accept_invitation",
    "change_password",
    "change_role",
    "disable_user",
    "enable_user",
    "invitation_for",
    "invite",
    "issue_password_reset",
    "list_invitations",
    "list_members",
    "purge_ended_links",
    "remove_member",
    "reset_password",
    "revoke_invitation",
    "set_org_key_rules",
    "set_org_retention",
]

_US: Final = 1_000_000
_ROLES: Final = get_args(Role)


class Authority(Protocol):
    """Whoever acts: a console `Membership`, an API `Principal`, or the CLI's operator."""

    def require(self, action: Action) -> None: ...


class _Operator:
    """The CLI's authority: it holds the database, so it may do anything."""

    def require(self, action: Action) -> None:
        del action


OPERATOR_AUTHORITY: Final = _Operator()


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    email: str
    role: Role
    joined: datetime
    last_sign_in: datetime | None
    disabled: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "email": self.email,
            "role": self.role,
            "joined": _iso(self.joined),
            "last_sign_in": None if self.last_sign_in is None else _iso(self.last_sign_in),
            "disabled": self.disabled,
        }


@dataclass(frozen=True, slots=True)
class Invitation:
    id: str
    org_slug: str
    org_name: str
    email: str
    role: Role
    invited_by: str
    expires: datetime
    token: str | None = None  # only when just made: the link's secret, shown once

    def link(self, public_url: str) -> str:
        return f"{public_url}/invite/{self.token}"

    @property
    def subject(self) -> str:
        return f"Join {self.org_name} on Trailmap"

    def message(self, link: str) -> str:
        """The e-mail that carries the link."""
        return (
            f"{self.invited_by} invites you to {self.org_name} on Trailmap as {self.role}.\n\n"
            f"Open this link to join (it works once, until {self.expires:%Y-%m-%d %H:%M} "
            f"UTC):\n\n{link}\n"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "organization": self.org_slug,
            "email": self.email,
            "role": self.role,
            "invited_by": self.invited_by,
            "expires": _iso(self.expires),
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _role(value: str) -> Role:
    if value not in _ROLES:
        raise ValidationFailed.field("role", "choose owner, admin or member")
    return cast("Role", value)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed.field("password", f"use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise ValidationFailed.field("password", "use at most 1,024 characters")


def _require_role_change(who: Authority, old: Role | None, new: Role | None) -> None:
    """Owners alone make owners or unmake them; admins manage the rest."""
    who.require("manage_members")
    if "owner" in (old, new):
        who.require("manage_owners")


def _keep_an_owner(conn: Connection, org: Organization, user_role: Role) -> None:
    if user_role == "owner" and store.count_owners(conn, org.id) <= 1:
        raise Conflict(f"This is the last owner of {org.slug}; make someone else an owner first.")


# -- members ----------------------------------------------------------------------------------


async def list_members(db: Database, org_slug: str, *, who: Authority) -> list[Member]:
    """The organization's members with their roles and last sign-in; any member may look."""
    who.require("read")
    org = await get_org(db, org_slug)
    return [
        Member(
            user_id=r["id"],
            email=r["email"],
            role=_role(r["role"]),
            joined=clock.from_us(r["created_us"]),
            last_sign_in=None
            if r["last_sign_in_us"] is None
            else clock.from_us(r["last_sign_in_us"]),
            disabled=r["disabled_us"] is not None,
        )
        for r in await db.read(store.list_members, org.id)
    ]


def _member_row(conn: Connection, org: Organization, email: str) -> dict[str, Any]:
    user = store.get_user_by_email(conn, email)
    membership = None if user is None else store.get_membership(conn, user["id"], org_id=org.id)
    if user is None or membership is None:
        raise NotFound(f"{email} is not a member of {org.slug}.")
    return {**user, "role": membership["role"]}


async def change_role(
    db: Database, org_slug: str, email: str, role: str, *, who: Authority, by: Actor
) -> Member:
    """Give a member another role; the last owner stays an owner."""
    email, new = check_email(email), _role(role)
    org = await get_org(db, org_slug)

    def _change(conn: Connection) -> dict[str, Any]:
        user = _member_row(conn, org, email)
        old = _role(user["role"])
        _require_role_change(who, old, new)
        if old != new:
            _keep_an_owner(conn, org, old)
            store.set_role(conn, org.id, user["id"], new)
            record(
                conn,
                org.id,
                "member.role_changed",
                by,
                target=email,
                details={"from": old, "to": new},
            )
        return user

    await db.write(_change)
    return next(m for m in await list_members(db, org.slug, who=who) if m.email == email)


async def remove_member(
    db: Database, org_slug: str, email: str, *, who: Authority, by: Actor
) -> list[dict[str, Any]]:
    """Remove a member: their personal keys in the organization (MCP keys too) are revoked
    at once, so their OAuth tokens die with them; service-account keys stay. Returns the
    keys revoked (id, name, prefix)."""
    email = check_email(email)
    org = await get_org(db, org_slug)

    def _remove(conn: Connection) -> list[dict[str, Any]]:
        user = _member_row(conn, org, email)
        role = _role(user["role"])
        _require_role_change(who, role, None)
        _keep_an_owner(conn, org, role)
        store.delete_membership(conn, org.id, user["id"])
        revoked = store.revoke_personal_keys(conn, user["id"], clock.now_us(), org_id=org.id)
        record(
            conn,
            org.id,
            "member.removed",
            by,
            target=email,
            details={
                "role": role,
                "keys_revoked": [f"{k['name']} ({k['prefix']})" for k in revoked],
            },
        )
        return revoked

    return await db.write(_remove)


# -- invitations ------------------------------------------------------------------------------


async def invite(
    db: Database,
    org_slug: str,
    email: str,
    role: str = "member",
    *,
    who: Authority,
    by: Actor,
    days: int,
) -> Invitation:
    """A one-time link to join the organization with `role`, working for `days`; the token
    is in the answer only, its hash in the database."""
    email, role_ = check_email(email), _role(role)
    _require_role_change(who, None, role_)
    org = await get_org(db, org_slug)
    token = secrets.token_urlsafe(32)
    now_us = clock.now_us()
    row = {
        "id": ids.new_id(),
        "email": email,
        "role": role_,
        "token_hash": tokens.hash_token(token),
        "invited_by": by.name[:400],
        "created_us": now_us,
        "expires_us": now_us + days * 86_400 * _US,
        "accepted_us": None,
        "revoked_us": None,
    }

    def _invite(conn: Connection) -> None:
        user = store.get_user_by_email(conn, email)
        if user is not None and store.get_membership(conn, user["id"], org_id=org.id):
            raise Conflict(f"{email} is already a member of {org.slug}.")
        _check_member_limit(conn, org)
        store.insert_invitation(conn, org.id, row)
        record(conn, org.id, "member.invited", by, target=email, details={"role": role_})

    await db.write(_invite)
    return _invitation(row, org.slug, org.name, token)


def _invitation(row: dict[str, Any], slug: str, name: str, token: str | None = None) -> Invitation:
    return Invitation(
        id=row["id"],
        org_slug=slug,
        org_name=name,
        email=row["email"],
        role=_role(row["role"]),
        invited_by=row["invited_by"],
        expires=clock.from_us(row["expires_us"]),
        token=token,
    )


def _check_member_limit(conn: Connection, org: Organization) -> None:
    members = store.count_members(conn, org.id)
    if org.plan.members is not None and members >= org.plan.members:
        raise Forbidden(
            f"The {org.plan.name} plan allows {org.plan.members} members and {org.slug} has "
            f"{members}; remove one or change plan."
        )


async def list_invitations(db: Database, org_slug: str, *, who: Authority) -> list[Invitation]:
    who.require("manage_members")
    org = await get_org(db, org_slug)
    rows = await db.read(store.list_invitations, org.id, clock.now_us())
    return [_invitation(r, org.slug, org.name) for r in rows]


async def revoke_invitation(
    db: Database, org_slug: str, invitation_id: str, *, who: Authority, by: Actor
) -> None:
    who.require("manage_members")
    org = await get_org(db, org_slug)

    def _revoke(conn: Connection) -> None:
        if not store.close_invitation(conn, org.id, invitation_id, revoked_us=clock.now_us()):
            raise NotFound("No open invitation of this organization has that id.")
        record(conn, org.id, "invitation.revoked", by, target=invitation_id)

    await db.write(_revoke)


async def invitation_for(db: Database, token: str) -> Invitation | None:
    """The open invitation behind a link, or None (unknown, used, revoked or expired)."""
    if not token or len(token) > 100:
        return None
    row = await db.read(store.find_invitation, tokens.hash_token(token))
    if (
        row is None
        or row["accepted_us"] is not None
        or row["revoked_us"] is not None
        or row["expires_us"] <= clock.now_us()
    ):
        return None
    return _invitation(row, row["org_slug"], row["org_name"])


async def accept_invitation(
    db: Database,
    token: str,
    password: str,
    *,
    client: str | None = None,
    hashing: PasswordHashing = DEFAULT_HASHING,
) -> tuple[Invitation, str]:
    """Join through an invitation link: a new person sets their password here; someone
    with an account already proves it with theirs. Returns the invitation and the user id."""
    invitation = await invitation_for(db, token)
    if invitation is None:
        raise NotFound("This invitation link is not valid: it was used, revoked or has expired.")
    _check_password(password)
    existing = await db.read(store.get_user_by_email, invitation.email)
    if existing is not None:
        matched = await hashing.verify(password, existing["password_hash"])
        if not matched or existing["disabled_us"] is not None:
            raise Forbidden(
                f"{invitation.email} has an account already: enter its password to join."
            )
        password_hash = None
    else:
        password_hash = await hashing.hash(password)
    now_us = clock.now_us()
    actor = Actor(invitation.email, client=client)

    def _accept(conn: Connection) -> str:
        row = store.find_invitation(conn, tokens.hash_token(token))
        if row is None or not store.close_invitation(
            conn, row["org_id"], row["id"], accepted_us=now_us
        ):
            raise NotFound("This invitation link has just been used.")
        org = Organization.from_row(store.get_org_by_id(conn, row["org_id"]) or {})
        user = store.get_user_by_email(conn, invitation.email)
        if user is None:
            user_id = ids.new_id()
            store.insert_user(
                conn,
                {
                    "id": user_id,
                    "email": invitation.email,
                    "password_hash": password_hash,
                    "created_us": now_us,
                },
            )
        else:
            user_id = user["id"]
        if store.get_membership(conn, user_id, org_id=org.id) is not None:
            raise Conflict(f"{invitation.email} is already a member of {org.slug}.")
        _check_member_limit(conn, org)
        store.insert_membership(
            conn, org.id, {"user_id": user_id, "role": invitation.role, "created_us": now_us}
        )
        record(
            conn,
            org.id,
            "member.joined",
            actor,
            target=invitation.email,
            details={"role": invitation.role, "invited_by": invitation.invited_by},
        )
        return user_id

    return invitation, await db.write(_accept)


# -- passwords --------------------------------------------------------------------------------


async def change_password(
    db: Database,
    user_id: str,
    current: str,
    new: str,
    *,
    keep_session: str | None = None,
    client: str | None = None,
    hashing: PasswordHashing = DEFAULT_HASHING,
) -> None:
    """Change a signed-in person's password; their other sessions end."""
    _check_password(new)
    user = await db.read(store.get_user, user_id)
    if user is None:
        raise NotFound("No such user.")
    if not await hashing.verify(current, user["password_hash"]):
        raise Forbidden("The current password is not right.")
    password_hash = await hashing.hash(new)
    actor = Actor(user["email"], client=client, user_id=user_id)

    def _change(conn: Connection) -> None:
        store.update_user(conn, user_id, {"password_hash": password_hash})
        keep = None if keep_session is None else tokens.hash_token(keep_session)
        web_store.delete_user_sessions(conn, user_id, keep=keep)
        for org in store.list_memberships(conn, user_id):
            record(conn, org["id"], "password.changed", actor, target=user["email"])

    await db.write(_change)


async def issue_password_reset(db: Database, email: str, *, minutes: int, by: Actor) -> str | None:
    """A one-time link to set a new password, working for `minutes`; None when no such
    (enabled) user exists, which only the operator's CLI may be told."""
    email = check_email(email)
    user = await db.read(store.get_user_by_email, email)
    if user is None or user["disabled_us"] is not None:
        return None
    token = secrets.token_urlsafe(32)
    now_us = clock.now_us()

    def _issue(conn: Connection) -> None:
        store.insert_password_reset(
            conn,
            {
                "token_hash": tokens.hash_token(token),
                "user_id": user["id"],
                "created_us": now_us,
                "expires_us": now_us + minutes * 60 * _US,
                "used_us": None,
            },
        )
        for org in store.list_memberships(conn, user["id"]):
            record(conn, org["id"], "password.reset_link", by, target=email)

    await db.write(_issue)
    return token


async def reset_link_is_live(db: Database, token: str) -> bool:
    if not token or len(token) > 100:
        return False
    found = await db.read(store.find_password_reset, tokens.hash_token(token), clock.now_us())
    return found is not None


async def reset_password(
    db: Database,
    token: str,
    new: str,
    *,
    client: str | None = None,
    hashing: PasswordHashing = DEFAULT_HASHING,
) -> str:
    """Set a new password through a reset link (spent by this, once); every session of
    the user ends. Returns the user's e-mail."""
    _check_password(new)
    if not token or len(token) > 100:
        raise NotFound("This reset link is not valid: it was used or has expired.")
    password_hash = await hashing.hash(new)

    def _reset(conn: Connection) -> str:
        user_id = store.take_password_reset(conn, tokens.hash_token(token), clock.now_us())
        user = None if user_id is None else store.get_user(conn, user_id)
        if user is None or user["disabled_us"] is not None:
            raise NotFound("This reset link is not valid: it was used or has expired.")
        store.update_user(conn, user["id"], {"password_hash": password_hash})
        web_store.delete_user_sessions(conn, user["id"])
        actor = Actor(user["email"], client=client, user_id=user["id"])
        for org in store.list_memberships(conn, user["id"]):
            record(conn, org["id"], "password.reset", actor, target=user["email"])
        return str(user["email"])

    return await db.write(_reset)


# -- disabling a user (the operator's, across organizations) --------------------------------


async def disable_user(db: Database, email: str, *, by: Actor) -> list[dict[str, Any]]:
    """Disable a user: no sign-in; every session ends now; every personal key (MCP keys
    too) is revoked, in every organization; service-account keys stay. Returns the keys."""
    email = check_email(email)
    now_us = clock.now_us()

    def _disable(conn: Connection) -> list[dict[str, Any]]:
        user = store.get_user_by_email(conn, email)
        if user is None:
            raise NotFound(f"No user has the address {email}.")
        store.update_user(conn, user["id"], {"disabled_us": now_us})
        web_store.delete_user_sessions(conn, user["id"])
        revoked = store.revoke_personal_keys(conn, user["id"], now_us)
        for org in store.list_memberships(conn, user["id"]):
            mine = [f"{k['name']} ({k['prefix']})" for k in revoked if k["org_id"] == org["id"]]
            record(
                conn, org["id"], "user.disabled", by, target=email, details={"keys_revoked": mine}
            )
        return revoked

    return await db.write(_disable)


async def enable_user(db: Database, email: str, *, by: Actor) -> None:
    email = check_email(email)

    def _enable(conn: Connection) -> None:
        user = store.get_user_by_email(conn, email)
        if user is None:
            raise NotFound(f"No user has the address {email}.")
        store.update_user(conn, user["id"], {"disabled_us": None})
        for org in store.list_memberships(conn, user["id"]):
            record(conn, org["id"], "user.enabled", by, target=email)

    await db.write(_enable)


# -- the organization's key rules -------------------------------------------------------------


async def set_org_key_rules(
    db: Database,
    org_slug: str,
    *,
    who: Authority,
    by: Actor,
    members_write_keys: bool | None = None,
    max_key_days: int | bool | None = False,
) -> Organization:
    """Whether members may create READ_WRITE keys, and the longest a key may live (None: no
    limit; False: unchanged)."""
    who.require("manage_settings")
    org = await get_org(db, org_slug)
    values: dict[str, Any] = {}
    if members_write_keys is not None:
        values["members_write_keys"] = members_write_keys
    if max_key_days is not False:
        if max_key_days is not None and not 1 <= int(max_key_days) <= 36_500:
            raise ValidationFailed.field("max_key_days", "give 1 to 36,500 days, or none")
        values["max_key_days"] = max_key_days

    def _set(conn: Connection) -> None:
        store.update_org(conn, org.id, values)
        record(conn, org.id, "settings.changed", by, target="keys", details=values)

    if values:
        await db.write(_set)
    return await get_org(db, org_slug)


async def set_org_retention(
    db: Database, org_slug: str, days: int, *, who: Authority, by: Actor
) -> Organization:
    """A self-hosted organization's retention window in days, changed by an owner or admin
    and written to the audit log."""
    who.require("manage_settings")
    before = await get_org(db, org_slug)
    org = await set_retention(db, org_slug, days)
    details = {"retention_days": org.retention_days, "was": before.retention_days}

    def _log(conn: Connection) -> None:
        record(conn, org.id, "settings.changed", by, target="retention", details=details)

    await db.write(_log)
    return org


async def purge_ended_links(db: Database, cutoff_us: int) -> int:
    """Delete invitations and reset links that stopped working before `cutoff_us`."""
    return int(await db.write(store.purge_links_before, cutoff_us))
