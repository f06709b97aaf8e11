"""OAuth's purge, on each database: rows past their time go, live ones stay, and a client
someone uses is never taken for a left-over registration."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from mcp.server.auth.provider import AuthorizationParams
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import AnyUrl

from tests.factories import make_org
from trailmap import clock
from trailmap.accounts import add_user
from trailmap.accounts.tokens import hash_token
from trailmap.cli.main import cli
from trailmap.jobs.retention import purge_expired
from trailmap.oauth import TrailmapOAuthProvider
from trailmap.oauth.provider import (
    ACCESS_TOKEN_SECONDS,
    CODE_SECONDS,
    METADATA_STALE_SECONDS,
    REFRESH_TOKEN_SECONDS,
    REQUEST_SECONDS,
    TrailmapAuthorizationCode,
    TrailmapRefreshToken,
)
from trailmap.oauth.retention import (
    CODE_KEPT_SECONDS,
    UNUSED_CLIENT_SECONDS,
    OAuthPurge,
    purge_oauth,
)
from trailmap.storage import Connection, Database
from trailmap.storage import oauth as store

pytestmark = pytest.mark.anyio

ISSUER = "https://trailmap.example"
CALLBACK = "https://claude.ai/api/mcp/auth_callback"
_S = 1_000_000  # microseconds in a second


class Clock:
    """`trailmap.clock.now_us`, stopped at a start and moved by the test alone."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.start_us = clock.now_us()
        self.now = self.start_us
        monkeypatch.setattr(clock, "now_us", lambda: self.now)

    def at(self, seconds: float) -> int:
        """Set the time to `seconds` after the start; returns it in microseconds."""
        self.now = self.start_us + int(seconds * _S)
        return self.now


class World:
    def __init__(self, db: Database, provider: TrailmapOAuthProvider, user_id: str) -> None:
        self.db = db
        self.provider = provider
        self.user_id = user_id

    async def client(self, client_id: str) -> OAuthClientInformationFull:
        await self.provider.register_client(
            OAuthClientInformationFull(
                client_id=client_id,
                client_name=client_id,
                redirect_uris=[AnyUrl(CALLBACK)],
                token_endpoint_auth_method="none",
            )
        )
        client = await self.provider.get_client(client_id)
        assert client is not None
        return client

    async def request(self, client: OAuthClientInformationFull) -> str:
        consent = await self.provider.authorize(
            client,
            AuthorizationParams(
                state="xyz",
                scopes=["read"],
                code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGjSstw-cM",
                redirect_uri=AnyUrl(CALLBACK),
                redirect_uri_provided_explicitly=True,
                resource=f"{ISSUER}/mcp",
            ),
        )
        return parse_qs(urlsplit(consent).query)["request"][0]

    async def code(self, client: OAuthClientInformationFull) -> str:
        request_id = await self.request(client)
        approval = await self.provider.approve(request_id, user_id=self.user_id, org_slug="acme")
        return parse_qs(urlsplit(approval.redirect_to).query)["code"][0]

    async def tokens(self, client: OAuthClientInformationFull) -> tuple[str, str]:
        loaded = await self.provider.load_authorization_code(client, await self.code(client))
        assert isinstance(loaded, TrailmapAuthorizationCode)
        issued = await self.provider.exchange_authorization_code(client, loaded)
        assert issued.refresh_token is not None
        return issued.access_token, issued.refresh_token

    async def rotate(self, client: OAuthClientInformationFull, refresh: str) -> tuple[str, str]:
        loaded = await self.provider.load_refresh_token(client, refresh)
        assert isinstance(loaded, TrailmapRefreshToken)
        issued = await self.provider.exchange_refresh_token(client, loaded, [])
        assert issued.refresh_token is not None
        return issued.access_token, issued.refresh_token


@pytest.fixture
async def world(db: Database) -> World:
    await make_org(db, slug="acme")
    user = await add_user(db, "sre@acme.example", org_slug="acme", password="correct horse")
    provider = TrailmapOAuthProvider(
        db, issuer=ISSUER, resource=f"{ISSUER}/mcp", consent_path="/consent"
    )
    return World(db, provider, user.id)


