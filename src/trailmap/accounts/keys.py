"""API keys: minted, listed, revoked, and turned into a `Principal` on every request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from trailmap import clock, ids
from trailmap.accounts import tokens
from trailmap.accounts.audit import OPERATOR, Actor, record
from trailmap.accounts.organizations import Organization, get_org, retention_days_for
from trailmap.accounts.permissions import SCOPES, Role
from trailmap.accounts.plans import get_plan
from trailmap.accounts.principal import Principal, Scope
from trailmap.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from trailmap.storage import Connection, Database
from trailmap.storage import accounts as store
from trailmap.storage import oauth as oauth_store

__all__ = [
    "ApiKey",
    "KeyKind",
    "authenticate",
    "create_key",
    "insert_first_key",
    "list_keys",
    "parse_scope",
    "revoke_key",
    "revoke_key_by_token",
]

_SCOPES: dict[str, Scope] = {
    "read-only": "READ_ONLY",
    "read_only": "READ_ONLY",
    "readonly": "READ_ONLY",
    "read-write": "READ_WRITE",
    "read_write": "READ_WRITE",
    "readwrite": "READ_WRITE",
    "admin": "ADMIN",
}


# Who a key is for: a person who made it, a service account (CI, headless), or an MCP client
# that a person approved through OAuth.
KeyKind = Literal["manual", "service account", "MCP"]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as lists show it: everything but the secret."""

    id: str
    org_slug: str
    name: str
    prefix: str
    scope: Scope
    created_by: str
    created: datetime
    last_used: datetime | None
    expires: datetime | None
    revoked: datetime | None
    kind: KeyKind = "manual"
    user_id: str | None = None
    service_account_id: str | None = None
    # When the key (or an OAuth token minted through it) last reached the MCP endpoint.
    last_mcp_call: datetime | None = None

    @property
    def status(self) -> Literal["active", "expired", "revoked"]:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= clock.now():
            return "expired"
        return "active"

    @classmethod
    def from_row(cls, row: dict[str, Any], org_slug: str) -> ApiKey:
        def at(us: int | None) -> datetime | None:
            return None if us is None else _from_us(us)

        return cls(
            id=row["id"],
            org_slug=org_slug,
            name=row["name"],
            prefix=row["prefix"],
            scope=cast("Scope", row["scope"]),
            created_by=row["created_by"],
            created=_from_us(row["created_us"]),
            last_used=at(row["last_used_us"]),
            expires=at(row["expires_us"]),
            revoked=at(row["revoked_us"]),
            kind=_kind(row),
            user_id=row.get("user_id"),
            service_account_id=row.get("service_account_id"),
            last_mcp_call=at(row.get("last_mcp_us")),
        )


def _kind(row: dict[str, Any]) -> KeyKind:
    if row.get("oauth_client_id"):
        return "MCP"
    if row.get("service_account_id"):
        return "service account"
    return "manual"


def _from_us(us: int) -> datetime:
    return clock.from_us(us)


def parse_scope(value: str) -> Scope:
    scope = _SCOPES.get(value.strip().lower()) or (value if value in SCOPES else None)
    if scope is None:
        raise ValidationFailed.field("scope", "choose read-only, read-write or admin")
    return scope


