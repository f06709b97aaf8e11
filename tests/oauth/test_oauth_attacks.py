"""Attacks on the authorization server, each refused, against the two-process stack."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from mcp.shared.auth import OAuthClientInformationFull

from tests.oauth.browser import Browser
from tests.oauth.conftest import OWNER, PASSWORD, Stack
from trailmap.accounts import add_user
from trailmap.oauth.provider import TrailmapOAuthProvider
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

CALLBACK = "https://app.example/callback"
_MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.decode().rstrip("=")


async def register(http: httpx.AsyncClient, stack: Stack, **metadata: Any) -> dict[str, Any]:
    body = {
        "client_name": "Attack test",
        "redirect_uris": [CALLBACK],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        **metadata,
    }
    response = await http.post(stack.public + "/register", json=body)
    assert response.status_code == 201, response.text
    registered: dict[str, Any] = response.json()
    return registered


def authorize_url(stack: Stack, client_id: str, challenge: str | None, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "state": "state-1",
        "resource": stack.public + "/mcp",
        **({"code_challenge": challenge, "code_challenge_method": "S256"} if challenge else {}),
        **extra,
    }
    return f"{stack.public}/authorize?{urlencode(params)}"


async def code_for(stack: Stack, browser: Browser, client_id: str, challenge: str) -> str:
    answer = await browser.authorize(
        authorize_url(stack, client_id, challenge),
        email=OWNER,
        password=PASSWORD,
        organization="acme",
    )
    assert answer["state"] == "state-1"
    assert answer["iss"] == stack.public
    return answer["code"]


async def exchange(
    http: httpx.AsyncClient, stack: Stack, client_id: str, code: str, verifier: str, **extra: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "client_id": client_id,
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": CALLBACK,
        "resource": stack.public + "/mcp",
        **extra,
    }
    return await http.post(stack.public + "/token", data=form)


async def refresh(
    http: httpx.AsyncClient, stack: Stack, client_id: str, token: str
) -> httpx.Response:
    form = {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": token}
    return await http.post(stack.public + "/token", data=form)


async def mcp_status(http: httpx.AsyncClient, stack: Stack, access_token: str) -> int:
    response = await http.post(
        stack.public + "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={**_MCP_HEADERS, "Authorization": f"Bearer {access_token}"},
    )
    return response.status_code


async def tokens_for(
    stack: Stack, http: httpx.AsyncClient, browser: Browser
) -> tuple[str, dict[str, Any]]:
    """A registered public client and a fresh pair of tokens for it."""
    client = await register(http, stack)
    verifier, challenge = pkce()
    code = await code_for(stack, browser, client["client_id"], challenge)
    answer = await exchange(http, stack, client["client_id"], code, verifier)
    assert answer.status_code == 200, answer.text
    return client["client_id"], answer.json()


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


@pytest.fixture
async def browser() -> Any:
    opened = Browser()
    yield opened
    await opened.aclose()


def _error_redirect(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return dict(parse_qsl(urlsplit(location).query))


async def test_the_metadata_documents_say_what_the_mcp_specification_asks(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    server = (await http.get(stack.public + "/.well-known/oauth-authorization-server")).json()
    assert server["issuer"] == stack.public
    assert server["code_challenge_methods_supported"] == ["S256"]
    assert "none" in server["token_endpoint_auth_methods_supported"]
    assert server["client_id_metadata_document_supported"] is True
    assert server["authorization_response_iss_parameter_supported"] is True
    for name in ("authorization", "token", "registration", "revocation"):
        assert server[f"{name}_endpoint"].startswith(stack.public + "/")
    for path in ("", "/mcp"):
        resource = await http.get(f"{stack.public}/.well-known/oauth-protected-resource{path}")
        assert resource.status_code == 200
        body = resource.json()
        assert body["resource"] == stack.public + "/mcp"
        assert body["authorization_servers"] == [stack.public]
        assert body["scopes_supported"] == ["read"]


async def test_registration_takes_claude_ai_and_loopback_redirects_and_omits_empty_fields(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    uris = [
        "https://claude.ai/api/mcp/auth_callback",
        "https://claude.com/api/mcp/auth_callback",
        "http://127.0.0.1/callback",
        "http://localhost:33418/callback",
    ]
    registered = await register(http, stack, redirect_uris=uris)
    assert registered["redirect_uris"] == uris
    assert None not in registered.values()
    assert "client_secret" not in registered
    refused = await http.post(
        stack.public + "/register",
        json={"redirect_uris": ["http://app.example/callback"], "client_name": "x"},
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_redirect_uri"


async def test_authorization_without_pkce_or_with_plain_pkce_is_refused(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    client = await register(http, stack)
    missing = await http.get(authorize_url(stack, client["client_id"], None))
    assert _error_redirect(missing)["error"] == "invalid_request"
    assert _error_redirect(missing)["iss"] == stack.public
    plain = await http.get(
        authorize_url(
            stack, client["client_id"], None, code_challenge="x" * 43, code_challenge_method="plain"
        )
    )
    assert _error_redirect(plain)["error"] == "invalid_request"


async def test_a_redirect_uri_must_match_exactly_except_a_loopback_port(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    client = await register(http, stack, redirect_uris=[CALLBACK, "http://127.0.0.1/callback"])
    _verifier, challenge = pkce()
    for wrong in (
        "https://evil.example/callback",  # another host
        "https://app.example/other",  # another path
        "https://app.example:8443/callback",  # another port, not loopback
        "https://app.example/callback?x=1",
    ):
        response = await http.get(
            authorize_url(stack, client["client_id"], challenge, redirect_uri=wrong)
        )
        # Never a redirect to an unregistered URI: an error page instead.
        assert response.status_code == 400, wrong
        assert "location" not in response.headers
    loopback = await http.get(
        authorize_url(
            stack, client["client_id"], challenge, redirect_uri="http://127.0.0.1:50123/callback"
        )
    )
    assert loopback.status_code == 302
    assert loopback.headers["location"].startswith(stack.public + "/oauth/consent?request=")


async def test_no_open_redirect_through_an_unknown_client_or_the_login_page(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    response = await http.get(
        authorize_url(stack, "no-such-client", pkce()[1], redirect_uri="https://evil.example/")
    )
    assert response.status_code == 400
    assert "location" not in response.headers
    signed_in = Browser()
    try:
        await signed_in.sign_in(stack.public, OWNER, PASSWORD)
        for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
            fresh = Browser()
            try:
                signed = await fresh.sign_in(stack.public, OWNER, PASSWORD, next_path=target)
            finally:
                await fresh.aclose()
            assert signed.status_code == 303
            assert signed.headers["location"] == "/console"
            # Already signed in, /login sends the browser on at once: to a local path only.
            again = await signed_in.get(f"{stack.public}/login?next={target}")
            assert again.status_code == 303
            assert again.headers["location"] == "/console"
    finally:
        await signed_in.aclose()


async def test_a_wrong_verifier_gets_nothing(
    stack: Stack, http: httpx.AsyncClient, browser: Browser
) -> None:
    client = await register(http, stack)
    _verifier, challenge = pkce()
    code = await code_for(stack, browser, client["client_id"], challenge)
    answer = await exchange(http, stack, client["client_id"], code, pkce()[0])
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


async def test_a_wrong_verifier_spends_the_code_so_no_verifier_can_be_tried_after_it(
    stack: Stack, http: httpx.AsyncClient, browser: Browser
) -> None:
    client = await register(http, stack)
    verifier, challenge = pkce()
    code = await code_for(stack, browser, client["client_id"], challenge)
    guess = await exchange(http, stack, client["client_id"], code, pkce()[0])
    assert guess.status_code == 400
    assert guess.json()["error"] == "invalid_grant"
    # A failed redemption is a use (RFC 9700, section 2.1.1): even the right verifier is
    # refused now, so a stolen code cannot be tried against a list of verifiers.
    right = await exchange(http, stack, client["client_id"], code, verifier)
    assert right.status_code == 400
    assert right.json()["error"] == "invalid_grant"


async def test_another_clients_failed_redemption_does_not_spend_the_code(
    stack: Stack, http: httpx.AsyncClient, browser: Browser
) -> None:
    client = await register(http, stack)
    other = await register(http, stack)
    verifier, challenge = pkce()
    code = await code_for(stack, browser, client["client_id"], challenge)
    stolen = await exchange(http, stack, other["client_id"], code, verifier)
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"
    right = await exchange(http, stack, client["client_id"], code, verifier)
    assert right.status_code == 200, right.text


@pytest.mark.parametrize(
    "challenge",
    [
        "a" * 42,  # too short
        "a" * 129,  # too long
        "a" * 42 + "+",  # base64, not base64url
        "a" * 42 + "=",  # padded
        "a" * 21 + " " + "a" * 21,
        "a" * 42 + "é",
    ],
)
async def test_authorize_refuses_a_code_challenge_outside_43_to_128_unreserved_characters(
    stack: Stack, http: httpx.AsyncClient, challenge: str
) -> None:
    client = await register(http, stack)
    response = await http.get(authorize_url(stack, client["client_id"], challenge))
    answer = _error_redirect(response)
    assert answer["error"] == "invalid_request"
    assert "code_challenge" in answer["error_description"]
    assert answer["iss"] == stack.public
    assert answer["state"] == "state-1"


@pytest.mark.parametrize("challenge", [pkce()[1], "Az09-._~" * 16, "a" * 43])
async def test_authorize_takes_a_code_challenge_of_43_to_128_unreserved_characters(
    stack: Stack, http: httpx.AsyncClient, challenge: str
) -> None:
    client = await register(http, stack)
    response = await http.get(authorize_url(stack, client["client_id"], challenge))
    assert response.status_code == 302, response.text
    assert response.headers["location"].startswith(stack.public + "/oauth/consent?request=")


async def test_a_replayed_code_is_refused_and_revokes_what_it_issued(
    stack: Stack, http: httpx.AsyncClient, browser: Browser
) -> None:
    client = await register(http, stack)
    verifier, challenge = pkce()
    code = await code_for(stack, browser, client["client_id"], challenge)
    first = await exchange(http, stack, client["client_id"], code, verifier)
    assert first.status_code == 200
    access = first.json()["access_token"]
    assert await mcp_status(http, stack, access) == 200
    replay = await exchange(http, stack, client["client_id"], code, verifier)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert await mcp_status(http, stack, access) == 401


async def test_a_reused_refresh_token_revokes_the_whole_family(
    stack: Stack, http: httpx.AsyncClient, browser: Browser
) -> None:
    client_id, tokens = await tokens_for(stack, http, browser)
    rotated = await refresh(http, stack, client_id, tokens["refresh_token"])
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["refresh_token"] != tokens["refresh_token"]
    assert await mcp_status(http, stack, new["access_token"]) == 200
    reused = await refresh(http, stack, client_id, tokens["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert await mcp_status(http, stack, new["access_token"]) == 401
    assert (await refresh(http, stack, client_id, new["refresh_token"])).status_code == 400


async def test_tokens_for_another_resource_are_neither_issued_nor_accepted(
    stack: Stack, http: httpx.AsyncClient, browser: Browser
) -> None:
    client = await register(http, stack)
    verifier, challenge = pkce()
    elsewhere = "https://other.example/mcp"
    asked = await http.get(authorize_url(stack, client["client_id"], challenge, resource=elsewhere))
    assert _error_redirect(asked)["error"] == "invalid_target"
    code = await code_for(stack, browser, client["client_id"], challenge)
    at_token = await exchange(http, stack, client["client_id"], code, verifier, resource=elsewhere)
    assert at_token.status_code == 400
    assert at_token.json()["error"] == "invalid_target"
    # A token that another server on the same database minted for its own resource.
    foreign = await _token_minted_for(stack, elsewhere)
    assert await mcp_status(http, stack, foreign) == 401


async def _token_minted_for(stack: Stack, resource: str, scopes: list[str] | None = None) -> str:
    db = Database(stack.database_url)
    try:
        issuer = resource.removesuffix("/mcp")
        other = TrailmapOAuthProvider(
            db, issuer=issuer, resource=resource, consent_path="/oauth/consent"
        )
        client = OAuthClientInformationFull(
            client_id=f"direct-{secrets.token_hex(4)}",
            client_name="Direct",
            redirect_uris=[CALLBACK],
            token_endpoint_auth_method="none",
        )
        await other.register_client(client)
        from mcp.server.auth.provider import AuthorizationParams  # noqa: PLC0415
        from pydantic import AnyUrl  # noqa: PLC0415

        consent = await other.authorize(
            client,
            AuthorizationParams(
                state=None,
                scopes=["read"],
                code_challenge="x" * 43,
                redirect_uri=AnyUrl(CALLBACK),
                redirect_uri_provided_explicitly=True,
                resource=resource,
            ),
        )
        request_id = dict(parse_qsl(urlsplit(consent).query))["request"]
        approval = await other.approve(request_id, user_id=stack.owner_id, org_slug="acme")
        code = dict(parse_qsl(urlsplit(approval.redirect_to).query))["code"]
        loaded = await other.load_authorization_code(client, code)
        assert loaded is not None
        tokens = await other.exchange_authorization_code(client, loaded)
        if scopes is not None:
            assert tokens.refresh_token is not None
            refresh_token = await other.load_refresh_token(client, tokens.refresh_token)
            assert refresh_token is not None
            tokens = await other.exchange_refresh_token(client, refresh_token, scopes)
        return tokens.access_token
    finally:
        db.close()


async def test_a_token_without_the_read_scope_gets_403_insufficient_scope(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    token = await _token_minted_for(stack, stack.public + "/mcp", scopes=["profile"])
    response = await http.post(
        stack.public + "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={**_MCP_HEADERS, "Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="read"' in challenge


async def test_consent_without_csrf_or_for_someone_elses_organization_gives_no_code(
    stack: Stack, http: httpx.AsyncClient, browser: Browser
) -> None:
    client = await register(http, stack)
    _verifier, challenge = pkce()
    start = await browser.get(authorize_url(stack, client["client_id"], challenge))
    consent_url = start.headers["location"]
    await browser.sign_in(stack.public, OWNER, PASSWORD)
    page = await browser.get(consent_url)
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    request_id = dict(parse_qsl(urlsplit(consent_url).query))["request"]
    forged = await browser.request(
        "POST",
        stack.public + "/oauth/consent",
        {"request": request_id, "organization": "acme", "action": "approve"},
    )
    assert forged.status_code == 403
    assert "location" not in forged.headers
    other_org = await browser.submit(
        page, {"organization": "globex", "action": "approve"}, action_contains="consent"
    )
    assert other_org.status_code == 403
    assert "location" not in other_org.headers
    # The request is still pending and can be answered properly.
    denied = await browser.submit(page, {"action": "deny"}, action_contains="consent")
    assert denied.status_code == 303
    answer = dict(parse_qsl(urlsplit(denied.headers["location"]).query))
    assert answer == {
        "error": "access_denied",
        "error_description": "The user declined access.",
        "state": "state-1",
        "iss": stack.public,
    }


async def test_login_without_csrf_is_refused(stack: Stack, browser: Browser) -> None:
    response = await browser.request(
        "POST", stack.public + "/login", {"email": OWNER, "password": PASSWORD}
    )
    assert response.status_code == 403
    assert (
        "set-cookie" not in response.headers
        or "trailmap_session" not in response.headers["set-cookie"]
    )


async def test_login_brute_force_is_slowed_even_for_the_right_password(
    stack: Stack, browser: Browser
) -> None:
    db = Database(stack.database_url)
    try:
        await add_user(db, "victim@acme.example", org_slug="acme", password="the right password")
    finally:
        db.close()
    statuses = [
        (await browser.sign_in(stack.public, "victim@acme.example", f"guess {n}")).status_code
        for n in range(5)
    ]
    assert statuses == [401] * 5
    blocked = await browser.sign_in(stack.public, "victim@acme.example", "the right password")
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    assert "trailmap_session" not in blocked.headers.get("set-cookie", "")


async def test_unknown_and_misauthenticated_clients_get_401_invalid_client(
    stack: Stack, http: httpx.AsyncClient, browser: Browser
) -> None:
    unknown = await exchange(http, stack, "no-such-client", "code", "verifier")
    assert unknown.status_code == 401
    assert unknown.json()["error"] == "invalid_client"
    confidential = await register(http, stack, token_endpoint_auth_method="client_secret_post")
    secret = confidential["client_secret"]
    verifier, challenge = pkce()
    code = await code_for(stack, browser, confidential["client_id"], challenge)
    wrong = await exchange(
        http, stack, confidential["client_id"], code, verifier, client_secret="not-it"
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    right = await exchange(
        http, stack, confidential["client_id"], code, verifier, client_secret=secret
    )
    assert right.status_code == 200, right.text


async def test_a_public_client_revokes_its_grant(
    stack: Stack, http: httpx.AsyncClient, browser: Browser
) -> None:
    client_id, tokens = await tokens_for(stack, http, browser)
    assert await mcp_status(http, stack, tokens["access_token"]) == 200
    revoked = await http.post(
        stack.public + "/revoke", data={"client_id": client_id, "token": tokens["refresh_token"]}
    )
    assert revoked.status_code == 200
    assert await mcp_status(http, stack, tokens["access_token"]) == 401
    assert (await refresh(http, stack, client_id, tokens["refresh_token"])).status_code == 400