def _column(db: Database, table: str, column: str) -> set[str]:
    def read(conn: Connection) -> set[str]:
        return {row[0] for row in conn.exec_driver_sql(f"SELECT {column} FROM {table}")}  # noqa: S608 - the test's own names

    return db.read_sync(read)


async def test_requests_that_expired_awaiting_consent_go_and_waiting_ones_stay(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Clock(monkeypatch)
    client = await world.client("app")
    expired = await world.request(client)
    time.at(600)
    waiting = await world.request(client)

    assert await purge_oauth(world.db, time.at(REQUEST_SECONDS - 1)) == OAuthPurge()
    assert await purge_oauth(world.db, time.at(REQUEST_SECONDS)) == OAuthPurge(requests=1)
    assert len(_column(world.db, "oauth_requests", "request_hash")) == 1
    _client, params = await world.provider.pending(waiting)
    assert params["state"] == "xyz"
    with pytest.raises(Exception, match="unknown or has expired"):
        await world.provider.pending(expired)


async def test_codes_go_a_day_after_they_expire_used_or_not(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Clock(monkeypatch)
    client = await world.client("app")
    await world.tokens(client)  # a used code
    await world.code(client)  # an unused one
    time.at(CODE_SECONDS)
    await world.code(client)  # younger by CODE_SECONDS
    gone_at = CODE_SECONDS + CODE_KEPT_SECONDS

    assert (await purge_oauth(world.db, time.at(gone_at))).codes == 0
    assert (await purge_oauth(world.db, time.at(gone_at + 1))).codes == 2
    assert len(_column(world.db, "oauth_codes", "code_hash")) == 1
    assert (await purge_oauth(world.db, time.at(gone_at + CODE_SECONDS + 1))).codes == 1


async def test_a_replayed_code_still_revokes_its_grant_a_day_after_the_code_expired(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Clock(monkeypatch)
    client = await world.client("app")
    code = await world.code(client)
    loaded = await world.provider.load_authorization_code(client, code)
    assert isinstance(loaded, TrailmapAuthorizationCode)
    issued = await world.provider.exchange_authorization_code(client, loaded)

    time.at(CODE_SECONDS + CODE_KEPT_SECONDS - 60)
    await purge_oauth(world.db, clock.now_us())
    assert await world.provider.load_authorization_code(client, code) is None
    assert await world.provider.load_refresh_token(client, issued.refresh_token or "") is None


async def test_expired_and_revoked_tokens_go_and_a_spent_refresh_token_stays_until_it_expires(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Clock(monkeypatch)
    client = await world.client("app")
    first_access, first_refresh = await world.tokens(client)
    time.at(600)
    access, refresh = await world.rotate(client, first_refresh)  # first_refresh is spent
    other = await world.client("other")
    revoked_access, revoked_refresh = await world.tokens(other)
    loaded = await world.provider.load_refresh_token(other, revoked_refresh)
    assert loaded is not None
    await world.provider.revoke_token(loaded)

    purged = await purge_oauth(world.db, time.at(ACCESS_TOKEN_SECONDS))
    assert purged.tokens == 3  # the first access token (expired), and the revoked pair
    assert await world.provider.load_access_token(access) is not None
    # The spent refresh token is still there to give a thief away: presenting it revokes
    # the grant it was rotated into.
    assert await world.provider.load_refresh_token(client, first_refresh) is None
    assert await world.provider.load_access_token(access) is None
    assert await world.provider.load_refresh_token(client, refresh) is None
    kept = _column(world.db, "oauth_tokens", "token_hash")
    assert {hash_token(first_access), hash_token(revoked_access)}.isdisjoint(kept)

    # Revoked now, the whole grant goes at the next purge.
    assert (await purge_oauth(world.db, time.at(ACCESS_TOKEN_SECONDS + 1))).tokens == 3
    assert _column(world.db, "oauth_tokens", "token_hash") == set()


async def test_a_live_grant_keeps_its_tokens_until_each_expires(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Clock(monkeypatch)
    client = await world.client("app")
    _access, refresh = await world.tokens(client)
    time.at(600)
    access, refresh = await world.rotate(client, refresh)

    purged = await purge_oauth(world.db, time.at(600 + ACCESS_TOKEN_SECONDS - 1))
    assert purged.tokens == 1  # the first access token; the rotated pair and the spent one stay
    assert await world.provider.load_access_token(access) is not None
    assert len(_column(world.db, "oauth_tokens", "token_hash")) == 3

    purged = await purge_oauth(world.db, time.at(REFRESH_TOKEN_SECONDS))
    assert purged.tokens == 2  # the spent refresh token and the live access token expired
    assert await world.provider.load_refresh_token(client, refresh) is not None
    assert (await purge_oauth(world.db, time.at(600 + REFRESH_TOKEN_SECONDS))).tokens == 1


async def test_a_registration_nobody_used_within_a_day_goes_and_clients_in_use_stay(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Clock(monkeypatch)
    await world.client("unused")
    with_tokens = await world.client("with-tokens")
    await world.tokens(with_tokens)
    approved = await world.client("approved")
    await world.code(approved)  # approved (a key names it), its code never exchanged
    waiting = await world.client("waiting")
    time.at(UNUSED_CLIENT_SECONDS / 2)
    await world.client("young")
    time.at(UNUSED_CLIENT_SECONDS - 60)
    await world.request(waiting)  # awaiting consent when the day is up

    assert (await purge_oauth(world.db, time.at(UNUSED_CLIENT_SECONDS))).clients == 0
    assert (await purge_oauth(world.db, time.at(UNUSED_CLIENT_SECONDS + 1))).clients == 1
    assert _column(world.db, "oauth_clients", "client_id") == {
        "with-tokens",
        "approved",
        "waiting",
        "young",
    }
    # Long after its tokens expired and went, a client someone approved stays registered.
    later = await purge_oauth(world.db, time.at(REFRESH_TOKEN_SECONDS + 2 * UNUSED_CLIENT_SECONDS))
    assert later.clients == 2  # "waiting" and "young", never approved
    assert _column(world.db, "oauth_clients", "client_id") == {"with-tokens", "approved"}
    assert _column(world.db, "oauth_tokens", "token_hash") == set()
    assert await world.provider.get_client("with-tokens") is not None


async def test_a_cached_metadata_document_goes_once_it_is_too_old_to_be_served(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Clock(monkeypatch)
    url = "https://agent.example/client.json"

    def cache(conn: Connection) -> None:
        info = {"client_id": url, "redirect_uris": [CALLBACK]}
        store.save_metadata_client(
            conn,
            {
                "client_id": url,
                "kind": "metadata",
                "secret_hash": None,
                "info": info,
                "created_us": clock.now_us(),
                "fetched_us": clock.now_us(),
            },
        )

    await world.db.write(cache)
    assert (await purge_oauth(world.db, time.at(METADATA_STALE_SECONDS))).clients == 0
    assert (await purge_oauth(world.db, time.at(METADATA_STALE_SECONDS + 1))).clients == 1
    assert _column(world.db, "oauth_clients", "client_id") == set()


async def test_the_retention_job_purges_oauth_and_reports_each_kind(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Clock(monkeypatch)
    client = await world.client("unused")
    await world.request(client)
    report = await purge_expired(
        world.db, now=clock.from_us(time.at(UNUSED_CLIENT_SECONDS + REQUEST_SECONDS))
    )
    assert report.oauth == OAuthPurge(requests=1, clients=1)
    assert report.deleted == 0


def test_trailmap_db_purge_says_what_oauth_rows_it_deleted(database_url: str, db: Database) -> None:
    def old_client(conn: Connection) -> None:
        store.insert_client(
            conn,
            {
                "client_id": "left-over",
                "kind": "registered",
                "secret_hash": None,
                "info": {"client_id": "left-over", "redirect_uris": [CALLBACK]},
                "created_us": clock.to_us(datetime(2020, 1, 1, tzinfo=UTC)),
                "fetched_us": None,
            },
        )

    db.write_sync(old_client)
    purged = CliRunner().invoke(cli, ["--database", database_url, "db", "purge"])
    assert purged.exit_code == 0, purged.output
    assert "deleted 0 expired OAuth requests, 0 codes, 0 tokens and 1 unused clients" in (
        purged.stderr
    )
    assert _column(db, "oauth_clients", "client_id") == set()
