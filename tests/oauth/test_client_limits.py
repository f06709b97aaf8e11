"""What anyone may store without signing in is bounded: client registrations (their size and
each field) and the authorization requests waiting for consent, through the real endpoints
of the app (in process, on each database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import orjson
import pytest

from tests.oauth.test_oauth_attacks import CALLBACK, pkce
from trailmap.app import create_app
from trailmap.oauth import TrailmapOAuthProvider
from trailmap.oauth.client_limits import MAX_REGISTRATION_BYTES
from trailmap.settings import Settings
from trailmap.storage import Connection, Database

pytestmark = pytest.mark.anyio

PENDING_LIMIT = 3


@dataclass
class Server:
    http: httpx.AsyncClient
    provider: TrailmapOAuthProvider
    db: Database


@pytest.fixture
async def server(database_url: str, db: Database) -> AsyncIterator[Server]:
    settings = Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        oauth_max_pending_per_client=PENDING_LIMIT,
    )
    app = create_app(settings, database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield Server(http, app.state.trailmap.oauth, db)


def _metadata(**fields: Any) -> dict[str, Any]:
    return {
        "client_name": "Limits test",
        "redirect_uris": [CALLBACK],
        "token_endpoint_auth_method": "none",
        **fields,
    }


def _clients(db: Database) -> int:
    def count(conn: Connection) -> int:
        return int(conn.exec_driver_sql("SELECT count(*) FROM oauth_clients").scalar_one())

    return db.read_sync(count)


def _pending(db: Database) -> int:
    def count(conn: Connection) -> int:
        return int(conn.exec_driver_sql("SELECT count(*) FROM oauth_requests").scalar_one())

    return db.read_sync(count)


def _refusal(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_client_metadata"
    description: str = body["error_description"]
    return description


# -- registration ----------------------------------------------------------------------------


def _padded(size: int) -> bytes:
    """A valid registration of exactly `size` bytes (an unknown field, ignored, pads it)."""
    bare = orjson.dumps({**_metadata(), "padding": ""})
    return orjson.dumps({**_metadata(), "padding": "x" * (size - len(bare))})


async def test_a_registration_of_exactly_8_kib_is_accepted(server: Server) -> None:
    body = _padded(MAX_REGISTRATION_BYTES)
    assert len(body) == MAX_REGISTRATION_BYTES
    response = await server.http.post(
        "/register", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert _clients(server.db) == 1


async def test_a_registration_over_8_kib_is_refused_with_invalid_client_metadata(
    server: Server,
) -> None:
    body = _padded(MAX_REGISTRATION_BYTES + 1)
    response = await server.http.post(
        "/register", content=body, headers={"Content-Type": "application/json"}
    )
    assert "over 8192 bytes" in _refusal(response)
    assert response.headers["cache-control"] == "no-store"
    assert _clients(server.db) == 0


async def test_a_registration_over_8_kib_sent_in_chunks_without_a_length_is_refused(
    server: Server,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"client_name": "Limits test", "redirect_uris": ["' + CALLBACK.encode() + b'"], '
        for _ in range(64):  # 4 MiB in all, were it read to the end
            yield b'"padding": "' + b"x" * 65_536 + b'", '
        yield b'"token_endpoint_auth_method": "none"}'

    response = await server.http.post(
        "/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "over 8192 bytes" in _refusal(response)
    assert _clients(server.db) == 0


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"redirect_uris": [f"{CALLBACK}/{n}" for n in range(11)]}, "redirect_uris lists 11"),
        ({"redirect_uris": [CALLBACK + "/" + "x" * 1000]}, "redirect_uris[0] is 1029"),
        ({"client_name": "x" * 201}, "client_name is 201"),
        ({"client_uri": "https://app.example/" + "x" * 990}, "client_uri is 1010"),
        ({"logo_uri": "https://app.example/" + "x" * 990}, "logo_uri is 1010"),
        ({"contacts": [f"sre{n}@app.example" for n in range(6)]}, "contacts lists 6"),
        ({"contacts": ["x" * 321]}, "contacts[0] is 321"),
        ({"software_id": "x" * 201}, "software_id is 201"),
        (
            {"grant_types": ["authorization_code", "refresh_token", *(["x"] * 9)]},
            "grant_types lists 11",
        ),
        ({"grant_types": ["authorization_code", "x" * 201]}, "grant_types[1] is 201"),
        ({"jwks": {"keys": [{"n": "x" * 7900}]}}, "bytes as JSON; at most 8192"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_a_registration_with_a_field_over_its_bound_is_refused_naming_the_field(
    server: Server, fields: dict[str, Any], named: str
) -> None:
    response = await server.http.post("/register", json=_metadata(**fields))
    assert named in _refusal(response)
    assert _clients(server.db) == 0


async def test_a_registration_at_every_bound_is_accepted(server: Server) -> None:
    metadata = _metadata(
        client_name="x" * 200,
        redirect_uris=[f"{CALLBACK}/{n}" for n in range(9)] + ["https://a.example/" + "x" * 982],
        contacts=[f"sre{n}@app.example" for n in range(5)],
    )
    response = await server.http.post("/register", json=metadata)
    assert response.status_code == 201, response.text
    assert len(response.json()["redirect_uris"]) == 10


# -- pending authorization requests -----------------------------------------------------------


async def _register(server: Server) -> str:
    response = await server.http.post("/register", json=_metadata())
    assert response.status_code == 201, response.text
    client_id: str = response.json()["client_id"]
    return client_id


async def _authorize(server: Server, client_id: str, **extra: str) -> httpx.Response:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "state": "state-1",
        "code_challenge": pkce()[1],
        "code_challenge_method": "S256",
        **extra,
    }
    return await server.http.get(f"/authorize?{urlencode(params)}")


def _request_id(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert location.path == "/oauth/consent"
    return dict(parse_qsl(location.query))["request"]


def _error(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return dict(parse_qsl(urlsplit(location).query))


async def test_a_client_may_have_only_so_many_requests_awaiting_consent(server: Server) -> None:
    client_id = await _register(server)
    waiting = [_request_id(await _authorize(server, client_id)) for _ in range(PENDING_LIMIT)]

    refused = _error(await _authorize(server, client_id))
    assert refused["error"] == "temporarily_unavailable"
    assert f"{PENDING_LIMIT} sign-ins for this client are waiting" in refused["error_description"]
    assert refused["state"] == "state-1"
    assert _pending(server.db) == PENDING_LIMIT

    # Another client is not held up by this one's requests.
    _request_id(await _authorize(server, await _register(server)))
    # An answered request makes room.
    await server.provider.deny(waiting[0])
    _request_id(await _authorize(server, client_id))


async def test_a_state_over_2048_characters_is_refused_and_nothing_waits(server: Server) -> None:
    client_id = await _register(server)
    refused = _error(await _authorize(server, client_id, state="s" * 2049))
    assert refused["error"] == "invalid_request"
    assert "state is 2049 characters long; at most 2048" in refused["error_description"]
    assert _pending(server.db) == 0
    _request_id(await _authorize(server, client_id, state="s" * 2048))


async def test_a_scope_repeated_in_the_request_is_kept_once(server: Server) -> None:
    client_id = await _register(server)
    request_id = _request_id(await _authorize(server, client_id, scope=" ".join(["read"] * 500)))
    _client, params = await server.provider.pending(request_id)
    assert params["scopes"] == ["read"]
