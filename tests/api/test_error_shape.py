"""One error shape everywhere: walk every documented route with every method, without
credentials and with garbage, and check each 4xx body is exactly the contract's shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import httpx
import pytest

from tests.conftest import Tenant
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

# INTERFACES.md, "HTTP: events"; 415 is documented on POST /api/v1/events.
CONTRACT_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "QUOTA_EXCEEDED",
    503: "UNAVAILABLE",
}
# A method a route does not have: the client sent the wrong request, said with an Allow header.
_METHOD_NOT_ALLOWED = {405: "VALIDATION_ERROR"}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_GARBAGE_PATH_VALUE = "%00..%F0%9F%92%A5%20" + "z" * 40


class HTTPResponse(Protocol):
    """What the checks read of a response, from httpx or from Starlette's TestClient."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def text(self) -> str: ...
    def json(self, **kwargs: Any) -> Any: ...


def assert_error_shape(response: HTTPResponse) -> dict[str, Any]:
    """The one error shape, with the code that belongs to the status; returns the body."""
    known = {**CONTRACT_CODES, **_METHOD_NOT_ALLOWED}
    assert response.status_code in known, f"{response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"success", "error", "code", "details"}, body
    assert body["success"] is False
    assert isinstance(body["error"], str)
    assert body["error"].strip(), "an error must say what to do"
    assert body["code"] == known[response.status_code], (response.status_code, body)
    assert isinstance(body["details"], list)
    for detail in body["details"]:
        assert isinstance(detail, dict), detail
        assert isinstance(detail.get("message"), str), detail
        assert detail["message"].strip()
        assert detail.get("field") is None or isinstance(detail["field"], str), detail
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer ")
    if response.status_code in (429, 503):
        assert int(response.headers["retry-after"]) > 0
    if response.status_code == 405:
        assert response.headers["allow"]
    return body


# Authenticated by the delivery's own signature, not a key: an id that names no integration
# is a 404 in the one shape, whatever the Authorization header says.
_SIGNED = {"/api/v1/integrations/{integration_id}/webhook"}


def _routes(settings: Settings, db: Database) -> list[tuple[str, str, set[str]]]:
    """(path with garbage in its parameters, path template, documented methods)."""
    paths: dict[str, dict[str, Any]] = create_app(settings, database=db).openapi()["paths"]
    routes = []
    for template, operations in paths.items():
        path = template
        for parameter in (
            "{event_id}",
            "{node}",
            "{email}",
            "{integration_id}",
            "{freeze_id}",
            "{policy_id}",
            "{channel_id}",
            "{rule_id}",
            "{delivery_id}",
        ):
            path = path.replace(parameter, _GARBAGE_PATH_VALUE)
        assert "{" not in path, f"give {template} a garbage value for its parameter"
        routes.append((path, template, {m.upper() for m in operations}))
    return routes


def test_the_walk_covers_the_documented_routes(settings: Settings, db: Database) -> None:
    templates = {template for _path, template, _methods in _routes(settings, db)}
    assert {"/api/v1/events", "/api/v1/events/{event_id}", "/readyz"} <= templates
    assert {"/api/v1/otlp/v1/traces", "/api/v1/graph/nodes/{node}"} <= templates
    assert {"/api/v1/members/{email}", "/api/v1/invitations", "/api/v1/audit"} <= templates
    assert {"/api/v1/guardrails/check", "/api/v1/guardrails/freezes/{freeze_id}"} <= templates


async def test_every_route_and_method_without_credentials_answers_in_the_one_shape(
    client: httpx.AsyncClient, settings: Settings, db: Database
) -> None:
    for path, template, documented in _routes(settings, db):
        for method in METHODS:
            response = await client.request(method, path)
            if template.startswith("/api/") and method in documented:
                expected = 404 if template in _SIGNED else 401
                assert response.status_code == expected, (method, path, response.text)
            if method not in documented and method != "OPTIONS":
                assert response.status_code == 405, (method, path, response.text)
            if response.status_code >= 400:
                assert_error_shape(response)


_GARBAGE_HEADERS: list[dict[str, str]] = [
    {"Authorization": "Bearer garbage"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"},
    {"Authorization": "tmk_"},
    {"Authorization": "Bearer tmk_" + "A" * 49},
    {"Authorization": "Bearer " + "x" * 5000},
]


@pytest.mark.parametrize("headers", _GARBAGE_HEADERS, ids=lambda h: h["Authorization"][:20])
async def test_every_route_and_method_with_a_garbage_key_answers_in_the_one_shape(
    client: httpx.AsyncClient, settings: Settings, db: Database, headers: dict[str, str]
) -> None:
    for path, template, documented in _routes(settings, db):
        for method in METHODS:
            response = await client.request(method, path, headers=headers)
            if template.startswith("/api/") and method in documented:
                expected = 404 if template in _SIGNED else 401
                assert response.status_code == expected, (method, path, response.text)
            if response.status_code >= 400:
                assert_error_shape(response)


_NO_INPUT = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("HEAD", "/healthz"),
    ("HEAD", "/readyz"),
    ("GET", "/api/v1/metrics/settings"),
    ("GET", "/api/v1/organization"),
    ("GET", "/api/v1/organization/usage"),
    # Any key of the organization reads its guardrails (those who deploy work under them).
    ("GET", "/api/v1/guardrails/freezes"),
    ("GET", "/api/v1/guardrails/policies"),
    ("GET", "/metrics"),
    ("HEAD", "/metrics"),
    ("GET", "/api/v1/notifications/channels"),
    ("GET", "/api/v1/notifications/rules"),
}

_GARBAGE_QUERY = (
    "?limit=abc&from=soon&to=-&timezone=Mars%2FOlympus&cursor=%FF&severity=HIGH&type=%00"
)


async def test_every_route_and_method_with_a_valid_key_and_garbage_input_answers_in_the_shape(
    client: httpx.AsyncClient, tenant: Tenant, settings: Settings, db: Database
) -> None:
    bodies: list[tuple[bytes, str | None]] = [
        (b"\x00\xff garbage", "text/plain"),
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[]", "application/cloudevents-batch+json"),
        (b'{"specversion": 1}', None),
    ]
    for token in (tenant.writer, tenant.reader, tenant.admin):
        for path, template, _documented in _routes(settings, db):
            if token == tenant.admin and not template.startswith("/api/v1/notifications"):
                continue  # an ADMIN key reaches past 403 on the notifications' routes
            for method in METHODS:
                for content, media in bodies:
                    headers = {"Authorization": f"Bearer {token}"}
                    if media is not None:
                        headers["Content-Type"] = media
                    response = await client.request(
                        method, path + _GARBAGE_QUERY, content=content, headers=headers
                    )
                    if response.status_code >= 400:
                        assert_error_shape(response)
                    else:
                        # Only what takes neither a query nor a body may succeed here.
                        assert (method, path) in _NO_INPUT, (method, path, response.text)


async def test_an_unknown_route_answers_not_found_in_the_one_shape(
    client: httpx.AsyncClient,
) -> None:
    # (/api/v1/events/a/b is a route: a producer's id may hold slashes.)
    for path in ("/nope", "/api/v2/events", "/api/v1/event", "/api/v1/nodes/a/b"):
        body = assert_error_shape(await client.get(path))
        assert body["code"] == "NOT_FOUND"
        assert "/api/v1" in body["error"]


async def test_a_head_request_never_fails_on_the_server(client: httpx.AsyncClient) -> None:
    response = await client.head("/api/v1/events")
    assert 400 <= response.status_code < 500
