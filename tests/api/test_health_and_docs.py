"""Health, readiness, and the API's own documentation (served without a CDN)."""

from __future__ import annotations

import re

import httpx
import pytest

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
