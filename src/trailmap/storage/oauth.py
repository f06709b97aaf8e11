"""Queries for OAuth: clients, pending authorization requests, codes and tokens, each found by
its SHA-256 and live only while its API key is (docs/internals.md)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, insert, or_, select, update

from trailmap.storage.dialect import upsert
from trailmap.storage.tables import (
    api_keys,
    oauth_clients,
    oauth_codes,
    oauth_requests,
    oauth_tokens,
    organizations,
)

__all__ = [
    "count_requests",
    "find_mcp_key",
    "get_client",
    "get_code",
    "get_request",
    "get_token",
    "insert_client",
    "insert_code",
    "insert_request",
    "insert_tokens",
    "key_of_token",
    "purge_clients",
    "purge_codes",
    "purge_requests",
    "purge_tokens",
    "revoke_family",
    "save_metadata_client",
    "spend_client_code",
    "spend_code",
    "spend_refresh_token",
    "take_request",
]

Row = dict[str, Any]


def insert_client(conn: Connection, row: Row) -> None:
    conn.execute(insert(oauth_clients).values(**row))


def save_metadata_client(conn: Connection, row: Row) -> None:
    """Cache (or refresh) a client described by a Client ID Metadata Document."""
    conn.execute(
        upsert(
            conn,
            oauth_clients,
            row,
            ["client_id"],
            {"info": row["info"], "fetched_us": row["fetched_us"]},
        )
    )


def get_client(conn: Connection, client_id: str) -> Row | None:
    row = conn.execute(select(oauth_clients).where(oauth_clients.c.client_id == client_id)).first()
    return dict(row._mapping) if row else None


def insert_request(conn: Connection, row: Row) -> None:
    conn.execute(insert(oauth_requests).values(**row))


def count_requests(conn: Connection, client_id: str, now_us: int) -> int:
    """How many of the client's requests await consent and have not expired."""
    stmt = select(func.count()).where(
        oauth_requests.c.client_id == client_id, oauth_requests.c.expires_us > now_us
    )
    return int(conn.execute(stmt).scalar_one())


def get_request(conn: Connection, request_hash: str, now_us: int) -> Row | None:
    row = conn.execute(
        select(oauth_requests).where(
            oauth_requests.c.request_hash == request_hash, oauth_requests.c.expires_us > now_us
        )
    ).first()
    return dict(row._mapping) if row else None


def take_request(conn: Connection, request_hash: str, now_us: int) -> Row | None:
    """The pending request, removed: it is answered (approved or denied) exactly once."""
    found = get_request(conn, request_hash, now_us)
    result = conn.execute(
        delete(oauth_requests).where(oauth_requests.c.request_hash == request_hash)
    )
    return found if result.rowcount == 1 else None


def find_mcp_key(
    conn: Connection, org_id: str, client_id: str, user_id: str, name: str
) -> Row | None:
    """The live key approval minted earlier for this user and organization: for this client,
    or else for another registration of the same app (an approval key of the same name)."""
    same_client = api_keys.c.oauth_client_id == client_id
    same_app = and_(api_keys.c.oauth_client_id.is_not(None), api_keys.c.name == name)
    row = conn.execute(
        select(api_keys)
        .where(
            api_keys.c.org_id == org_id,
            api_keys.c.user_id == user_id,
            api_keys.c.revoked_us.is_(None),
            or_(same_client, same_app),
        )
        .order_by(case((same_client, 0), else_=1), api_keys.c.created_us)
    ).first()
    return dict(row._mapping) if row else None


def insert_code(conn: Connection, row: Row) -> None:
    conn.execute(insert(oauth_codes).values(**row))


_LIVE_KEY = api_keys.c.revoked_us.is_(None)


def get_code(conn: Connection, code_hash: str) -> Row | None:
    """The code, used or not, if its key is live (the caller judges use and expiry)."""
    row = conn.execute(
        select(oauth_codes)
        .join(
            api_keys,
            and_(api_keys.c.org_id == oauth_codes.c.org_id, api_keys.c.id == oauth_codes.c.key_id),
        )
        .where(oauth_codes.c.code_hash == code_hash, _LIVE_KEY)
    ).first()
    return dict(row._mapping) if row else None


def spend_code(conn: Connection, code_hash: str, now_us: int) -> bool:
    """Mark the code used; true for exactly one caller, however many race."""
    result = conn.execute(
        update(oauth_codes)
        .where(oauth_codes.c.code_hash == code_hash, oauth_codes.c.used_us.is_(None))
        .values(used_us=now_us)
    )
    return result.rowcount == 1


def spend_client_code(conn: Connection, code_hash: str, client_id: str, now_us: int) -> bool:
    """Mark the code used if it is this client's and unused (a refused redemption)."""
    result = conn.execute(
        update(oauth_codes)
        .where(
            oauth_codes.c.code_hash == code_hash,
            oauth_codes.c.client_id == client_id,
            oauth_codes.c.used_us.is_(None),
        )
        .values(used_us=now_us)
    )
    return result.rowcount == 1


def insert_tokens(conn: Connection, rows: list[Row]) -> None:
    conn.execute(insert(oauth_tokens), rows)


