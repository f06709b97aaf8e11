"""A repository integration over REST, on SQLite and PostgreSQL: connecting one asks for an
index and its services appear in the graph; a push to its default branch, delivered to the
organization's GitHub integration, indexes it again (the removed dependency goes away, the
new commit is recorded); indexing on demand; deleting it takes its services away."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Tenant
from tests.git_server import GitHttpServer, commit, make_repository, publish, serve_git
from tests.ingest.test_repository_indexing import LOOPBACK, demo_files
from tests.integrations.support import SECRET_KEY, fixture_bytes, github_headers
from trailmap.app import create_app
from trailmap.ingest.clone import CloneLimits
from trailmap.ingest.repository_indexer import IndexOptions, RepositoryIndexer
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(database_url: str, db: Database, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        secret_key=SECRET_KEY,
        repository_paths=str(tmp_path / "allowed"),
    )
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def indexer(db: Database, tmp_path: Path) -> RepositoryIndexer:
    """What the app's lifespan runs (the ASGI transport runs no lifespan): one round at a time."""
    return RepositoryIndexer(
        db,
        IndexOptions(
            local_roots=(str(tmp_path / "allowed"),),
            limits=CloneLimits(seconds=30),
            outbound=LOOPBACK,
            secret_key=SECRET_KEY,
        ),
        node="test-node",
    )


async def nodes(http: httpx.AsyncClient, tenant: Tenant) -> set[str]:
    answer = await http.get("/api/v1/graph/nodes", params={"limit": 100}, headers=tenant.auth())
    assert answer.status_code == 200, answer.text
    return {n["name"] for n in answer.json()["data"]["nodes"]}


async def edges_of(http: httpx.AsyncClient, tenant: Tenant, node: str) -> set[str]:
    answer = await http.get(f"/api/v1/graph/nodes/{node}", headers=tenant.auth())
    assert answer.status_code == 200, answer.text
    downstream = answer.json()["data"]["downstream"]
    return {e["to"] for e in downstream}


def push_payload(url: str, after: str) -> bytes:
    payload: dict[str, Any] = json.loads(fixture_bytes("github-webhooks", "push.new-branch.json"))
    payload["after"] = after
    now = datetime.now(UTC)
    payload["repository"]["pushed_at"] = int(now.timestamp())
    for one in [payload.get("head_commit") or {}, *payload.get("commits", [])]:
        one["timestamp"] = now.isoformat()
    for key in ("clone_url", "html_url", "git_url", "url"):
        payload["repository"][key] = url
    return json.dumps(payload).encode()


