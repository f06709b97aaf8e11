"""API keys: the token format, the hash at rest, last-used, refusing expired and revoked keys."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from tests.conftest import Tenant
from tests.factories import make_org
from trailmap import clock
from trailmap.accounts import authenticate, create_key, list_keys, revoke_key
from trailmap.accounts.tokens import (
    ACCESS_TOKEN_PREFIX,
    API_KEY_PREFIX,
    display_prefix,
    hash_token,
    is_well_formed,
    mint_token,
)
from trailmap.errors import NotFound, Unauthorized
from trailmap.storage import Connection, Database

pytestmark = pytest.mark.anyio

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_FORMAT = re.compile(r"^tmk_(?P<body>[0-9A-Za-z]{43})(?P<checksum>[0-9A-Za-z]{6})$")


def base62(number: int, width: int) -> str:
    """Written out here rather than imported, so the format is checked against the spec."""
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _ALPHABET[rest] + digits
    return digits.rjust(width, "0")


def key_column(db: Database, column: str) -> object:
    def read(conn: Connection) -> object:
        return conn.exec_driver_sql(f"SELECT {column} FROM api_keys").scalar_one()  # noqa: S608 - a column name of this file

    return db.read_sync(read)


def shift_key_times(db: Database, assignment: str) -> None:
    db.write_sync(lambda conn: conn.exec_driver_sql(f"UPDATE api_keys SET {assignment}"))  # noqa: S608 - a constant of this file


async def new_key(db: Database, *, expires_in: timedelta | None = None) -> str:
    org = await make_org(db)
    _key, token = await create_key(
        db, org.slug, name="ci", scope="READ_WRITE", created_by="tests", expires_in=expires_in
    )
    return token


# -- the format ---------------------------------------------------------------------------------


def test_a_token_is_tmk_then_43_base62_characters_then_a_crc32_checksum() -> None:
    tokens = [mint_token() for _ in range(200)]
    assert len(set(tokens)) == 200
    for token in tokens:
        match = _FORMAT.match(token)
        assert match, token
        body = match["body"]
        assert match["checksum"] == base62(zlib.crc32(body.encode()), 6)
        assert is_well_formed(token)
        assert is_well_formed(token, API_KEY_PREFIX)


def test_the_body_carries_the_full_32_random_bytes() -> None:
    # 43 base62 digits hold any 256-bit number; leading zeros pad the small ones.
    values = [_decode(_body(mint_token())) for _ in range(200)]
    assert all(0 <= v < 2**256 for v in values)
    assert max(values) > 2**250  # drawn from the whole range, not a narrower one


def _body(token: str) -> str:
    match = _FORMAT.match(token)
    assert match, token
    return match["body"]


def _decode(text: str) -> int:
    number = 0
    for ch in text:
        number = number * 62 + _ALPHABET.index(ch)
    return number


def test_changing_any_one_character_breaks_the_checksum() -> None:
    token = mint_token()
    for position in range(len(API_KEY_PREFIX), len(token)):
        original = token[position]
        for replacement in (_ALPHABET[(_ALPHABET.index(original) + 1) % 62], "0", "z"):
            if replacement == original:
                continue
            changed = token[:position] + replacement + token[position + 1 :]
            assert not is_well_formed(changed), (position, replacement)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],  # one short
        lambda t: t + "0",  # one long
        lambda t: "tmx_" + t[4:],  # unknown prefix
        lambda t: t.upper(),  # prefix case
        lambda t: t[:10] + "-" + t[11:],  # outside the alphabet
        lambda t: t[:10] + "é" + t[11:],
        lambda t: " " + t,
        lambda _t: "",
    ],
)
def test_a_token_that_is_not_exactly_the_format_is_malformed(mangle: Callable[[str], str]) -> None:
    assert not is_well_formed(mangle(mint_token()))


def test_the_prefix_says_what_kind_of_token_it_is() -> None:
    access = mint_token(ACCESS_TOKEN_PREFIX)
    assert access.startswith("tma_")
    assert is_well_formed(access)
    assert not is_well_formed(access, API_KEY_PREFIX)


def test_the_display_prefix_is_too_short_to_use() -> None:
    token = mint_token()
    assert display_prefix(token) == token[:12]
    assert not is_well_formed(display_prefix(token))


# -- at rest ------------------------------------------------------------------------------------


async def test_a_key_is_stored_as_the_sha256_of_its_token_and_nothing_more(db: Database) -> None:
    token = await new_key(db)
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert hash_token(token) == digest
    assert key_column(db, "token_hash") == digest

    def every_value(conn: Connection) -> list[str]:
        return [str(v) for row in conn.exec_driver_sql("SELECT * FROM api_keys") for v in row]

    stored = db.read_sync(every_value)
    assert not any(token[len(API_KEY_PREFIX) :][:20] in value for value in stored)
    assert key_column(db, "prefix") == token[:12]


async def test_a_listed_key_has_no_secret_and_no_hash(db: Database) -> None:
    org = await make_org(db)
    _key, token = await create_key(db, org.slug, name="ci", scope="READ_ONLY", created_by="tests")
    (listed,) = await list_keys(db, org.slug)
    shown = repr(listed)
    assert token not in shown
    assert hash_token(token) not in shown
    assert not hasattr(listed, "token_hash")


# -- authentication -------------------------------------------------------------------------------


async def test_a_malformed_token_is_refused_before_any_lookup(db: Database) -> None:
    token = await new_key(db)
    broken = token[:-1] + ("0" if token[-1] != "0" else "1")
    with pytest.raises(Unauthorized, match=r"not a Trailmap API key .* copied whole"):
        await authenticate(db, broken)


async def test_a_well_formed_but_unknown_token_is_refused(db: Database) -> None:
    with pytest.raises(Unauthorized, match="This API key is not known"):
        await authenticate(db, mint_token())


async def test_no_token_at_all_says_how_to_send_one(db: Database) -> None:
    with pytest.raises(Unauthorized, match="Authorization: Bearer <key>"):
        await authenticate(db, None)


async def test_using_a_key_records_when_it_was_last_used(db: Database) -> None:
    token = await new_key(db)
    assert key_column(db, "last_used_us") is None
    before = clock.now_us()
    principal = await authenticate(db, token)
    after = clock.now_us()
    assert principal.scope == "READ_WRITE"
    first = key_column(db, "last_used_us")
    assert isinstance(first, int)
    assert before <= first <= after


async def test_last_used_is_not_rewritten_on_every_call_within_the_resolution(
    db: Database,
) -> None:
    token = await new_key(db)
    await authenticate(db, token, last_used_resolution_s=60)
    first = key_column(db, "last_used_us")
    await authenticate(db, token, last_used_resolution_s=60)
    assert key_column(db, "last_used_us") == first

    # 30 s ago is still within a 60 s resolution: no write.
    shift_key_times(db, "last_used_us = last_used_us - 30000000")
    shifted = key_column(db, "last_used_us")
    await authenticate(db, token, last_used_resolution_s=60)
    assert key_column(db, "last_used_us") == shifted

    # 61 s ago is past it: the next use records the time again.
    shift_key_times(db, "last_used_us = last_used_us - 31000000")
    before = clock.now_us()
    await authenticate(db, token, last_used_resolution_s=60)
    refreshed = key_column(db, "last_used_us")
    assert isinstance(refreshed, int)
    assert refreshed >= before


async def test_an_expired_key_is_refused_saying_it_expired(db: Database) -> None:
    token = await new_key(db, expires_in=timedelta(days=90))
    expires = key_column(db, "expires_us")
    created = key_column(db, "created_us")
    assert isinstance(expires, int)
    assert isinstance(created, int)
    assert expires - created == 90 * 86_400 * 1_000_000
    await authenticate(db, token)

    shift_key_times(db, "expires_us = created_us")
    with pytest.raises(Unauthorized) as raised:
        await authenticate(db, token)
    assert raised.value.message == "This API key has expired; create a new one."


async def test_a_revoked_key_is_refused_saying_it_was_revoked(db: Database) -> None:
    org = await make_org(db)
    key, token = await create_key(db, org.slug, name="ci", scope="READ_ONLY", created_by="t")
    await authenticate(db, token)
    revoked = await revoke_key(db, key.id)
    assert revoked.status == "revoked"
    with pytest.raises(Unauthorized) as raised:
        await authenticate(db, token)
    assert raised.value.message == "This API key was revoked; create a new one."
    assert (await list_keys(db, org.slug))[0].status == "revoked"


async def test_a_key_cannot_be_revoked_through_another_organization(db: Database) -> None:
    mine = await make_org(db)
    theirs = await make_org(db)
    key, token = await create_key(db, theirs.slug, name="ci", scope="READ_ONLY", created_by="t")
    with pytest.raises(NotFound):
        await revoke_key(db, key.id, org_id=mine.id)
    assert (await authenticate(db, token)).org_id == theirs.id


async def test_an_expired_and_a_revoked_key_get_distinct_401s_over_http(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    keys = {k.scope: k for k in await list_keys(db, tenant.org.slug)}
    await revoke_key(db, keys["READ_ONLY"].id)
    # Expire the writer only: its id is the one not revoked.
    db.write_sync(
        lambda conn: conn.exec_driver_sql(
            "UPDATE api_keys SET expires_us = created_us WHERE revoked_us IS NULL"
        )
    )
    revoked = await client.get("/api/v1/events", headers=tenant.auth(tenant.reader))
    expired = await client.get("/api/v1/events", headers=tenant.auth(tenant.writer))
    for response in (revoked, expired):
        assert response.status_code == 401
        assert response.json()["code"] == "UNAUTHORIZED"
        assert response.headers["www-authenticate"].startswith('Bearer realm="trailmap"')
    assert "revoked" in revoked.json()["error"]
    assert "expired" in expired.json()["error"]
    assert revoked.json()["error"] != expired.json()["error"]


async def test_a_read_only_key_cannot_push_events(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(
        "/api/v1/events",
        json={"specversion": "1.0", "type": "deployment", "source": "//ci", "time": "NOW"},
        headers=tenant.auth(tenant.reader),
    )
    assert response.status_code == 403
    assert response.json()["code"] == "FORBIDDEN"
    assert "READ_WRITE" in response.json()["error"]
