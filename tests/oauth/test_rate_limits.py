"""The audit's hole 4, rate limits: one address cannot register clients, open authorizations,
ask for tokens or try passwords without bound, whichever app node it reaches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta

import httpx
import pytest

from tests.forms import parse
from trailmap import clock
from trailmap.app import create_app
from trailmap.jobs.retention import purge_expired
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

_CLIENT = {
    "redirect_uris": ["http://127.0.0.1:9999/callback"],
    "token_endpoint_auth_method": "none",
}


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        oauth_registrations_per_hour=3,
        unauthenticated_requests_per_minute=5,
    )


@pytest.fixture
async def nodes(
    settings: Settings, db: Database
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient]]:
    """Two app nodes on one database, both reached from one address; and a third client
    from another address."""
    async with AsyncExitStack() as stack:
        clients = []
        for client in (("203.0.113.5", 4000), ("203.0.113.5", 4001), ("198.51.100.7", 4002)):
            transport = httpx.ASGITransport(app=create_app(settings, database=db), client=client)
            clients.append(
                await stack.enter_async_context(
                    httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")
                )
            )
        yield clients[0], clients[1], clients[2]


async def test_registrations_from_one_address_stop_at_the_limit_on_every_node(
    nodes: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    one, two, elsewhere = nodes
    statuses = [
        (await node.post("/register", json=_CLIENT)).status_code for node in (one, two, one)
    ]
    assert statuses == [201, 201, 201]
    refused = await two.post("/register", json=_CLIENT)
    assert refused.status_code == 429
    assert refused.json()["error"] == "temporarily_unavailable"
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    # Another address is not held back by this one.
    assert (await elsewhere.post("/register", json=_CLIENT)).status_code == 201


async def test_token_requests_from_one_address_stop_at_the_limit(
    nodes: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    one, two, _elsewhere = nodes
    form = {"grant_type": "authorization_code", "code": "x", "client_id": "nobody"}
    answers = [(await node.post("/token", data=form)).status_code for node in (one, two) * 3]
    assert 429 not in answers[:5], answers
    assert answers[5] == 429, answers


async def test_authorize_requests_from_one_address_stop_at_the_limit(
    nodes: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    one, _two, elsewhere = nodes
    answers = [(await one.get("/authorize")).status_code for _ in range(6)]
    assert 429 not in answers[:5]
    assert answers[5] == 429
    assert (await elsewhere.get("/authorize")).status_code != 429


async def test_sign_in_attempts_from_one_address_stop_at_the_limit(
    nodes: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    one, _two, _elsewhere = nodes
    statuses = []
    for n in range(6):
        opened = await one.get("/login")
        data = parse(opened.text).form("/login").data(email=f"u{n}@x.example", password="x")
        statuses.append((await one.post("/login", data=data)).status_code)
    assert statuses == [401] * 5 + [429]


async def test_old_counters_are_purged(
    nodes: tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient],
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one, _two, _elsewhere = nodes
    await one.post("/register", json=_CLIENT)
    later = clock.now() + timedelta(days=2)
    report = await purge_expired(db, now=later)
    assert report.upkeep >= 1
    monkeypatch.setattr(clock, "now_us", lambda: clock.to_us(later))
    # The window it counted in is gone; the address starts afresh.
    assert (await one.post("/register", json=_CLIENT)).status_code == 201