async def test_a_connected_repository_is_indexed_and_a_push_updates_it(
    http: httpx.AsyncClient, db: Database, tenant: Tenant, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    make_repository(work, demo_files())
    publish(work, tmp_path / "served" / "shop.git")
    with serve_git(tmp_path / "served") as server:
        await _connect_push_and_delete(http, db, tenant, tmp_path, work, server)


async def _connect_push_and_delete(
    http: httpx.AsyncClient,
    db: Database,
    tenant: Tenant,
    tmp_path: Path,
    work: Path,
    server: GitHttpServer,
) -> None:
    admin = tenant.admin_auth()
    url = server.url("shop.git")
    made = await http.post(
        "/api/v1/integrations",
        headers=admin,
        json={"kind": "repository", "name": "shop", "settings": {"url": url, "token": "t0k"}},
    )
    assert made.status_code == 201, made.text
    data = made.json()["data"]
    assert data["index"]["pending"] is True  # the answer says an index is on its way
    assert data["index"]["reason"] == "connected"
    assert data["token_set"] is True
    assert "t0k" not in made.text
    path = f"/api/v1/integrations/{data['id']}"

    assert await indexer(db, tmp_path).round() == [data["id"]]
    assert {"frontend", "checkoutservice", "redis-cart"} <= await nodes(http, tenant)
    assert "emailservice" in await edges_of(http, tenant, "checkoutservice")
    shown = (await http.get(path, headers=admin)).json()["data"]["index"]
    head = shown["reading"]["revision"]
    assert (shown["pending"], shown["reading"]["nodes"], shown["reading"]["edges"]) == (
        False,
        13,
        18,  # the manifests' 17, and frontend's shopping assistant the Helm chart deploys
    )
    assert shown["reading"]["error"] is None

    manifest = work / "kubernetes-manifests/checkoutservice.yaml"
    manifest.write_text(
        manifest.read_text().replace(
            '          - name: EMAIL_SERVICE_ADDR\n            value: "emailservice:5000"\n', ""
        )
    )
    pushed = commit(work, "checkout no longer mails")
    publish(work, tmp_path / "served" / "shop.git")
    github = await http.post(
        "/api/v1/integrations",
        headers=admin,
        json={"kind": "github", "name": "forge", "settings": {"service": "shop"}},
    )
    secret = github.json()["data"]["secret"]
    body = push_payload(url, pushed)
    delivered = await http.post(
        f"/api/v1/integrations/{github.json()['data']['id']}/webhook",
        content=body,
        headers=github_headers(body, secret, "push"),
    )
    assert delivered.status_code == 200, delivered.text
    assert (await http.get(path, headers=admin)).json()["data"]["index"]["pending"] is True

    assert await indexer(db, tmp_path).round() == [data["id"]]
    assert "emailservice" not in await edges_of(http, tenant, "checkoutservice")
    shown = (await http.get(path, headers=admin)).json()["data"]["index"]
    assert shown["reading"]["revision"] == pushed != head
    assert server.authorizations[-1] == "Basic b2F1dGgyOnQwaw=="  # oauth2:t0k

    asked = await http.post(f"{path}/index", headers=admin)
    assert asked.status_code == 202, asked.text
    assert asked.json()["data"]["index"]["reason"] == "asked for"
    assert await indexer(db, tmp_path).round() == [data["id"]]

    removed = await http.delete(path, headers=admin)
    assert removed.status_code == 200, removed.text
    assert "frontend" not in await nodes(http, tenant)


async def test_a_local_path_is_a_400_unless_the_operator_allows_its_folder(
    http: httpx.AsyncClient, tenant: Tenant, tmp_path: Path
) -> None:
    admin = tenant.admin_auth()
    for url, says in (
        ("/etc", "not within the folders"),
        ("file:///etc/passwd", "not within the folders"),
        ("ssh://git@example.com/a.git", "ssh"),
        ("https://u:p@example.com/a.git", "token setting"),
    ):
        answer = await http.post(
            "/api/v1/integrations",
            headers=admin,
            json={"kind": "repository", "name": "r", "settings": {"url": url}},
        )
        assert answer.status_code == 400, answer.text
        problem = answer.json()
        assert problem["details"][0]["field"] == "settings.url"
        assert says in problem["details"][0]["message"], problem
    (tmp_path / "allowed" / "shop").mkdir(parents=True)
    fine = await http.post(
        "/api/v1/integrations",
        headers=admin,
        json={
            "kind": "repository",
            "name": "r",
            "settings": {"url": str(tmp_path / "allowed/shop")},
        },
    )
    assert fine.status_code == 201, fine.text
    moved = await http.patch(
        f"/api/v1/integrations/{fine.json()['data']['id']}",
        headers=admin,
        json={"settings": {"url": "/etc"}},
    )
    assert moved.status_code == 400, moved.text
    branch = await http.patch(
        f"/api/v1/integrations/{fine.json()['data']['id']}",
        headers=admin,
        json={"settings": {"branch": "release"}},
    )
    assert branch.status_code == 200, branch.text
    assert branch.json()["data"]["index"]["reason"] == "changed"
    assert branch.json()["data"]["index"]["pending"] is True


async def test_indexing_is_for_repository_integrations_and_for_admins(
    http: httpx.AsyncClient, tenant: Tenant
) -> None:
    github = await http.post(
        "/api/v1/integrations", headers=tenant.admin_auth(), json={"kind": "github", "name": "g"}
    )
    path = f"/api/v1/integrations/{github.json()['data']['id']}/index"
    not_a_repository = await http.post(path, headers=tenant.admin_auth())
    assert not_a_repository.status_code == 400, not_a_repository.text
    as_writer = await http.post(path, headers=tenant.auth())
    assert as_writer.status_code == 403, as_writer.text
    unknown = await http.post(
        "/api/v1/integrations/00000000-0000-4000-8000-000000000000/index",
        headers=tenant.admin_auth(),
    )
    assert unknown.status_code == 404, unknown.text
