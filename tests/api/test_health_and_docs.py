"""Health, readiness, and the API's own documentation (served without a CDN)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import httpx
import pytest

from tests import databases
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database, migrate

pytestmark = pytest.mark.anyio


async def test_healthz_answers_without_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"success": True, "data": {"status": "ok"}}


async def test_readyz_reports_the_database_in_use(
    client: httpx.AsyncClient, database_url: str
) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    expected = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    assert response.json()["data"] == {"status": "ready", "database": expected}


async def test_the_openapi_document_describes_every_events_endpoint(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert set(schema["paths"]) >= {
        "/api/v1/events",
        "/api/v1/events/summary",
        "/api/v1/events/{event_id}",
        "/healthz",
        "/readyz",
    }
    post = schema["paths"]["/api/v1/events"]["post"]
    assert "application/cloudevents-batch+json" in post["requestBody"]["content"]
    assert "CloudEventIn" in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_the_docs_page_loads_its_assets_from_this_server(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets, "the docs page references no assets"
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by Trailmap"
        fetched = await client.get(asset)
        assert fetched.status_code == 200, asset


async def test_the_docs_page_runs_no_inline_script_and_cannot_be_framed(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in page.headers["content-security-policy"].split(";")
        if directive.strip()
    }
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no eval, no CDN
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]  # the page fetches /openapi.json, nothing else
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    # Every script the page runs is a file of this server, served as JavaScript.
    scripts = re.findall(r"<script([^>]*)>", page.text)
    assert scripts
    for attributes in scripts:
        source = re.search(r'src="(/[^"]+)"', attributes)
        assert source is not None, f"an inline script: <script{attributes}>"
        fetched = await client.get(source.group(1))
        assert fetched.status_code == 200, source.group(1)
        assert "javascript" in fetched.headers["content-type"], source.group(1)
    assert '"/openapi.json"' in (await client.get("/docs/swagger-init.js")).text


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own with no tables at all, as after the tables were dropped."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'empty.db'}")
        yield db
        db.close()
        return
    server = databases.find_postgres()
    if server is None:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    name = server.create_database(prefix="trailmap_readyz")
    db = Database(server.url_for(name))
    try:
        yield db
    finally:
        db.close()
        server.drop_database(name)


def _app_client(db: Database) -> httpx.AsyncClient:
    settings = Settings(database_url=db.url, retention_purge_interval_seconds=0)
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def _not_ready(response: httpx.Response) -> str:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "UNAVAILABLE"
    assert response.headers["retry-after"].isdigit()
    message: str = body["error"]
    assert "trailmap db upgrade" in message
    return message


async def test_readyz_is_not_ready_on_a_database_without_tables_and_says_why(
    empty_database: Database,
) -> None:
    async with _app_client(empty_database) as client:
        assert "no Trailmap tables" in _not_ready(await client.get("/readyz"))
        # Ready as soon as the schema is there: the answer is not kept from before.
        await anyio.to_thread.run_sync(migrate.upgrade, empty_database)
        assert (await client.get("/readyz")).status_code == 200


async def test_readyz_is_not_ready_on_a_schema_older_than_the_code(
    empty_database: Database,
) -> None:
    await anyio.to_thread.run_sync(migrate.upgrade, empty_database, "0001")
    async with _app_client(empty_database) as client:
        message = _not_ready(await client.get("/readyz"))
    assert "0001" in message
    assert str(migrate.head_revision(empty_database)) in message


async def test_readyz_stays_ready_on_a_schema_a_newer_release_migrated(
    empty_database: Database,
) -> None:
    # A rolling upgrade migrates first; the old nodes go on serving (migrations only add).
    await anyio.to_thread.run_sync(migrate.upgrade, empty_database)
    await empty_database.write(
        lambda conn: conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_next'")
    )
    async with _app_client(empty_database) as client:
        assert (await client.get("/readyz")).status_code == 200
