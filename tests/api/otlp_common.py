"""What the tests of the two OTLP receivers (traces, metrics) share: small limits, the
headers, a chunked body, and the refusals and docs every export route must get right."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.api.test_error_shape import assert_error_shape
from tests.conftest import Tenant
from tests.ingest.test_otlp_decoding import gzip_bomb
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database

MAX_BODY = 64 * 1024
MAX_DECODED = 256 * 1024
# Entries one export may hold (TRAILMAP_OTLP_MAX_*), small enough to reach cheaply.
MAX_RESOURCES, MAX_SCOPES, MAX_SPANS, MAX_METRICS, MAX_DATA_POINTS = 4, 8, 64, 32, 64
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def otlp_client(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The app with small OTLP limits, so the limits are cheap to reach."""
    small = settings.model_copy(
        update={
            "otlp_max_body_bytes": MAX_BODY,
            "otlp_max_decoded_bytes": MAX_DECODED,
            "otlp_max_resources": MAX_RESOURCES,
            "otlp_max_scopes": MAX_SCOPES,
            "otlp_max_spans": MAX_SPANS,
            "otlp_max_metrics": MAX_METRICS,
            "otlp_max_data_points": MAX_DATA_POINTS,
        }
    )
    transport = httpx.ASGITransport(app=create_app(small, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture(params=["protobuf", "json"])
def encoding(request: pytest.FixtureRequest) -> str:
    """The two encodings of OTLP/HTTP."""
    value: str = request.param
    return value


class ChunkedBody:
    """A body without a length, sent in chunks, remembering how many the server pulled."""

    def __init__(self, chunks: int, size: int = 8 * 1024) -> None:
        self.chunks, self.size, self.pulled = chunks, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield b"\x00" * self.size


async def refused(
    client: httpx.AsyncClient, path: str, body: Any, headers: dict[str, str], status: int
) -> dict[str, Any]:
    """Post `body` to `path`; it must be refused with `status` in the one error shape."""
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    return assert_error_shape(response)


async def refuses_a_wrong_content_type(
    client: httpx.AsyncClient, tenant: Tenant, path: str, content_type: str | None
) -> str:
    headers = tenant.auth() | ({"Content-Type": content_type} if content_type else {})
    error: str = (await refused(client, path, b"{}", headers, 415))["error"]
    assert "application/x-protobuf" in error
    return error


async def refuses_an_unknown_content_encoding(
    client: httpx.AsyncClient, tenant: Tenant, path: str
) -> None:
    headers = {**tenant.auth(), **PROTOBUF, "Content-Encoding": "br"}
    assert "gzip" in (await refused(client, path, b"\x00", headers, 415))["error"]


async def refuses_a_body_declared_too_large(
    client: httpx.AsyncClient, tenant: Tenant, path: str
) -> str:
    """Before reading it: at most one chunk is pulled."""
    body = ChunkedBody(chunks=16)
    headers = {**tenant.auth(), **PROTOBUF, "Content-Length": str(16 * body.size)}
    error: str = (await refused(client, path, body, headers, 413))["error"]
    assert body.pulled <= 1
    return error


async def refuses_a_gzip_bomb(client: httpx.AsyncClient, tenant: Tenant, path: str) -> None:
    bomb = gzip_bomb(64 * 1024 * 1024)
    assert len(bomb) < MAX_BODY
    headers = {**tenant.auth(), **PROTOBUF, "Content-Encoding": "gzip"}
    assert "decompression" in (await refused(client, path, bomb, headers, 413))["error"]


async def refuses_too_many_entries(
    client: httpx.AsyncClient,
    tenant: Tenant,
    path: str,
    body: bytes,
    encoding: str,
    *,
    words: tuple[str, ...],
) -> None:
    """`body` (gzip-compressed, in `encoding`) holds more entries than the app's limits:
    413 in the one error shape, with a message naming the limit and how to stay under it."""
    headers = {**tenant.auth(), **(PROTOBUF if encoding == "protobuf" else JSON)}
    error = await refused(
        client, path, gzip.compress(body), {**headers, "Content-Encoding": "gzip"}, 413
    )
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    for word in words:
        assert word in error["error"], error["error"]


def assert_documented(settings: Settings, db: Database, path: str) -> None:
    """The route's OpenAPI operation names both encodings, in and out, and its errors."""
    # Mounted twice, the route would be warned of as a duplicate operation, an error here.
    operation = create_app(settings, database=db).openapi()["paths"][path]["post"]
    encodings = {"application/x-protobuf", "application/json"}
    assert set(operation["requestBody"]["content"]) == encodings
    assert set(operation["responses"]["200"]["content"]) == encodings
    assert {"400", "401", "403", "413", "415", "429", "503"} <= set(operation["responses"])