async def create_key(
    db: Database,
    org_slug: str,
    *,
    name: str,
    scope: Scope,
    expires_in: timedelta | None = None,
    created_by: str,
    user_id: str | None = None,
    service_account: str | None = None,
    oauth_client_id: str | None = None,
    actor: Actor | None = None,
) -> tuple[ApiKey, str]:
    """Mint a key; the token is returned here once and never again. The audit log names
    `actor` (by default, `created_by`)."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise ValidationFailed.field("name", "give the key a name of 1 to 200 characters")
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValidationFailed.field("expires", "give a positive duration such as 90d")
    org = await get_org(db, org_slug)
    expires_in = _within_lifetime(org, expires_in)
    now_us = clock.now_us()
    row, token = _new_key_row(
        name=name,
        scope=scope,
        created_by=created_by,
        now_us=now_us,
        expires_in=expires_in,
        user_id=user_id,
        oauth_client_id=oauth_client_id,
    )

    def _create(conn: Connection) -> None:
        _check_key_limit(conn, org, now_us)
        if service_account is not None:
            account = store.get_service_account_by_name(conn, org.id, service_account)
            if account is None:
                account = {"id": ids.new_id(), "name": service_account, "created_us": now_us}
                store.insert_service_account(conn, org.id, account)
            row["service_account_id"] = account["id"]
        store.insert_api_key(conn, org.id, row)
        record(
            conn,
            org.id,
            "key.created",
            actor or Actor(created_by),
            target=f"{row['name']} ({row['prefix']})",
            details={"scope": scope, "service_account": service_account},
        )

    await db.write(_create)
    return ApiKey.from_row(row, org.slug), token


def insert_first_key(
    conn: Connection, org: Organization, *, name: str, scope: Scope, created_by: str, user_id: str
) -> tuple[ApiKey, str]:
    """A key of a brand-new organization, minted inside the caller's transaction (first-run
    setup stores the organization, its owner and this key at once, or none of them)."""
    now_us = clock.now_us()
    row, token = _new_key_row(
        name=name,
        scope=scope,
        created_by=created_by,
        now_us=now_us,
        expires_in=_within_lifetime(org, None),
        user_id=user_id,
    )
    store.insert_api_key(conn, org.id, row)
    record(
        conn,
        org.id,
        "key.created",
        Actor(created_by),
        target=f"{row['name']} ({row['prefix']})",
        details={"scope": scope, "service_account": None},
    )
    return ApiKey.from_row(row, org.slug), token


def _new_key_row(
    *,
    name: str,
    scope: Scope,
    created_by: str,
    now_us: int,
    expires_in: timedelta | None,
    user_id: str | None,
    oauth_client_id: str | None = None,
) -> tuple[dict[str, Any], str]:
    """A new key's row and its token (the token is in the row only as its hash)."""
    token = tokens.mint_token()
    row: dict[str, Any] = {
        "id": ids.new_id(),
        "name": name,
        "prefix": tokens.display_prefix(token),
        "token_hash": tokens.hash_token(token),
        "scope": scope,
        "user_id": user_id,
        "service_account_id": None,
        "created_by": created_by[:400],
        "created_us": now_us,
        "last_used_us": None,
        "expires_us": None if expires_in is None else now_us + _micros(expires_in),
        "revoked_us": None,
        "oauth_client_id": oauth_client_id,
    }
    return row, token


def _within_lifetime(org: Organization, expires_in: timedelta | None) -> timedelta | None:
    """The key's lifetime under the organization's maximum: the maximum when none is asked,
    refused when more is."""
    if org.max_key_days is None:
        return expires_in
    longest = timedelta(days=org.max_key_days)
    if expires_in is None:
        return longest
    if expires_in > longest:
        raise ValidationFailed.field(
            "expires", f"{org.slug} allows keys of at most {org.max_key_days} days"
        )
    return expires_in


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _check_key_limit(conn: Connection, org: Organization, now_us: int) -> None:
    limit = org.plan.api_keys
    if limit is None:
        return
    active = store.count_active_keys(conn, org.id, now_us)
    if active >= limit:
        raise Forbidden(
            f"The {org.plan.name} plan allows {limit} active API keys and {org.slug} has "
            f"{active}; revoke one (trailmap key revoke KEY_ID) or change plan."
        )


async def list_keys(db: Database, org_slug: str) -> list[ApiKey]:
    org = await get_org(db, org_slug)
    return [ApiKey.from_row(r, org.slug) for r in await db.read(store.list_api_keys, org.id)]


async def revoke_key(
    db: Database, key_id: str, *, org_id: str | None = None, actor: Actor = OPERATOR
) -> ApiKey:
    """Revoke a key; given `org_id`, a key of another organization is not found."""

    def _revoke(conn: Connection) -> dict[str, Any]:
        row = store.get_key(conn, key_id)
        if row is None or (org_id is not None and row["org_id"] != org_id):
            raise NotFound(f"No API key has the id {key_id!r}.")
        return _revoked(conn, row["org_id"], key_id, actor)[0]

    row = await db.write(_revoke)
    return ApiKey.from_row(row, row["org_slug"])


def _revoked(
    conn: Connection, org_id: str, key_id: str, actor: Actor = OPERATOR
) -> tuple[dict[str, Any], bool]:
    """Revoke the key; its row afterwards, with `org_slug`, and whether it was live until
    now (the audit log says who revoked it, once)."""
    now_revoked = store.revoke_key(conn, org_id, key_id, clock.now_us())
    org = store.get_org_by_id(conn, org_id)
    found = store.get_key(conn, key_id)
    if found is None:  # not after finding it in this transaction; for the type checker
        raise NotFound(f"No API key has the id {key_id!r}.")
    if now_revoked:
        record(conn, org_id, "key.revoked", actor, target=f"{found['name']} ({found['prefix']})")
    found["org_slug"] = org["slug"] if org else ""
    return found, now_revoked


