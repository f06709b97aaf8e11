"""A backstage integration end to end, on SQLite and PostgreSQL: made over REST with its base
URL and token (stored encrypted), its catalog read from a loopback server speaking
Backstage's catalog API (the fixtures of tests/fixtures/upstream/backstage-catalog) by the
one app node that takes its lease, on connect and again when due or when its settings change;
a refused token is said on the source and what it declared before stays."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import Tenant
from tests.ingest import test_backstage
from tests.ingest.test_backstage import CATALOG_NODES, LOOPBACK, TOKEN, _Catalog
from tests.integrations.support import SECRET_KEY
from tests.integrations.test_cluster_watches import until
from trailmap.accounts.audit import OPERATOR
from trailmap.accounts.team import OPERATOR_AUTHORITY
from trailmap.app import create_app
from trailmap.graph.ask.snapshots import snapshot_for
from trailmap.graph.learn.declared import declared_sources
from trailmap.ingest.backstage_index import BackstageIndexer, index_backstage
from trailmap.integrations.integrations import (
    Integration,
    create_integration,
    get_integration,
    update_integration,
)
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

# The loopback Backstage of tests/ingest/test_backstage.py, serving the catalog fixtures.
backstage = test_backstage.backstage
_STALE_US = 7 * 24 * 3_600_000_000


async def make_backstage(db: Database, tenant: Tenant, url: str, token: str) -> Integration:
    integration, _secret = await create_integration(
        db,
        tenant.org.id,
        who=OPERATOR_AUTHORITY,
        by=OPERATOR,
        kind="backstage",
        name="acme-backstage",
        settings={"url": url, "token": token},
        secret_key=SECRET_KEY,
    )
    return integration


def indexer(db: Database, node: str, **options: float) -> BackstageIndexer:
    return BackstageIndexer(
        db,
        secret_key=SECRET_KEY,
        outbound=LOOPBACK,
        node=node,
        poll_seconds=options.get("poll_seconds", 0.05),
        index_seconds=options.get("index_seconds", 3600.0),
        lease_seconds=5.0,
    )


async def names(db: Database, tenant: Tenant) -> dict[str, tuple[str, ...]]:
    graph = await snapshot_for(db, tenant.org.id, at_us=None, stale_after_us=_STALE_US)
    return {n.name: n.sources for n in graph.nodes}


async def test_a_backstage_integration_is_read_on_connect_by_one_node_and_again_when_it_changes(
    backstage: tuple[str, type[_Catalog]], db: Database, tenant: Tenant
) -> None:
    url, handler = backstage
    integration = await make_backstage(db, tenant, url, TOKEN)
    shown = await get_integration(db, tenant.org.id, integration.id, who=OPERATOR_AUTHORITY)
    assert shown.as_json()["token_set"] is True
    assert TOKEN not in str(shown.as_json())
    first, second = indexer(db, "node-a"), indexer(db, "node-b")
    runs = [asyncio.create_task(one.run()) for one in (first, second)]
    try:
        await until(lambda: first.readings + second.readings >= 1)
        await asyncio.sleep(0.3)  # rounds in which either could read it again
        assert first.readings + second.readings == 1  # once, by one node
        found = await names(db, tenant)
        for name in CATALOG_NODES:
            assert found[name] == ("backstage",), name
        sources = await declared_sources(db, tenant.org.id)
        assert [(s["kind"], s["label"], s["error"]) for s in sources] == [
            ("backstage", "acme-backstage", None)
        ]
        assert sources[0]["revision"]

        # A new token (the old one revoked): read again, at once, by a node that read it.
        requests = len(handler.requests)
        await update_integration(
            db,
            tenant.org.id,
            integration.id,
            {"settings": {"token": "revoked"}},
            who=OPERATOR_AUTHORITY,
            by=OPERATOR,
            secret_key=SECRET_KEY,
        )
        await until(lambda: _error(db, tenant))
        assert len(handler.requests) > requests
        assert "401" in str(await _error(db, tenant))
        assert set(CATALOG_NODES) <= set(await names(db, tenant))  # what it declared stays
    finally:
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)


async def _error(db: Database, tenant: Tenant) -> str | None:
    sources = await declared_sources(db, tenant.org.id)
    return sources[0]["error"] if sources else None


async def test_a_backstage_is_read_again_when_due_and_an_entity_removed_goes_away(
    backstage: tuple[str, type[_Catalog]], db: Database, tenant: Tenant
) -> None:
    url, handler = backstage
    integration = await make_backstage(db, tenant, url, TOKEN)
    assert await index_backstage(db, integration, secret_key=SECRET_KEY, outbound=LOOPBACK)
    assert "wayback-search" in await names(db, tenant)
    handler.entities = [e for e in handler.entities if e["metadata"]["name"] != "wayback-search"]
    one = indexer(db, "node-a", index_seconds=0.2)
    run = asyncio.create_task(one.run())
    try:
        await until(lambda: _without(db, tenant, "wayback-search"))
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert one.readings >= 1


async def _without(db: Database, tenant: Tenant, name: str) -> bool:
    return name not in await names(db, tenant)


async def test_a_backstage_integration_made_over_rest_appears_in_the_graph_and_goes_when_deleted(
    backstage: tuple[str, type[_Catalog]], database_url: str, db: Database, tenant: Tenant
) -> None:
    url, _handler = backstage
    settings = Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        secret_key=SECRET_KEY,
        kubernetes_poll_seconds=0,
        backstage_poll_seconds=0.05,
        outbound_allowed_networks="127.0.0.1/32",
    )
    app = create_app(settings, database=db)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http,
    ):
        made = await http.post(
            "/api/v1/integrations",
            json={
                "kind": "backstage",
                "name": "acme-backstage",
                "settings": {"url": url, "token": TOKEN},
            },
            headers=tenant.admin_auth(),
        )
        assert made.status_code == 201, made.text
        assert TOKEN not in made.text
        assert made.json()["data"]["token_set"] is True
        await until(lambda: _present(db, tenant, "artist-lookup"))
        answer = await http.get(
            "/api/v1/graph/nodes", params={"query": "artist-lookup"}, headers=tenant.auth()
        )
        assert answer.json()["data"]["nodes"][0]["name"] == "artist-lookup"
        integration_id = made.json()["data"]["id"]
        gone = await http.delete(
            f"/api/v1/integrations/{integration_id}", headers=tenant.admin_auth()
        )
        assert gone.status_code == 200, gone.text
        assert "artist-lookup" not in await names(db, tenant)


async def _present(db: Database, tenant: Tenant, name: str) -> bool:
    return name in await names(db, tenant)
