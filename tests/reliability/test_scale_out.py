"""Three `trailmap serve` processes on one PostgreSQL behave as one server.

The nodes share nothing but the database (a PostgreSQL cluster of the test's own), and each
request picks its node in turn, as a round-robin load balancer does: events written through
all three by concurrent clients are seen from each, exactly once; an MCP session opened on
one node carries on on the other two; and every step of an OAuth grant (registration,
authorization and consent, token, refresh, tool call, revocation) lands on a different node
from the step before, and the revocation holds on a node that did not perform it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import httpx
import pytest

from tests.factories import make_key, make_org
from tests.mcp.handshake import open_session
from tests.oauth.browser import Browser
from tests.oauth.conftest import OWNER, PASSWORD
from tests.oauth.test_oauth_attacks import CALLBACK, pkce
from tests.reliability.cluster import postgres_cluster
from tests.reliability.forms import scale
from tests.reliability.paging import stored_event_ids
from tests.server import free_port, running_server
from trailmap.accounts import add_user
from trailmap.storage import Database, migrate

SOURCE = "//reliability.example/scale-out"
_CLIENTS = int(scale(6, 12))
_BATCHES_PER_CLIENT = int(scale(8, 60))
_BATCH = int(scale(25, 100))
_MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@dataclass(frozen=True)
class Nodes:
    urls: tuple[str, str, str]
    public: str  # TRAILMAP_PUBLIC_URL of all three: the OAuth issuer, `<it>/mcp` the resource
    key: str  # READ_WRITE key of organization acme

    def turns(self) -> Iterator[str]:
        """The nodes in turn, forever: a round-robin balancer."""
        return itertools.cycle(self.urls)


def _seed(database_url: str) -> str:
    """Organization acme, its owner (who signs in for OAuth) and a read-write key."""

    async def _run() -> str:
        db = Database(database_url)
        try:
            migrate.upgrade(db)
            org = await make_org(db, slug="acme")
            await add_user(db, OWNER, org_slug="acme", role="owner", password=PASSWORD)
            return await make_key(db, org, scope="read-write")
        finally:
            db.close()

    return asyncio.run(_run())


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    folder = tmp_path_factory.mktemp("scale-out")
    with postgres_cluster() as cluster:
        database_url = cluster.create_database("scale_out")
        key = _seed(database_url)
        # The address a load balancer would have. Nothing listens there: the tests talk to
        # each node directly, so they choose which node answers which step.
        public = f"http://127.0.0.1:{free_port()}"
        env = {"TRAILMAP_PUBLIC_URL": public}
        servers = [
            running_server(database_url, log_path=folder / f"node-{name}.log", env=env)
            for name in "abc"
        ]
        with ExitStack() as stack:
            a, b, c = _enter_together(stack, servers)
            yield Nodes(urls=(a, b, c), public=public, key=key)


def _enter_together(stack: ExitStack, managers: Sequence[AbstractContextManager[str]]) -> list[str]:
    """Enter the managers at once (three servers start in the time of one, or nearly, on
    two cores); each one entered is exited by `stack`, even if a neighbour failed."""
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
        wait(futures)
    entered: list[str] = []
    for manager, future in zip(managers, futures, strict=True):
        if future.exception() is None:
            stack.push(manager)
            entered.append(future.result())
    for future in futures:
        if (error := future.exception()) is not None:
            raise error
    return entered


# -- events ------------------------------------------------------------------------------


def _batch(client: int, batch: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "specversion": "1.0",
            "id": f"c{client}-b{batch}-{n}",
            "type": "deployment",
            "source": SOURCE,
            "subject": "production",
            "time": now,
        }
        for n in range(_BATCH)
    ]


async def _ingest(nodes: Nodes, client: int) -> tuple[set[str], int]:
    """Send this client's batches, each to the next node; then send its first batch again
    to another node, which must call every event of it a duplicate. Returns the ids sent
    and how many answers were duplicates."""
    sent: set[str] = set()
    turns = itertools.islice(nodes.turns(), client, None)
    headers = {"Authorization": f"Bearer {nodes.key}"}
    async with httpx.AsyncClient(headers=headers, timeout=60.0) as http:
        for batch in range(_BATCHES_PER_CLIENT):
            events = _batch(client, batch)
            response = await http.post(f"{next(turns)}/api/v1/events", json=events)
            assert response.status_code == 201, response.text
            assert response.json()["data"]["counts"]["accepted"] == _BATCH
            sent |= {e["id"] for e in events}
        again = await http.post(f"{next(turns)}/api/v1/events", json=_batch(client, 0))
        assert again.status_code == 200, again.text
        counts = again.json()["data"]["counts"]
    assert counts == {"accepted": 0, "duplicates": _BATCH, "rejected": 0}
    return sent, counts["duplicates"]


def _pages(nodes: Nodes, first: str) -> list[str]:
    """Every event of SOURCE, one page per node in turn starting at `first`."""
    turns = itertools.islice(nodes.turns(), nodes.urls.index(first), None)
    return stored_event_ids(nodes.key, SOURCE, turns, timeout=60.0)


def test_events_sent_through_three_nodes_are_all_seen_once_from_every_node(
    nodes: Nodes,
) -> None:
    async def _all_clients() -> list[tuple[set[str], int]]:
        return await asyncio.gather(*(_ingest(nodes, c) for c in range(_CLIENTS)))

    results = asyncio.run(_all_clients())
    sent = set().union(*(ids for ids, _ in results))
    assert len(sent) == _CLIENTS * _BATCHES_PER_CLIENT * _BATCH
    for node in nodes.urls:
        found = _pages(nodes, node)
        assert len(found) == len(set(found)), f"{node} lists an event twice"
        assert set(found) == sent, f"{node}: {len(sent - set(found))} missing"
        # The count every node gives agrees with the list.
        summary = httpx.get(
            f"{node}/api/v1/events/summary",
            params={"from": "-1d"},
            headers={"Authorization": f"Bearer {nodes.key}"},
        )
        assert summary.status_code == 200, summary.text
        by_source = {row["value"]: row["count"] for row in summary.json()["data"]["by_source"]}
        assert by_source[SOURCE] == len(sent)
    print(
        f"\nscale-out: {len(sent)} events from {_CLIENTS} clients through 3 nodes, "
        f"{sum(d for _, d in results)} re-sent as duplicates; each node lists {len(sent)}"
    )


# -- MCP -----------------------------------------------------------------------------------


async def _call_in_session(
    http: httpx.AsyncClient, url: str, key: str, session_id: str, tool: str, args: dict[str, Any]
) -> dict[str, Any]:
    response = await http.post(
        url,
        json={
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": tool, "arguments": args},
        },
        headers={
            **_MCP_HEADERS,
            "Authorization": f"Bearer {key}",
            "Mcp-Session-Id": session_id,
            "MCP-Protocol-Version": "2025-11-25",
        },
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    assert not result.get("isError"), result
    return result


@pytest.mark.anyio
async def test_an_mcp_session_opened_on_one_node_carries_on_on_the_other_two(
    nodes: Nodes,
) -> None:
    node_a, node_b, node_c = nodes.urls
    marker = {
        "specversion": "1.0",
        "id": "mcp-marker",
        "type": "incident",
        "source": "//reliability.example/mcp",
        "subject": "production",
        "time": "NOW",
    }
    async with httpx.AsyncClient(timeout=60.0) as http:
        stored = await http.post(
            f"{node_c}/api/v1/events",
            json=marker,
            headers={"Authorization": f"Bearer {nodes.key}"},
        )
        assert stored.is_success, stored.text
        session_id = await open_session(http, f"{node_a}/mcp", nodes.key)
        on_b = await _call_in_session(
            http, f"{node_b}/mcp", nodes.key, session_id, "query_events", {"type": ["incident"]}
        )
        on_c = await _call_in_session(
            http, f"{node_c}/mcp", nodes.key, session_id, "list_event_types", {}
        )
        on_a = await _call_in_session(
            http, f"{node_a}/mcp", nodes.key, session_id, "get_event_summary", {}
        )
    assert [e["id"] for e in on_b["structuredContent"]["events"]] == ["mcp-marker"]
    assert "incident" in {row["value"] for row in on_c["structuredContent"]["types"]}
    assert on_a["content"], on_a


# -- OAuth ---------------------------------------------------------------------------------


def _on(node: str, url: str, public: str) -> str:
    """A URL the server wrote for its public address, sent to `node` instead (as the
    balancer would, choosing that node)."""
    if url.startswith(public):
        return node + url.removeprefix(public)
    return urljoin(node + "/", url)


async def _authorize_and_consent(browser: Browser, node: str, nodes: Nodes, url: str) -> str:
    """The person's part, all of it on `node`: authorize, sign in, consent. Returns the
    authorization code the browser brings back to the client."""
    response = await browser.get(_on(node, url, nodes.public))
    assert response.status_code == 302, response.text
    consent_url = _on(node, response.headers["location"], nodes.public)
    page = await browser.get(consent_url)
    assert page.status_code == 303, page.text  # not signed in yet
    login = await browser.get(_on(node, page.headers["location"], nodes.public))
    signed = await browser.submit(login, {"email": OWNER, "password": PASSWORD})
    assert signed.status_code == 303, signed.text
    page = await browser.get(_on(node, signed.headers["location"], nodes.public))
    assert page.status_code == 200, page.text
    answered = await browser.submit(
        page, {"organization": "acme", "action": "approve"}, action_contains="consent"
    )
    assert answered.status_code == 303, answered.text
    back = answered.headers["location"]
    assert back.startswith(CALLBACK + "?"), back
    answer = dict(parse_qsl(urlsplit(back).query))
    assert answer["state"] == "scale-out"
    assert answer["iss"] == nodes.public
    return answer["code"]


async def _mcp_ping(http: httpx.AsyncClient, node: str, access_token: str) -> int:
    response = await http.post(
        f"{node}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={**_MCP_HEADERS, "Authorization": f"Bearer {access_token}"},
    )
    return response.status_code


@pytest.mark.anyio
async def test_every_step_of_an_oauth_grant_may_land_on_a_different_node(nodes: Nodes) -> None:
    node_a, node_b, node_c = nodes.urls
    resource = f"{nodes.public}/mcp"
    browser = Browser()
    try:
        async with httpx.AsyncClient(timeout=60.0) as http:
            # Registration on A.
            registered = await http.post(
                f"{node_a}/register",
                json={
                    "client_name": "Scale-out test",
                    "redirect_uris": [CALLBACK],
                    "token_endpoint_auth_method": "none",
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                },
            )
            assert registered.status_code == 201, registered.text
            client_id = registered.json()["client_id"]

            # Authorization, sign-in and consent on B.
            verifier, challenge = pkce()
            query = {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": CALLBACK,
                "state": "scale-out",
                "resource": resource,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
            code = await _authorize_and_consent(
                browser, node_b, nodes, f"{nodes.public}/authorize?{urlencode(query)}"
            )

            # The code for tokens on C.
            issued = await http.post(
                f"{node_c}/token",
                data={
                    "grant_type": "authorization_code",
                    "client_id": client_id,
                    "code": code,
                    "code_verifier": verifier,
                    "redirect_uri": CALLBACK,
                    "resource": resource,
                },
            )
            assert issued.status_code == 200, issued.text
            first = issued.json()

            # Refresh on A: the refresh token rotates.
            refreshed = await http.post(
                f"{node_a}/token",
                data={
                    "grant_type": "refresh_token",
                    "client_id": client_id,
                    "refresh_token": first["refresh_token"],
                },
            )
            assert refreshed.status_code == 200, refreshed.text
            tokens = refreshed.json()
            assert tokens["refresh_token"] != first["refresh_token"]

            # An MCP call with the new access token on B.
            assert await _mcp_ping(http, node_b, tokens["access_token"]) == 200

            # Revocation on C; A refuses the access token and the refresh token at once.
            revoked = await http.post(
                f"{node_c}/revoke",
                data={"client_id": client_id, "token": tokens["refresh_token"]},
            )
            assert revoked.status_code == 200, revoked.text
            assert await _mcp_ping(http, node_a, tokens["access_token"]) == 401
            again = await http.post(
                f"{node_a}/token",
                data={
                    "grant_type": "refresh_token",
                    "client_id": client_id,
                    "refresh_token": tokens["refresh_token"],
                },
            )
            assert again.status_code == 400, again.text
    finally:
        await browser.aclose()