async def revoke_key_by_token(db: Database, token: str) -> tuple[ApiKey, bool]:
    """Revoke the key a leaked token belongs to, in whatever organization: an API key's own
    token, or an OAuth access or refresh token minted through the key (all of whose tokens
    die with it). Returns the key and whether it was live until now. The token is never
    repeated in an error, which may end up in a terminal's scrollback or a log."""
    token = token.strip()
    if not tokens.is_well_formed(token):
        raise ValidationFailed(
            "That is not a Trailmap token: tmk_, tma_ or tmr_, then 49 letters and digits "
            "ending in a checksum; check that it was copied whole."
        )
    digest = tokens.hash_token(token)
    is_key = token.startswith(tokens.API_KEY_PREFIX)

    def _revoke(conn: Connection) -> tuple[dict[str, Any], bool]:
        if is_key:
            owner = store.find_key_by_hash(conn, digest)
            found = None if owner is None else (owner["org_id"], owner["id"])
        else:
            minted = oauth_store.key_of_token(conn, digest)
            found = None if minted is None else (minted["org_id"], minted["key_id"])
        if found is None:
            raise NotFound(
                "No API key or OAuth token of this installation matches that token (an OAuth "
                "token is forgotten a while after it expired or was revoked)."
            )
        return _revoked(conn, *found)

    row, now_revoked = await db.write(_revoke)
    return ApiKey.from_row(row, row["org_slug"]), now_revoked


async def authenticate(
    db: Database, token: str | None, *, last_used_resolution_s: int = 60, mcp: bool = False
) -> Principal:
    """Resolve a bearer token into a `Principal`, or raise `Unauthorized` saying why; `mcp`:
    the key is used at the MCP endpoint, and its last MCP call is recorded too."""
    if not token:
        raise Unauthorized(
            "Send an API key as 'Authorization: Bearer <key>'; create one with "
            "`trailmap key create`.",
            error="invalid_request",
        )
    if not tokens.is_well_formed(token, tokens.API_KEY_PREFIX):
        raise Unauthorized(
            "That is not a Trailmap API key (they start with tmk_ and carry a checksum); "
            "check that it was copied whole."
        )
    digest = tokens.hash_token(token)
    row = await db.read_point(store.find_key_by_hash, digest)
    if row is None or not tokens.tokens_match(token, row["token_hash"]):
        raise Unauthorized("This API key is not known; it may have been deleted.")
    now_us = clock.now_us()
    if row["revoked_us"] is not None:
        raise Unauthorized("This API key was revoked; create a new one.")
    if row["expires_us"] is not None and row["expires_us"] <= now_us:
        raise Unauthorized("This API key has expired; create a new one.")
    if row["user_id"] is not None and (row["user_role"] is None or row["user_disabled_us"]):
        # Removal and disabling revoke personal keys; this holds even if one was missed.
        raise Unauthorized("This API key's owner is no longer a member; create a new one.")
    last_used = row["last_mcp_us"] if mcp else row["last_used_us"]
    if last_used is None or now_us - last_used >= last_used_resolution_s * 1_000_000:
        await db.write(store.touch_key, row["org_id"], row["id"], now_us, mcp=mcp)
    return key_principal(
        row, scope=row["scope"], key_id=row["id"], key_name=row["name"], role=row["user_role"]
    )


def key_principal(
    org: dict[str, Any], *, scope: str, key_id: str, key_name: str, role: str | None = None
) -> Principal:
    """Who a key (or an OAuth token minted through one) speaks for. `org` holds the
    organization's `org_id`, `org_slug`, `org_plan`, `org_retention_days` and the key's
    `user_id`, as the lookups by hash return them."""
    plan = get_plan(org["org_plan"])
    return Principal(
        org_id=org["org_id"],
        org_slug=org["org_slug"],
        plan=plan,
        retention_days=retention_days_for(plan, org["org_retention_days"]),
        scope=cast("Scope", scope),
        key_id=key_id,
        key_name=key_name,
        user_id=org["user_id"],
        role=cast("Role | None", role),
    )
