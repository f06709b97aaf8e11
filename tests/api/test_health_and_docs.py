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
