"""The OAuth provider's own rules (RFC 9700), on each database: codes, tokens, keys.

The SDK's handlers (PKCE, client authentication) are exercised end to end once the routes
are mounted; here the provider is driven through the protocol methods the SDK calls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
from mcp.server.auth.provider import (
    AuthorizationParams,
    AuthorizeError,
    RegistrationError,
    TokenError,
)
from mcp.shared.auth import InvalidRedirectUriError, OAuthClientInformationFull
from pydantic import AnyUrl

from tests.factories import make_org
from trailmap.accounts import add_user, list_keys, revoke_key
from trailmap.errors import Forbidden
from trailmap.oauth import TrailmapOAuthProvider
from trailmap.oauth.provider import TrailmapAuthorizationCode, TrailmapRefreshToken
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

ISSUER = "https://trailmap.example"
RESOURCE = f"{ISSUER}/mcp"
CALLBACK = "https://claude.ai/api/mcp/auth_callback"


@dataclass
class World:
    provider: TrailmapOAuthProvider
    client: OAuthClientInformationFull
    user_id: str
    org: str


@pytest.fixture
async def world(db: Database) -> World:
    provider = TrailmapOAuthProvider(db, issuer=ISSUER, resource=RESOURCE, consent_path="/consent")
    org = await make_org(db, slug="acme")
    user = await add_user(db, "sre@acme.example", org_slug=org.slug, password="correct horse")
    await provider.register_client(
        OAuthClientInformationFull(
            client_id="claude-client",
            client_name="Claude.ai",
            redirect_uris=[AnyUrl(CALLBACK), AnyUrl("http://127.0.0.1:33418/callback")],
            token_endpoint_auth_method="none",
        )
    )
    client = await provider.get_client("claude-client")
    assert client is not None
    return World(provider, client, user.id, org.slug)


def _params(**overrides: object) -> AuthorizationParams:
    values: dict[str, object] = {
        "state": "xyz",
        "scopes": ["read"],
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGjSstw-cM",
        "redirect_uri": AnyUrl(CALLBACK),
        "redirect_uri_provided_explicitly": True,
        "resource": RESOURCE,
    }
    values.update(overrides)
    return AuthorizationParams.model_validate(values)


async def _approved_code(w: World, **overrides: object) -> tuple[str, dict[str, list[str]]]:
    consent = await w.provider.authorize(w.client, _params(**overrides))
    request_id = parse_qs(urlsplit(consent).query)["request"][0]
    approval = await w.provider.approve(request_id, user_id=w.user_id, org_slug=w.org)
    query = parse_qs(urlsplit(approval.redirect_to).query)
    return query["code"][0], query


async def _tokens(w: World) -> tuple[str, str]:
    code, _ = await _approved_code(w)
    loaded = await w.provider.load_authorization_code(w.client, code)
    assert isinstance(loaded, TrailmapAuthorizationCode)
    issued = await w.provider.exchange_authorization_code(w.client, loaded)
    assert issued.refresh_token is not None
    return issued.access_token, issued.refresh_token


async def test_approval_returns_the_code_with_state_and_issuer(world: World) -> None:
    code, query = await _approved_code(world)
    assert query["state"] == ["xyz"]
    assert query["iss"] == [ISSUER]
    assert code


async def test_approval_mints_one_read_only_key_named_after_the_client_and_reuses_it(
    world: World, db: Database
) -> None:
    await _tokens(world)
    await _tokens(world)
    keys = [k for k in await list_keys(db, world.org) if k.name.startswith("MCP")]
    assert [(k.name, k.scope) for k in keys] == [("MCP — Claude.ai", "READ_ONLY")]


async def test_an_access_token_speaks_for_the_organization_read_only(world: World) -> None:
    access, _refresh = await _tokens(world)
    loaded = await world.provider.load_access_token(access)
    assert loaded is not None
    assert loaded.principal.org_slug == world.org
    assert loaded.principal.scope == "READ_ONLY"
    assert loaded.resource == RESOURCE
    assert access.startswith("tma_")


async def test_deleting_the_key_revokes_every_token_at_once(world: World, db: Database) -> None:
    access, refresh = await _tokens(world)
    (key,) = [k for k in await list_keys(db, world.org) if k.name.startswith("MCP")]
    await revoke_key(db, key.id)
    assert await world.provider.load_access_token(access) is None
    assert await world.provider.load_refresh_token(world.client, refresh) is None


async def test_a_code_works_once_and_its_replay_revokes_what_it_issued(world: World) -> None:
    code, _ = await _approved_code(world)
    loaded = await world.provider.load_authorization_code(world.client, code)
    assert isinstance(loaded, TrailmapAuthorizationCode)
    issued = await world.provider.exchange_authorization_code(world.client, loaded)
    assert await world.provider.load_access_token(issued.access_token) is not None

    assert await world.provider.load_authorization_code(world.client, code) is None
    assert await world.provider.load_access_token(issued.access_token) is None


async def test_two_exchanges_of_one_code_racing_give_one_grant_and_then_none(
    world: World,
) -> None:
    code, _ = await _approved_code(world)
    loaded = await world.provider.load_authorization_code(world.client, code)
    assert isinstance(loaded, TrailmapAuthorizationCode)
    results = await asyncio.gather(
        world.provider.exchange_authorization_code(world.client, loaded),
        world.provider.exchange_authorization_code(world.client, loaded),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, TokenError)]
    assert len(errors) == 1
    assert errors[0].error == "invalid_grant"
    (granted,) = [r for r in results if not isinstance(r, BaseException)]
    # The loser's replay revoked the winner's grant too: a raced code is a stolen code.
    assert await world.provider.load_access_token(granted.access_token) is None


async def test_refresh_rotates_and_reusing_a_spent_refresh_token_revokes_the_family(
    world: World,
) -> None:
    access, refresh = await _tokens(world)
    loaded = await world.provider.load_refresh_token(world.client, refresh)
    assert isinstance(loaded, TrailmapRefreshToken)
    rotated = await world.provider.exchange_refresh_token(world.client, loaded, [])
    assert rotated.refresh_token not in (None, refresh)
    assert await world.provider.load_access_token(rotated.access_token) is not None

    assert await world.provider.load_refresh_token(world.client, refresh) is None  # spent
    assert await world.provider.load_access_token(rotated.access_token) is None
    assert await world.provider.load_access_token(access) is None


async def test_a_token_is_bound_to_this_servers_mcp_resource(world: World) -> None:
    with pytest.raises(AuthorizeError) as refused:
        await world.provider.authorize(world.client, _params(resource="https://evil.example/mcp"))
    assert refused.value.error == "invalid_target"
    access, _ = await _tokens(world)
    loaded = await world.provider.load_access_token(access)
    assert loaded is not None
    assert loaded.resource == RESOURCE


async def test_loopback_redirects_match_on_any_port_and_others_exactly(world: World) -> None:
    client = world.client
    assert client.validate_redirect_uri(AnyUrl("http://127.0.0.1:50123/callback"))
    for refused in (
        "http://127.0.0.1:50123/elsewhere",
        "http://localhost:50123/callback",  # another host, even if also loopback
        "https://claude.ai:8443/api/mcp/auth_callback",
        "https://claude.ai/api/mcp/auth_callback/extra",
        "https://evil.example/api/mcp/auth_callback",
    ):
        with pytest.raises(InvalidRedirectUriError):
            client.validate_redirect_uri(AnyUrl(refused))


@pytest.mark.parametrize(
    "uri",
    ["javascript:alert(1)", "http://trailmap.example/callback", "https://a.example/cb#frag"],
)
async def test_registration_refuses_redirect_uris_that_are_not_https_or_loopback(
    world: World, uri: str
) -> None:
    with pytest.raises(RegistrationError) as refused:
        await world.provider.register_client(
            OAuthClientInformationFull(client_id=f"c-{uri[:5]}", redirect_uris=[AnyUrl(uri)])
        )
    assert refused.value.error == "invalid_redirect_uri"


async def test_approving_for_an_organization_the_user_is_not_in_is_refused(
    world: World, db: Database
) -> None:
    await make_org(db, slug="globex")
    consent = await world.provider.authorize(world.client, _params())
    request_id = parse_qs(urlsplit(consent).query)["request"][0]
    with pytest.raises(Forbidden):
        await world.provider.approve(request_id, user_id=world.user_id, org_slug="globex")
    with pytest.raises(Forbidden):
        await world.provider.approve(request_id, user_id=world.user_id, org_slug="no-such-org")


async def test_a_denial_sends_access_denied_with_state_and_issuer(world: World) -> None:
    consent = await world.provider.authorize(world.client, _params())
    request_id = parse_qs(urlsplit(consent).query)["request"][0]
    denial = await world.provider.deny(request_id)
    query = parse_qs(urlsplit(denial.redirect_to).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["xyz"]
    assert query["iss"] == [ISSUER]


async def test_client_secrets_are_stored_hashed(world: World, db: Database) -> None:
    await world.provider.register_client(
        OAuthClientInformationFull(
            client_id="confidential",
            client_secret="s3cret-value",
            redirect_uris=[AnyUrl(CALLBACK)],
            token_endpoint_auth_method="client_secret_post",
        )
    )
    stored = await world.provider.get_client("confidential")
    assert stored is not None
    assert stored.client_secret is not None
    assert "s3cret-value" not in stored.model_dump_json()
    assert len(stored.client_secret) == 64
