"""The whole OAuth flow with the official `mcp` SDK client, against real server processes.

Two `trailmap serve` processes share one database behind a round-robin balancer whose
address is the public URL, so consecutive steps of every flow (discovery, registration,
authorize, login, consent, token, tool calls, refresh) land on different processes. The
browser's part (sign in, choose the organization, approve) is an HTTP client filling the
real forms. Once with Dynamic Client Registration, once with a Client ID Metadata Document
served over https by a local server.
"""

from __future__ import annotations

import time

import httpx
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from pydantic import AnyUrl

from tests.forms import parse
from tests.oauth.browser import Browser
from tests.oauth.conftest import OWNER, PASSWORD, Stack
from trailmap.accounts import list_keys
from trailmap.storage import Database

pytestmark = pytest.mark.anyio


class MemoryStorage:
    """The SDK's TokenStorage, kept in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class User:
    """The person at the browser: approves for `organization` whenever the client asks."""

    def __init__(self, browser: Browser, organization: str = "acme") -> None:
        self.browser = browser
        self.organization = organization
        self.authorizations = 0
        self._answer: dict[str, str] = {}

    async def redirect(self, authorize_url: str) -> None:
        self.authorizations += 1
        self._answer = await self.browser.authorize(
            authorize_url, email=OWNER, password=PASSWORD, organization=self.organization
        )

    async def callback(self) -> AuthorizationCodeResult:
        answer = self._answer
        return AuthorizationCodeResult(
            code=answer["code"], state=answer.get("state"), iss=answer.get("iss")
        )


def _client_metadata(redirect_uri: str, name: str) -> OAuthClientMetadata:
    return OAuthClientMetadata(
        client_name=name,
        redirect_uris=[AnyUrl(redirect_uri)],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )


async def _mcp_keys(stack: Stack, name: str) -> list[tuple[str, str]]:
    db = Database(stack.database_url)
    try:
        return [(k.kind, k.status) for k in await list_keys(db, "acme") if k.name == name]
    finally:
        db.close()


async def _delete_on_keys_page(browser: Browser, stack: Stack, key_name: str) -> None:
    """The owner revokes the key on the API Keys page, confirming."""
    page = await browser.get(f"{stack.public}/orgs/acme/keys")
    assert page.status_code == 200
    parsed = parse(page.text)
    # The live key of that name: only a live key has a Revoke link.
    revoke = next(
        link
        for key_id, cells in parsed.rows.items()
        if cells[0] == key_name
        for link in parsed.hrefs()
        if link == f"/orgs/acme/keys/{key_id}/revoke"
    )
    confirm = await browser.get(stack.public + revoke)
    assert "cannot be undone" in confirm.text
    done = await browser.submit(confirm, {"confirm": "yes"}, action_contains="/revoke")
    assert done.status_code == 303


async def _run_flow(stack: Stack, provider: OAuthClientProvider, user: User, key_name: str) -> None:
    storage = provider.context.storage
    assert isinstance(storage, MemoryStorage)
    http = create_mcp_http_client(auth=provider)
    async with http, Client(streamable_http_client(stack.public + "/mcp", http_client=http)) as c:
        # Discovery, registration (or the metadata document), authorize, login, consent, token.
        first = await c.call_tool("list_event_types", {})
        assert not first.is_error
        assert user.authorizations == 1
        assert storage.tokens is not None
        access, refresh = storage.tokens.access_token, storage.tokens.refresh_token
        assert access.startswith("tma_")
        assert refresh is not None
        assert refresh.startswith("tmr_")
        assert await _mcp_keys(stack, key_name) == [("MCP", "active")]

        # The access token runs out: the SDK refreshes, and the refresh token rotates.
        provider.context.token_expiry_time = time.time() - 1
        assert not (await c.call_tool("list_event_sources", {})).is_error
        assert storage.tokens.access_token != access
        assert storage.tokens.refresh_token not in (None, refresh)
        assert user.authorizations == 1

        # The owner deletes the key on the API Keys page: the very next call is refused.
        await _delete_on_keys_page(user.browser, stack, key_name)
        async with httpx.AsyncClient() as raw:
            refused = await raw.post(
                stack.public + "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={
                    "Authorization": f"Bearer {storage.tokens.access_token}",
                    "Accept": "application/json, text/event-stream",
                },
            )
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]

        # The client meets the 401 and signs in again; approval mints a new key.
        again = await c.call_tool("list_event_types", {})
        assert not again.is_error
        assert user.authorizations == 2
        assert sorted(await _mcp_keys(stack, key_name)) == [("MCP", "active"), ("MCP", "revoked")]


async def test_the_sdk_client_registers_signs_in_refreshes_and_is_cut_off_when_its_key_is_deleted(
    stack: Stack,
) -> None:
    browser = Browser()
    user = User(browser)
    provider = OAuthClientProvider(
        server_url=stack.public + "/mcp",
        client_metadata=_client_metadata("http://127.0.0.1:53682/callback", "Claude Code"),
        storage=MemoryStorage(),
        redirect_handler=user.redirect,
        callback_handler=user.callback,
    )
    try:
        await _run_flow(stack, provider, user, "MCP — Claude Code")
        storage = provider.context.storage
        assert isinstance(storage, MemoryStorage)
        assert storage.client_info is not None
        assert not storage.client_info.client_id.startswith("https://")  # registered
        # Every step of the flow was spread over both processes.
        assert set(browser.nodes) == {"0", "1"}
    finally:
        await browser.aclose()


async def test_the_sdk_client_signs_in_with_a_client_id_metadata_document(stack: Stack) -> None:
    redirect_uri = "http://127.0.0.1:53683/callback"
    document_url = stack.metadata.url("/oauth/claude-ai.json")
    stack.metadata.serve_json(
        "/oauth/claude-ai.json",
        {
            "client_id": document_url,
            "client_name": "Claude.ai test",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
    )
    browser = Browser()
    user = User(browser)
    provider = OAuthClientProvider(
        server_url=stack.public + "/mcp",
        client_metadata=_client_metadata(redirect_uri, "Claude.ai test"),
        storage=MemoryStorage(),
        redirect_handler=user.redirect,
        callback_handler=user.callback,
        client_metadata_url=document_url,
    )
    try:
        await _run_flow(stack, provider, user, "MCP — Claude.ai test")
        storage = provider.context.storage
        assert isinstance(storage, MemoryStorage)
        assert storage.client_info is not None
        assert storage.client_info.client_id == document_url  # no registration happened
        assert "/oauth/claude-ai.json" in stack.metadata.requests
    finally:
        await browser.aclose()


async def test_an_app_that_registers_again_reuses_its_key_which_names_the_approvers_email(
    stack: Stack,
) -> None:
    """Claude Code forgets its registration (a new machine, a cleared cache) and registers
    anew: the second approval by the same person in the same organization binds the new
    client to the live key of the first, rather than making a second "MCP — …" key."""
    browser = Browser()
    user = User(browser)
    client_ids = []
    try:
        for _ in range(2):
            provider = OAuthClientProvider(
                server_url=stack.public + "/mcp",
                client_metadata=_client_metadata("http://127.0.0.1:53684/callback", "Re-reg"),
                storage=MemoryStorage(),  # nothing kept: the SDK registers again
                redirect_handler=user.redirect,
                callback_handler=user.callback,
            )
            http = create_mcp_http_client(auth=provider)
            streams = streamable_http_client(stack.public + "/mcp", http_client=http)
            async with http, Client(streams) as c:
                assert not (await c.call_tool("list_event_types", {})).is_error
            storage = provider.context.storage
            assert isinstance(storage, MemoryStorage)
            assert storage.client_info is not None
            client_ids.append(storage.client_info.client_id)
        assert user.authorizations == 2
        assert client_ids[0] != client_ids[1]  # two registrations of the one app
        assert await _mcp_keys(stack, "MCP — Re-reg") == [("MCP", "active")]
        db = Database(stack.database_url)
        try:
            [key] = [k for k in await list_keys(db, "acme") if k.name == "MCP — Re-reg"]
        finally:
            db.close()
        assert key.created_by == OWNER  # the approver's e-mail, not a user id
        page = parse((await browser.get(f"{stack.public}/orgs/acme/keys")).text)
        assert page.rows[key.id][4] == OWNER
    finally:
        await browser.aclose()
