"""A repository integration end to end, on SQLite and PostgreSQL: a real `trailmap serve`
whose indexer reads a remote served by `git http-backend` on loopback. Connecting it over
REST makes its services appear in the graph within seconds; hostile repositories (a YAML
bomb, a remote that stalls) are recorded with their reason while the server keeps answering
/healthz."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factories import make_key
from tests.git_server import make_repository, publish, serve_git
from tests.ingest.test_repository_indexing import BOMB, demo_files
from tests.integrations.support import SECRET_KEY
from tests.integrations.test_cluster_watches import until
from tests.server import module_database, running_server
from trailmap.accounts import create_org
from trailmap.storage import Database, migrate

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Any:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_repo") as found:
        yield found


async def test_a_repository_connected_over_rest_shows_its_services_within_seconds(
    database: tuple[str, Path], tmp_path: Path
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
    make_repository(tmp_path / "shop", demo_files())
    publish(tmp_path / "shop", tmp_path / "served" / "shop.git")
    make_repository(tmp_path / "bomb", {"compose.yaml": BOMB})
    publish(tmp_path / "bomb", tmp_path / "served" / "bomb.git")
    env = {
        "TRAILMAP_SECRET_KEY": SECRET_KEY,
        # Only what the node asks for itself is indexed at once; no poll finds it first.
        "TRAILMAP_REPOSITORY_POLL_SECONDS": "600",
        "TRAILMAP_REPOSITORY_CLONE_SECONDS": "3",
        "TRAILMAP_OUTBOUND_ALLOWED_NETWORKS": "public,127.0.0.1/32",
    }
    with (
        serve_git(tmp_path / "served") as remote,
        serve_git(tmp_path / "stalled", stall=True) as stalled,
        running_server(url, log_path=directory / "server.log", env=env) as base_url,
    ):
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            try:
                await _connect(http, admin, reader, remote.url("shop.git"))
                await _hostile(http, admin, remote.url("bomb.git"), stalled.url("slow.git"))
            except AssertionError as failed:
                log = (directory / "server.log").read_text(errors="replace")[-6000:]
                raise AssertionError(f"{failed}\n--- the server's log ---\n{log}") from failed


async def _connect(http: httpx.AsyncClient, admin: str, reader: str, shop: str) -> None:
    as_admin = {"Authorization": f"Bearer {admin}"}
    made = await http.post(
        "/api/v1/integrations",
        headers=as_admin,
        json={"kind": "repository", "name": "shop", "settings": {"url": shop}},
    )
    assert made.status_code == 201, made.text
    assert made.json()["data"]["index"]["pending"] is True

    async def services() -> set[str]:
        answer = await http.get(
            "/api/v1/graph/nodes",
            params={"limit": 100},
            headers={"Authorization": f"Bearer {reader}"},
        )
        assert answer.status_code == 200, answer.text
        return {n["name"] for n in answer.json()["data"]["nodes"]}

    async def appeared() -> bool:
        return {"frontend", "checkoutservice", "redis-cart"} <= await services()

    # Seconds, not the schedule's hour nor the 600 s poll: the node that was asked indexes at
    # once (1.3 s to 2.1 s measured here; the bound leaves room for a loaded machine).
    await until(appeared, within=30)
    shown = await http.get(f"/api/v1/integrations/{made.json()['data']['id']}", headers=as_admin)
    reading = shown.json()["data"]["index"]["reading"]
    # 13 workloads and 18 edges: the Kubernetes manifests' 17, and frontend's
    # SHOPPING_ASSISTANT_SERVICE_ADDR, whose service only the Helm chart deploys.
    assert (reading["nodes"], reading["edges"], len(reading["revision"])) == (13, 18, 40)


async def _hostile(http: httpx.AsyncClient, admin: str, bomb: str, slow: str) -> None:
    as_admin = {"Authorization": f"Bearer {admin}"}
    paths = []
    for name, url in (("bomb", bomb), ("slow", slow)):
        made = await http.post(
            "/api/v1/integrations",
            headers=as_admin,
            json={"kind": "repository", "name": name, "settings": {"url": url}},
        )
        assert made.status_code == 201, made.text
        paths.append(f"/api/v1/integrations/{made.json()['data']['id']}")

    async def index_of(path: str) -> dict[str, Any]:
        answer = await http.get(path, headers=as_admin)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()["data"]["index"]
        return found

    states: list[dict[str, Any]] = []

    async def both_done() -> bool:
        healthy = await http.get("/healthz")
        assert healthy.status_code == 200, healthy.text
        states[:] = [await index_of(p) for p in paths]
        return all(s["reading"] is not None for s in states)

    try:
        await until(both_done, within=45)
    except AssertionError as failed:
        raise AssertionError(f"{failed}: {states}") from failed
    bomb_reading = (await index_of(paths[0]))["reading"]
    assert bomb_reading["error"] is None
    assert {s["file"] for s in bomb_reading["skipped"]} == {"compose.yaml"}
    slow_reading = (await index_of(paths[1]))["reading"]
    assert slow_reading["error"] == "the clone took longer than 3 seconds and was stopped"
    assert (await http.get("/healthz")).status_code == 200
