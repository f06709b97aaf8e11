"""A kubernetes integration end to end, on SQLite and PostgreSQL: a real `trailmap serve`
whose supervisor watches a Kubernetes API server on loopback; the integration made over
REST with its kubeconfig, a finished rollout on the timeline over REST and through the
official MCP client's `query_events`, and the watch stopped when the integration is disabled."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.factories import make_key
from tests.integrations.support import SECRET_KEY
from tests.integrations.test_cluster_watches import deployment, until
from tests.kube_api import KubeApi, kubeconfig
from tests.server import module_database, running_server
from trailmap.accounts import create_org
from trailmap.storage import Database, migrate

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Any:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_kube") as found:
        yield found


async def test_a_rollout_in_a_cluster_connected_over_rest_is_what_was_deployed_today(
    database: tuple[str, Path],
) -> None:
    url, directory = database
    db = Database(url)
    try:
        migrate.upgrade(db)
        org = await create_org(db, "acme")
        admin = await make_key(db, org, scope="admin")
        reader = await make_key(db, org, scope="read-only")
    finally:
        db.close()
    cluster = KubeApi()
    cluster.load("Deployment", [deployment()])
    await cluster.start()
    env = {
        "TRAILMAP_SECRET_KEY": SECRET_KEY,
        "TRAILMAP_KUBERNETES_POLL_SECONDS": "0.2",
        "TRAILMAP_KUBERNETES_LEASE_SECONDS": "3",
        "TRAILMAP_OUTBOUND_ALLOWED_NETWORKS": "public,127.0.0.1/32",
    }
    try:
        with running_server(url, log_path=directory / "server.log", env=env) as base_url:
            async with httpx.AsyncClient(base_url=base_url) as http:
                await _connect_roll_out_and_ask(http, base_url, cluster, admin, reader)
    finally:
        await cluster.stop()


async def _connect_roll_out_and_ask(
    http: httpx.AsyncClient, base_url: str, cluster: KubeApi, admin: str, reader: str
) -> None:
    as_admin = {"Authorization": f"Bearer {admin}"}
    made = await http.post(
        "/api/v1/integrations",
        headers=as_admin,
        json={
            "kind": "kubernetes",
            "name": "prod-cluster",
            "settings": {
                "kubeconfig": kubeconfig(cluster.url, cluster.token),
                "cluster": "prod",
                "env_map": {"default": "production"},
            },
        },
    )
    assert made.status_code == 201, made.text
    assert "kubeconfig" not in made.text.replace("kubeconfig_set", "")
    path = f"/api/v1/integrations/{made.json()['data']['id']}"

    async def watch() -> dict[str, Any]:
        shown = await http.get(path, headers=as_admin)
        assert shown.status_code == 200, shown.text
        found: dict[str, Any] = shown.json()["data"]["watch"]
        return found

    async def watching() -> bool:
        return bool((await watch())["watching"])

    await until(watching, within=20)
    await until(cluster.watch_requests, within=20)
    await cluster.apply(deployment(6, "1.0"))

    as_reader = {"Authorization": f"Bearer {reader}"}

    async def deployed() -> list[dict[str, Any]]:
        answer = await http.get(
            "/api/v1/events", params={"from": "today", "type": "deployment"}, headers=as_reader
        )
        assert answer.status_code == 200, answer.text
        events: list[dict[str, Any]] = answer.json()["data"]["events"]
        return events

    await until(deployed, within=20)
    (event,) = await deployed()
    assert (event["version"], event["subject"]) == ("1.0", "production")
    assert (await watch())["last_event"] is not None

    transport_http = create_mcp_http_client(headers=as_reader)
    transport = streamable_http_client(f"{base_url}/mcp", http_client=transport_http)
    async with transport_http, Client(transport) as client:
        result = await client.call_tool("query_events", {"from": "today", "type": ["deployment"]})
    assert not result.is_error, result.content
    answer = result.structured_content
    assert answer is not None
    assert [e["id"] for e in answer["events"]] == [event["id"]]

    disabled = await http.patch(path, headers=as_admin, json={"status": "disabled"})
    assert disabled.status_code == 200, disabled.text

    async def stopped() -> bool:
        return not (await watch())["watching"]

    await until(stopped, within=20)
    await cluster.apply(deployment(7, "1.1"))
    await asyncio.sleep(1.0)
    assert len(await deployed()) == 1
