"""`trailmap key revoke --token`: a leaked token, read from stdin, revokes the key it belongs
to in whatever organization, on a real database of each backend."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner, Result
from mcp.server.auth.provider import AuthorizationParams
from mcp.shared.auth import OAuthClientInformationFull
from pydantic import AnyUrl

from tests.factories import make_org
from trailmap.accounts import add_user, authenticate, list_keys
from trailmap.accounts.tokens import mint_token
from trailmap.cli.main import cli
from trailmap.errors import Unauthorized
from trailmap.invocation import command
from trailmap.oauth import TrailmapOAuthProvider
from trailmap.oauth.provider import TrailmapAuthorizationCode
from trailmap.storage import Database

ISSUER = "https://trailmap.example"
CALLBACK = "https://claude.ai/api/mcp/auth_callback"


def invoke(database_url: str, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--database", database_url, *args], input=stdin)


def _key_token(database_url: str, org: str) -> str:
    assert invoke(database_url, "org", "create", org).exit_code == 0
    created = invoke(
        database_url, "key", "create", "--org", org, "--name", "ci", "--scope", "read-write"
    )
    assert created.exit_code == 0, created.output
    return created.stdout.strip()


def _status(db: Database, org: str) -> dict[str, str]:
    return {key.name: key.status for key in asyncio.run(list_keys(db, org))}


def _leaked_nowhere(result: Result, token: str) -> None:
    assert token not in result.stdout
    assert token not in result.stderr
    assert token[4:] not in result.stderr


def test_a_leaked_key_read_from_stdin_is_revoked_in_whatever_organization_it_belongs_to(
    database_url: str, db: Database
) -> None:
    assert invoke(database_url, "org", "create", "acme").exit_code == 0
    token = _key_token(database_url, "globex")
    key_id = asyncio.run(list_keys(db, "globex"))[0].id

    revoked = invoke(database_url, "key", "revoke", "--token", stdin=f"  {token}\n")

    assert revoked.exit_code == 0, revoked.output
    assert f"revoked key {key_id} (ci) of organization globex" in revoked.stderr
    _leaked_nowhere(revoked, token)
    with pytest.raises(Unauthorized, match="revoked"):
        asyncio.run(authenticate(db, token))
    assert _status(db, "globex") == {"ci": "revoked"}


def test_revoking_by_the_token_of_a_key_already_revoked_says_so_and_succeeds(
    database_url: str, db: Database
) -> None:
    token = _key_token(database_url, "acme")
    assert invoke(database_url, "key", "revoke", "--token", stdin=token).exit_code == 0

    again = invoke(database_url, "key", "revoke", "--token", stdin=token)

    assert again.exit_code == 0, again.output
    assert "(ci) of organization acme was already revoked" in again.stderr


def test_an_unknown_token_is_said_so_with_exit_code_1(database_url: str, db: Database) -> None:
    token = _key_token(database_url, "acme")
    unknown = mint_token()

    result = invoke(database_url, "key", "revoke", "--token", stdin=unknown)

    assert result.exit_code == 1
    assert "No API key or OAuth token of this installation matches that token" in result.stderr
    _leaked_nowhere(result, unknown)
    assert asyncio.run(authenticate(db, token)).org_slug == "acme"


@pytest.mark.parametrize("text", ["", "not a token", "tmk_" + "A" * 49], ids=repr)
def test_what_is_not_a_trailmap_token_is_refused_with_exit_code_1(
    database_url: str, text: str
) -> None:
    _key_token(database_url, "acme")

    result = invoke(database_url, "key", "revoke", "--token", stdin=text)

    assert result.exit_code == 1
    assert "That is not a Trailmap token" in result.stderr
    assert _status_by_url(database_url) == {"ci": "active"}


def _status_by_url(database_url: str) -> dict[str, str]:
    db = Database(database_url)
    try:
        return _status(db, "acme")
    finally:
        db.close()


@pytest.mark.parametrize(
    "args",
    [("--token", "{token}"), ("{token}",), ("{token}", "--token")],
    ids=["token-after-the-flag", "token-as-key-id", "token-before-the-flag"],
)
def test_a_token_on_the_command_line_is_refused_unread_and_nothing_is_revoked(
    database_url: str, db: Database, args: tuple[str, ...]
) -> None:
    token = _key_token(database_url, "acme")

    result = invoke(database_url, "key", "revoke", *(a.format(token=token) for a in args))

    assert result.exit_code == 2
    assert "That is a token, not a key id" in result.stderr
    assert command("key revoke --token") in result.stderr
    _leaked_nowhere(result, token)
    assert _status(db, "acme") == {"ci": "active"}


def test_key_revoke_wants_a_key_id_or_the_token_flag(database_url: str) -> None:
    neither = invoke(database_url, "key", "revoke")
    assert neither.exit_code == 2
    assert "Give a KEY_ID, or --token with the token on stdin" in neither.stderr
    both = invoke(database_url, "key", "revoke", "--token", "some-key-id", stdin="x")
    assert both.exit_code == 2
    assert "Give a KEY_ID or --token, not both" in both.stderr


async def _oauth_tokens(db: Database) -> tuple[str, str]:
    """An access and a refresh token that an MCP client got through approval for globex."""
    await make_org(db, slug="globex")
    user = await add_user(db, "sre@globex.example", org_slug="globex", password="correct horse")
    provider = TrailmapOAuthProvider(
        db, issuer=ISSUER, resource=f"{ISSUER}/mcp", consent_path="/consent"
    )
    await provider.register_client(
        OAuthClientInformationFull(
            client_id="claude",
            client_name="Claude.ai",
            redirect_uris=[AnyUrl(CALLBACK)],
            token_endpoint_auth_method="none",
        )
    )
    client = await provider.get_client("claude")
    assert client is not None
    consent = await provider.authorize(
        client,
        AuthorizationParams(
            state=None,
            scopes=["read"],
            code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGjSstw-cM",
            redirect_uri=AnyUrl(CALLBACK),
            redirect_uri_provided_explicitly=True,
            resource=f"{ISSUER}/mcp",
        ),
    )
    request_id = parse_qs(urlsplit(consent).query)["request"][0]
    approval = await provider.approve(request_id, user_id=user.id, org_slug="globex")
    code = parse_qs(urlsplit(approval.redirect_to).query)["code"][0]
    loaded = await provider.load_authorization_code(client, code)
    assert isinstance(loaded, TrailmapAuthorizationCode)
    issued = await provider.exchange_authorization_code(client, loaded)
    assert issued.refresh_token is not None
    return issued.access_token, issued.refresh_token


@pytest.mark.parametrize("kind", ["access", "refresh"])
def test_a_leaked_oauth_token_revokes_the_key_it_was_minted_through_and_every_token_with_it(
    database_url: str, db: Database, kind: str
) -> None:
    access, refresh = asyncio.run(_oauth_tokens(db))
    leaked = access if kind == "access" else refresh

    result = invoke(database_url, "key", "revoke", "--token", stdin=leaked + "\n")

    assert result.exit_code == 0, result.output
    assert "(MCP — Claude.ai) of organization globex" in result.stderr
    _leaked_nowhere(result, leaked)
    assert _status(db, "globex") == {"MCP — Claude.ai": "revoked"}
    provider = TrailmapOAuthProvider(
        db, issuer=ISSUER, resource=f"{ISSUER}/mcp", consent_path="/consent"
    )
    assert asyncio.run(provider.load_access_token(access)) is None