def get_token(conn: Connection, token_hash: str, kind: str) -> Row | None:
    """The token with its organization, if its key is live; spent, revoked or expired
    tokens are returned too, for the caller to judge (a spent refresh token is a theft)."""
    row = conn.execute(
        select(
            oauth_tokens,
            api_keys.c.scope.label("key_scope"),
            api_keys.c.name.label("key_name"),
            api_keys.c.expires_us.label("key_expires_us"),
            api_keys.c.last_used_us.label("key_last_used_us"),
            api_keys.c.last_mcp_us.label("key_last_mcp_us"),
            organizations.c.slug.label("org_slug"),
            organizations.c.plan.label("org_plan"),
            organizations.c.retention_days.label("org_retention_days"),
        )
        .join(
            api_keys,
            and_(
                api_keys.c.org_id == oauth_tokens.c.org_id, api_keys.c.id == oauth_tokens.c.key_id
            ),
        )
        .join(organizations, organizations.c.id == oauth_tokens.c.org_id)
        .where(oauth_tokens.c.token_hash == token_hash, oauth_tokens.c.kind == kind, _LIVE_KEY)
    ).first()
    return dict(row._mapping) if row else None


def key_of_token(conn: Connection, token_hash: str) -> Row | None:
    """The organization and API key an access or refresh token was minted through, whatever
    the token's or the key's state (for `trailmap key revoke --token`)."""
    row = conn.execute(
        select(oauth_tokens.c.org_id, oauth_tokens.c.key_id).where(
            oauth_tokens.c.token_hash == token_hash
        )
    ).first()
    return dict(row._mapping) if row else None


def spend_refresh_token(conn: Connection, token_hash: str, now_us: int) -> bool:
    """Mark a refresh token spent (rotated); true for exactly one caller."""
    result = conn.execute(
        update(oauth_tokens)
        .where(
            oauth_tokens.c.token_hash == token_hash,
            oauth_tokens.c.kind == "refresh",
            oauth_tokens.c.spent_us.is_(None),
            oauth_tokens.c.revoked_us.is_(None),
        )
        .values(spent_us=now_us)
    )
    return result.rowcount == 1


def revoke_family(conn: Connection, family_id: str, now_us: int) -> int:
    """Revoke every token issued from one authorization; returns how many were live."""
    result = conn.execute(
        update(oauth_tokens)
        .where(
            oauth_tokens.c.family_id == family_id,
            oauth_tokens.c.revoked_us.is_(None),
        )
        .values(revoked_us=now_us)
    )
    return int(result.rowcount)


# -- purges: each deletes up to `chunk` rows past their time, the caller repeats until 0 --


def purge_requests(conn: Connection, now_us: int, *, chunk: int = 5000) -> int:
    """Requests that expired awaiting consent."""
    doomed = (
        select(oauth_requests.c.request_hash)
        .where(oauth_requests.c.expires_us <= now_us)
        .limit(chunk)
        .scalar_subquery()
    )
    result = conn.execute(delete(oauth_requests).where(oauth_requests.c.request_hash.in_(doomed)))
    return int(result.rowcount or 0)


def purge_codes(conn: Connection, expired_before_us: int, *, chunk: int = 5000) -> int:
    """Codes, used or not, that expired before `expired_before_us`."""
    doomed = (
        select(oauth_codes.c.code_hash)
        .where(oauth_codes.c.expires_us < expired_before_us)
        .limit(chunk)
        .scalar_subquery()
    )
    result = conn.execute(delete(oauth_codes).where(oauth_codes.c.code_hash.in_(doomed)))
    return int(result.rowcount or 0)


def purge_tokens(conn: Connection, now_us: int, *, chunk: int = 5000) -> int:
    """Tokens that can never be accepted again: expired or revoked. A spent refresh token
    stays until then: presenting it again is how a theft is noticed (the whole grant is
    revoked), and its grant lives on in the token that replaced it."""
    doomed = (
        select(oauth_tokens.c.token_hash)
        .where(or_(oauth_tokens.c.expires_us <= now_us, oauth_tokens.c.revoked_us.is_not(None)))
        .limit(chunk)
        .scalar_subquery()
    )
    result = conn.execute(delete(oauth_tokens).where(oauth_tokens.c.token_hash.in_(doomed)))
    return int(result.rowcount or 0)


def purge_clients(
    conn: Connection,
    *,
    registered_before_us: int,
    fetched_before_us: int,
    now_us: int,
    chunk: int = 5000,
) -> int:
    """Registered clients older than `registered_before_us` that nobody approved (no API key
    names them) and that hold no token, and cached metadata documents fetched before
    `fetched_before_us` (no longer served from the cache; fetched again when named). A
    client with a request still awaiting consent stays either way."""
    # NOT IN lists of distinct client ids, each read once per statement: SQLite builds each
    # list once (a correlated NOT EXISTS would scan the tokens per client, there being no
    # index on client_id), and PostgreSQL hashes it, the distinct clients being few. The
    # columns are NOT NULL, or filtered so, as NOT IN needs.
    approved = (
        select(api_keys.c.oauth_client_id).where(api_keys.c.oauth_client_id.is_not(None)).distinct()
    )
    holding = select(oauth_tokens.c.client_id).distinct()
    waiting = (
        select(oauth_requests.c.client_id).where(oauth_requests.c.expires_us > now_us).distinct()
    )
    client = oauth_clients.c.client_id
    unused_registration = and_(
        oauth_clients.c.kind == "registered",
        oauth_clients.c.created_us < registered_before_us,
        client.not_in(approved),
        client.not_in(holding),
    )
    stale_document = and_(
        oauth_clients.c.kind == "metadata", oauth_clients.c.fetched_us < fetched_before_us
    )
    doomed = (
        select(oauth_clients.c.client_id)
        .where(
            or_(unused_registration, stale_document),
            client.not_in(waiting),
        )
        .limit(chunk)
        .scalar_subquery()
    )
    result = conn.execute(delete(oauth_clients).where(oauth_clients.c.client_id.in_(doomed)))
    return int(result.rowcount or 0)
