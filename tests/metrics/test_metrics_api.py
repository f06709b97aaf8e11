"""Metrics over REST: points pushed to POST /api/v1/metrics, each organization's metric
settings, and GET /api/v1/events/{id}/metrics comparing a service's metrics before and after
a change, from pushed points, from spans sent by the OpenTelemetry SDK to a real server, and
from a real Prometheus, which must give the same verdict as the same points pushed."""

from __future__ import annotations

import random
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import SecretStr, ValidationError

from tests.conftest import Tenant
from tests.factories import make_key, make_org
from tests.metrics.conftest import StartPrometheus
from tests.metrics.prometheus_server import to_openmetrics
from tests.server import running_server
from trailmap import clock
from trailmap.app import create_app
from trailmap.metrics.settings import read_settings
from trailmap.outbound import DEFAULT_ALLOWED_NETWORKS
from trailmap.settings import Settings
from trailmap.storage import Database
from trailmap.storage import metrics as store

pytestmark = pytest.mark.anyio

MINUTE_US = 60_000_000
WINDOW_MINUTES = 120
SERVICE = "checkout"
ENVIRONMENT = "production"
SECRET_KEY = "metrics-api-test-secret-key-of-32-characters"
GAUGE = 'error_rate{service="$service",env="$environment"}'
_POLL_TIMEOUT_S = 10.0


# --- helpers -------------------------------------------------------------------------------


def _change_time() -> datetime:
    """The change under study: three hours ago on a whole minute, so both two-hour windows
    are complete and every per-minute point lies on a multiple of 60 s."""
    now = clock.now().astimezone(UTC).replace(second=0, microsecond=0)
    return now - timedelta(hours=3)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _minutes(change: datetime, first: int, last: int) -> list[datetime]:
    """The minutes change+first ... change+last-1."""
    return [change + timedelta(minutes=m) for m in range(first, last)]


def _points(
    name: str,
    change: datetime,
    before: Sequence[float],
    after: Sequence[float],
    *,
    service: str = SERVICE,
) -> list[dict[str, Any]]:
    """Per-minute points: `before` ending the minute before the change, `after` from it."""
    times = _minutes(change, -len(before), len(after))
    return [
        {"name": name, "value": v, "time": _iso(t), "service": service, "subject": ENVIRONMENT}
        for t, v in zip(times, [*before, *after], strict=True)
    ]


def _error_rates(seed: int) -> tuple[list[float], list[float]]:
    """Two hours of error rates around 0.5 %, then two hours around 5 %."""
    rng = random.Random(seed)
    before = [max(0.0, rng.gauss(0.005, 0.0015)) for _ in range(WINDOW_MINUTES)]
    after = [max(0.0, rng.gauss(0.05, 0.01)) for _ in range(WINDOW_MINUTES)]
    return before, after


def _same_traffic(seed: int) -> tuple[list[float], list[float]]:
    """Throughput from one distribution on both sides: the very same values, reshuffled."""
    rng = random.Random(seed)
    before = [round(rng.uniform(40.0, 60.0), 3) for _ in range(WINDOW_MINUTES)]
    after = list(before)
    rng.shuffle(after)
    return before, after


def _ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True
    data: dict[str, Any] = body["data"]
    return data


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one error shape, with this status and code; returns the body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"success", "error", "code", "details"}, body
    assert body["success"] is False
    assert body["code"] == code
    assert isinstance(body["error"], str)
    assert body["error"].strip()
    assert isinstance(body["details"], list)
    return body


async def _post_event(
    http: httpx.AsyncClient, token: str, at: datetime, *, service: str = SERVICE
) -> str:
    sent = await http.post(
        "/api/v1/events",
        json={
            "specversion": "1.0",
            "type": "deployment",
            "source": f"//github.com/acme/{service}",
            "time": _iso(at),
            "service": service,
            "subject": ENVIRONMENT,
            "version": "v2.0.0",
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    stored_id: str = _ok(sent, 201)["accepted"][0]["id"]
    return stored_id


async def _push(http: httpx.AsyncClient, token: str, points: list[dict[str, Any]]) -> None:
    counts = _ok(
        await http.post(
            "/api/v1/metrics", json=points, headers={"Authorization": f"Bearer {token}"}
        ),
        201,
    )["counts"]
    assert counts == {"accepted": len(points), "rejected": 0}


async def _around(
    http: httpx.AsyncClient, token: str, event_id: str, *metrics: str, window: str = "2h"
) -> httpx.Response:
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("window", window),
        *(("metric", m) for m in metrics),
    ]
    return await http.get(
        f"/api/v1/events/{event_id}/metrics",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
    )


def _by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in data["metrics"]}


async def _stored(db: Database, org_id: str, name: str, **where: str) -> list[tuple[int, float]]:
    """(time_us, value) of every stored point of the metric, read from the database."""
    rows = await db.read(
        store.points,
        org_id,
        service=where.get("service", ""),
        environment=where.get("environment", "default"),
        names=[name],
        from_us=0,
        to_us=clock.now_us() + 2 * 86_400_000_000,
    )
    return [(int(r[3]), float(r[4])) for r in rows]


# The test's Prometheus servers listen on loopback, which the default policy refuses.
WITH_LOOPBACK = f"{DEFAULT_ALLOWED_NETWORKS},127.0.0.0/8"


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The `client` fixture's settings: the defaults, with loopback allowed."""
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        outbound_allowed_networks=WITH_LOOPBACK,
    )


@asynccontextmanager
async def _app(
    database_url: str,
    db: Database,
    *,
    secret_key: str | None,
    outbound_allowed_networks: str = WITH_LOOPBACK,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, with or without TRAILMAP_SECRET_KEY whatever the environment says."""
    settings = Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        secret_key=SecretStr(secret_key) if secret_key else None,
        outbound_allowed_networks=outbound_allowed_networks,
    )
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def keyed(database_url: str, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with _app(database_url, db, secret_key=SECRET_KEY) as http:
        yield http


@pytest.fixture
async def keyless(database_url: str, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with _app(database_url, db, secret_key=None) as http:
        yield http


async def _other_tenant(db: Database) -> Tenant:
    org = await make_org(db)
    return Tenant(
        org=org,
        writer=await make_key(db, org, scope="read-write"),
        reader=await make_key(db, org, scope="read-only"),
        admin=await make_key(db, org, scope="admin"),
    )


# --- POST /api/v1/metrics ------------------------------------------------------------------


async def test_one_point_is_stored_and_answered_201(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    at = clock.now().replace(microsecond=0) - timedelta(minutes=5)

    sent = await client.post(
        "/api/v1/metrics",
        json={"name": "queue_depth", "value": 42, "time": _iso(at), "labels": {"queue": "a"}},
        headers=tenant.auth(),
    )

    assert _ok(sent, 201) == {"counts": {"accepted": 1, "rejected": 0}, "rejected": []}
    assert await _stored(db, tenant.org.id, "queue_depth") == [(clock.to_us(at), 42.0)]


async def test_a_batch_stores_its_valid_points_and_lists_each_invalid_one(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    at = clock.now().replace(microsecond=0) - timedelta(minutes=10)
    good = {"name": "queue_depth", "value": 1.5, "time": _iso(at)}
    batch: list[Any] = [
        good,
        {"value": 1, "time": _iso(at)},
        {"name": "queue_depth", "value": "NaN", "time": _iso(at)},
        {"name": "queue_depth", "value": 2, "time": "2026-01-01T10:00:00"},
        {**good, "unit": "items"},
        {**good, "labels": {f"l{i}": "x" for i in range(21)}},
        {**good, "labels": {"queue": ["a", "b"]}},
        {**good, "subject": "p" * 51},
        {**good, "time": _iso(at + timedelta(minutes=1)), "value": 2.5},
    ]

    sent = await client.post("/api/v1/metrics", json=batch, headers=tenant.auth())

    data = _ok(sent, 200)
    assert data["counts"] == {"accepted": 2, "rejected": 7}
    rejected = {(r["index"], r["field"]): r["message"] for r in data["rejected"]}
    assert set(rejected) == {
        (1, "name"),
        (2, "value"),
        (3, "time"),
        (4, "unit"),
        (5, "labels"),
        (6, "labels.queue"),
        (7, "subject"),
    }
    assert "required" in rejected[(1, "name")]
    assert "number" in rejected[(2, "value")]
    assert "time zone" in rejected[(3, "time")]
    assert "unknown field 'unit'" in rejected[(4, "unit")]
    assert "21 labels; at most 20" in rejected[(5, "labels")]
    assert "string" in rejected[(6, "labels.queue")]
    assert "51 characters; at most 50" in rejected[(7, "subject")]
    assert await _stored(db, tenant.org.id, "queue_depth") == [
        (clock.to_us(at), 1.5),
        (clock.to_us(at + timedelta(minutes=1)), 2.5),
    ]


async def test_a_batch_with_no_valid_point_is_refused_in_the_error_shape(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    batch = [{"value": 1, "time": "NOW"}, {"name": "x", "value": "high", "time": "NOW"}]

    body = _error(
        await client.post("/api/v1/metrics", json=batch, headers=tenant.auth()),
        400,
        "VALIDATION_ERROR",
    )

    assert {(d["index"], d["field"]) for d in body["details"]} == {(0, "name"), (1, "value")}
    assert await _stored(db, tenant.org.id, "x") == []


async def test_an_empty_batch_is_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = _error(
        await client.post("/api/v1/metrics", json=[], headers=tenant.auth()),
        400,
        "VALIDATION_ERROR",
    )
    assert "empty" in body["error"]


async def test_a_batch_larger_than_max_batch_points_is_refused_whole(
    database_url: str, db: Database, tenant: Tenant
) -> None:
    settings = Settings(
        database_url=database_url, retention_purge_interval_seconds=0, max_batch_points=3
    )
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    at = clock.now().replace(microsecond=0) - timedelta(minutes=10)
    points = [
        {"name": "small", "value": i, "time": _iso(at + timedelta(minutes=i))} for i in range(4)
    ]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        body = _error(
            await http.post("/api/v1/metrics", json=points, headers=tenant.auth()),
            400,
            "VALIDATION_ERROR",
        )
        assert "at most 3 points" in str(body)
        assert _ok(await http.post("/api/v1/metrics", json=points[:3], headers=tenant.auth()), 201)
    assert len(await _stored(db, tenant.org.id, "small")) == 3


async def test_a_read_only_key_cannot_push_points(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    sent = await client.post(
        "/api/v1/metrics",
        json={"name": "x", "value": 1, "time": "NOW"},
        headers=tenant.auth(tenant.reader),
    )

    _error(sent, 403, "FORBIDDEN")
    assert await _stored(db, tenant.org.id, "x") == []


async def test_the_same_batch_twice_stores_each_point_once_and_a_new_value_replaces_the_old(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    at = clock.now().replace(microsecond=0) - timedelta(minutes=30)
    batch = [
        {"name": "cpu", "value": float(i), "time": _iso(at + timedelta(minutes=i))}
        for i in range(5)
    ]
    expected = [(clock.to_us(at + timedelta(minutes=i)), float(i)) for i in range(5)]

    for _ in range(2):
        assert _ok(await client.post("/api/v1/metrics", json=batch, headers=tenant.auth()), 201)
    assert await _stored(db, tenant.org.id, "cpu") == expected

    again = {**batch[2], "value": 99.0}
    assert _ok(await client.post("/api/v1/metrics", json=again, headers=tenant.auth()), 201)
    assert await _stored(db, tenant.org.id, "cpu") == [
        *expected[:2],
        (expected[2][0], 99.0),
        *expected[3:],
    ]


async def test_a_point_older_than_the_retention_window_is_rejected_with_the_reason(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    old = clock.now() - timedelta(days=tenant.org.retention_days + 5)

    body = _error(
        await client.post(
            "/api/v1/metrics",
            json={"name": "cpu", "value": 1, "time": _iso(old)},
            headers=tenant.auth(),
        ),
        400,
        "VALIDATION_ERROR",
    )

    (detail,) = body["details"]
    assert detail["field"] == "time"
    assert f"retention window of {tenant.org.retention_days} days" in detail["message"]
    assert await _stored(db, tenant.org.id, "cpu") == []


async def test_a_body_that_is_not_json_is_refused_with_415(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sent = await client.post(
        "/api/v1/metrics",
        content=b"cpu 1 1700000000",
        headers={**tenant.auth(), "Content-Type": "text/plain"},
    )

    body = _error(sent, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "application/json" in body["error"]


async def test_metric_names_lists_what_was_pushed_for_the_service_and_environment(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    change = _change_time()
    await _push(client, tenant.writer, _points("error_rate", change, [0.1], [0.2]))
    await _push(client, tenant.writer, _points("throughput", change, [1.0], [], service="other"))

    listed = await client.get(
        "/api/v1/metrics/names",
        params={"service": SERVICE, "subject": ENVIRONMENT},
        headers=tenant.auth(tenant.reader),
    )

    assert _ok(listed)["names"] == ["error_rate"]


async def test_metric_names_refuses_a_control_character_instead_of_failing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    # Found by the OpenAPI fuzzer: PostgreSQL refuses NUL in text, which was a 500.
    for params in ({"service": SERVICE, "subject": "\x00"}, {"service": "a\x01b"}):
        answer = await client.get(
            "/api/v1/metrics/names", params=params, headers=tenant.auth(tenant.reader)
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "VALIDATION_ERROR"


# --- GET/PUT /api/v1/metrics/settings ------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    "sources": dict.fromkeys(
        ("error_rate", "throughput", "p50_latency", "p95_latency", "p99_latency"), "auto"
    ),
    "prometheus": None,
}


async def test_settings_start_with_every_metric_on_auto_and_no_prometheus(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    got = await client.get("/api/v1/metrics/settings", headers=tenant.auth(tenant.reader))

    assert _ok(got) == DEFAULTS


async def test_sources_and_prometheus_are_set_and_read_back(
    keyless: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = {
        "sources": {"error_rate": "prometheus", "p95_latency": "spans", "queue_depth": "pushed"},
        "prometheus": {
            "base_url": "http://10.0.0.9:9090/",
            "queries": {"error_rate": GAUGE},
            "timeout_seconds": 2.5,
        },
    }

    put = _ok(await keyless.put("/api/v1/metrics/settings", json=body, headers=tenant.admin_auth()))
    got = _ok(await keyless.get("/api/v1/metrics/settings", headers=tenant.auth(tenant.reader)))

    assert put == got
    assert got["sources"] == {
        **DEFAULTS["sources"],
        "error_rate": "prometheus",
        "p95_latency": "spans",
        "queue_depth": "pushed",
    }
    assert got["prometheus"] == {
        "base_url": "http://10.0.0.9:9090",
        "auth_header_name": None,
        "auth_header_set": False,
        "queries": {"error_rate": GAUGE},
        "timeout_seconds": 2.5,
    }


@pytest.mark.parametrize(
    "base_url",
    [
        "ftp://prometheus.internal:9090",
        "http://admin:secret@prometheus.internal:9090",
        "http://prometheus.internal:9090/?tenant=a",
        "http://prometheus.internal:99999",
    ],
)
async def test_a_base_url_that_is_not_a_plain_http_url_is_refused_naming_the_field(
    keyless: httpx.AsyncClient, tenant: Tenant, base_url: str
) -> None:
    body = _error(
        await keyless.put(
            "/api/v1/metrics/settings",
            json={"prometheus": {"base_url": base_url}},
            headers=tenant.admin_auth(),
        ),
        400,
        "VALIDATION_ERROR",
    )

    assert [d["field"] for d in body["details"]] == ["prometheus.base_url"]
    assert "prometheus.base_url" in body["error"]
    assert "secret" not in str(body)
    got = await keyless.get("/api/v1/metrics/settings", headers=tenant.auth())
    assert _ok(got)["prometheus"] is None


async def test_a_query_template_that_cannot_be_rendered_is_refused_when_set(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    event_id = await _post_event(client, tenant.writer, _change_time())
    body = {
        "prometheus": {
            "base_url": "http://10.0.0.9:9090",
            "queries": {"error_rate": "error_rate{service=$service}"},
        }
    }

    refused = _error(
        await client.put("/api/v1/metrics/settings", json=body, headers=tenant.admin_auth()),
        400,
        "VALIDATION_ERROR",
    )

    assert [d["field"] for d in refused["details"]] == ["prometheus.queries.error_rate"]
    assert "quoted string" in refused["error"]
    assert _ok(await _around(client, tenant.reader, event_id))["metrics"]


async def test_an_auth_header_without_a_secret_key_on_the_server_is_refused(
    keyless: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = _error(
        await keyless.put(
            "/api/v1/metrics/settings",
            json={
                "prometheus": {
                    "base_url": "http://10.0.0.9:9090",
                    "auth_header": {"name": "Authorization", "value": "Bearer sekrit-token"},
                }
            },
            headers=tenant.admin_auth(),
        ),
        400,
        "VALIDATION_ERROR",
    )

    assert "TRAILMAP_SECRET_KEY" in body["error"]
    assert [d["field"] for d in body["details"]] == ["prometheus.auth_header"]
    assert "sekrit-token" not in str(body)


async def test_the_auth_header_is_stored_encrypted_and_never_shown(
    keyed: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    secret = "Bearer tok-7f3a9c1e5b2d4f60"
    body = {
        "prometheus": {
            "base_url": "https://10.0.0.9/prometheus",
            "auth_header": {"name": "Authorization", "value": secret},
            "queries": {"error_rate": GAUGE},
        }
    }

    put = await keyed.put("/api/v1/metrics/settings", json=body, headers=tenant.admin_auth())
    got = await keyed.get("/api/v1/metrics/settings", headers=tenant.auth(tenant.reader))
    # Changing the sources alone keeps the header.
    later = await keyed.put(
        "/api/v1/metrics/settings",
        json={"sources": {"error_rate": "pushed"}},
        headers=tenant.admin_auth(),
    )

    for answer in (put, got, later):
        assert "tok-7f3a9c1e5b2d4f60" not in answer.text
        shown = _ok(answer)["prometheus"]
        assert shown["auth_header_name"] == "Authorization"
        assert shown["auth_header_set"] is True
    row = await db.read_one(store.read_settings, tenant.org.id)
    assert row is not None
    assert row.auth_header_encrypted
    assert "tok-7f3a9c1e5b2d4f60" not in f"{row.settings!r} {row.auth_header_encrypted}"
    assert "7f3a9c1e" not in repr(tuple(row))


async def test_a_rotated_secret_key_still_reads_old_credentials_and_writes_with_the_new(
    tenant: Tenant, db: Database, database_url: str
) -> None:
    new_key = "a-new-secret-key-of-at-least-32-characters"
    body = {
        "prometheus": {
            "base_url": "https://10.0.0.9/prometheus",
            "auth_header": {"name": "Authorization", "value": "Bearer old-one"},
        }
    }
    async with _app(database_url, db, secret_key=SECRET_KEY) as old:
        _ok(await old.put("/api/v1/metrics/settings", json=body, headers=tenant.admin_auth()))
    rotated = Settings(
        database_url=database_url,
        secret_key=SecretStr(new_key),
        old_secret_keys=SecretStr(SECRET_KEY),
    )
    found = await read_settings(db, tenant.org.id, secret_key=rotated.encryption_secret)
    assert found.prometheus is not None
    assert found.prometheus.auth_header_value == "Bearer old-one"
    # Without the retired key, the old credential is unusable (and never shown).
    alone = Settings(database_url=database_url, secret_key=SecretStr(new_key))
    lost = await read_settings(db, tenant.org.id, secret_key=alone.encryption_secret)
    assert lost.prometheus is not None
    assert lost.prometheus.auth_header_value is None
    # What is written now is encrypted with the new key alone.
    async with _app(database_url, db, secret_key=new_key) as new:
        body["prometheus"]["auth_header"] = {"name": "Authorization", "value": "Bearer new-one"}
        _ok(await new.put("/api/v1/metrics/settings", json=body, headers=tenant.admin_auth()))
    fresh = await read_settings(db, tenant.org.id, secret_key=alone.encryption_secret)
    assert fresh.prometheus is not None
    assert fresh.prometheus.auth_header_value == "Bearer new-one"


@pytest.mark.parametrize("field", ["secret_key", "old_secret_keys"])
def test_a_secret_key_shorter_than_32_characters_stops_the_server_at_start(field: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings.model_validate({field: SecretStr("too-short-a-secret")})


async def test_prometheus_null_removes_it_and_its_auth_header(
    keyed: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    connect = {
        "prometheus": {
            "base_url": "http://10.0.0.9:9090",
            "auth_header": {"name": "X-Scope-OrgID", "value": "tenant-a"},
        }
    }
    _ok(await keyed.put("/api/v1/metrics/settings", json=connect, headers=tenant.admin_auth()))

    removed = await keyed.put(
        "/api/v1/metrics/settings", json={"prometheus": None}, headers=tenant.admin_auth()
    )

    assert _ok(removed)["prometheus"] is None
    assert _ok(await keyed.get("/api/v1/metrics/settings", headers=tenant.auth())) == DEFAULTS
    row = await db.read_one(store.read_settings, tenant.org.id)
    assert row is not None
    assert row.auth_header_encrypted is None


async def test_a_read_write_key_cannot_change_the_settings_only_an_admin_key_can(
    keyless: httpx.AsyncClient, tenant: Tenant
) -> None:
    # The audit's hole 1: any member could make a READ_WRITE key and point the metrics source
    # (and the organization's stored credential) at a server of theirs.
    refused = _error(
        await keyless.put(
            "/api/v1/metrics/settings",
            json={"prometheus": {"base_url": "https://prometheus.acme.example"}},
            headers=tenant.auth(),
        ),
        403,
        "FORBIDDEN",
    )
    assert "ADMIN" in refused["error"]
    unchanged = _ok(await keyless.get("/api/v1/metrics/settings", headers=tenant.auth()))
    assert unchanged == DEFAULTS


async def test_a_read_only_key_cannot_change_the_settings(
    keyless: httpx.AsyncClient, tenant: Tenant
) -> None:
    _error(
        await keyless.put(
            "/api/v1/metrics/settings",
            json={"sources": {"error_rate": "pushed"}},
            headers=tenant.auth(tenant.reader),
        ),
        403,
        "FORBIDDEN",
    )
    assert _ok(await keyless.get("/api/v1/metrics/settings", headers=tenant.auth())) == DEFAULTS


async def test_another_organization_sees_its_own_default_settings(
    keyless: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    other = await _other_tenant(db)
    body = {
        "sources": {"error_rate": "prometheus"},
        "prometheus": {"base_url": "http://10.0.0.9:9090"},
    }
    _ok(await keyless.put("/api/v1/metrics/settings", json=body, headers=tenant.admin_auth()))

    theirs = await keyless.get("/api/v1/metrics/settings", headers=other.auth(other.reader))

    assert _ok(theirs) == DEFAULTS


# --- where a configured Prometheus may be, and its credential ------------------------------


@asynccontextmanager
async def _recording_prometheus() -> AsyncIterator[tuple[str, list[str | None]]]:
    """A loopback query API answering every query with an empty matrix; yields its URL and
    the Authorization header of each request it got (None when there was none)."""
    seen: list[str | None] = []
    answer = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            request = await stream.receive()  # a GET fits in one read
            header = None
            for line in request.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "authorization":
                    header = value.strip()
            seen.append(header)
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(answer)}\r\nConnection: close\r\n\r\n".encode()
                + answer
            )

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio's
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, serve)
            try:
                yield f"http://127.0.0.1:{port}", seen
            finally:
                tasks.cancel_scope.cancel()


async def test_a_new_base_url_on_another_server_does_not_get_the_stored_credential(
    keyed: httpx.AsyncClient, tenant: Tenant
) -> None:
    # Issue 17: the owner sets a credential; someone points base_url at a server of theirs
    # and asks a metrics question; the credential must not go there.
    secret = "Bearer PROM-SECRET-4f1d2c3b5a69"
    event_id = await _post_event(keyed, tenant.writer, _change_time())
    async with (
        _recording_prometheus() as (owners, owners_seen),
        _recording_prometheus() as (
            attackers,
            attackers_seen,
        ),
    ):
        owner_sets = {
            "sources": {"error_rate": "prometheus"},
            "prometheus": {
                "base_url": owners,
                "auth_header": {"name": "Authorization", "value": secret},
                "queries": {"error_rate": GAUGE},
            },
        }
        _ok(
            await keyed.put(
                "/api/v1/metrics/settings", json=owner_sets, headers=tenant.admin_auth()
            )
        )
        _ok(await _around(keyed, tenant.reader, event_id, "error_rate"))

        moved = _ok(
            await keyed.put(
                "/api/v1/metrics/settings",
                json={"prometheus": {"base_url": attackers}},
                headers=tenant.admin_auth(),
            )
        )
        _ok(await _around(keyed, tenant.reader, event_id, "error_rate"))
        shown = _ok(await keyed.get("/api/v1/metrics/settings", headers=tenant.auth()))

    assert owners_seen == [secret]
    assert attackers_seen == [None]
    assert moved["notices"] == [
        (
            "The stored auth header was removed: base_url now points at another server "
            f"(scheme, host or port) than {owners}. Send auth_header again with it if the new "
            "server needs one."
        )
    ]
    for answer in (moved, shown):
        assert answer["prometheus"]["auth_header_set"] is False
        assert answer["prometheus"]["auth_header_name"] is None
    assert "notices" not in shown


def _resolve_every_name_to(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    async def resolve(host: str, port: int, **kwargs: Any) -> Any:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(anyio, "getaddrinfo", resolve)


_HERE = "http://prometheus.example:9090/prometheus"


@pytest.mark.parametrize(
    ("before", "after", "dropped"),
    [
        (_HERE, "http://prometheus.example:9090/mimir/prometheus", False),
        (_HERE, "http://PROMETHEUS.example:9090/prometheus", False),
        ("http://prometheus.example/p", "http://prometheus.example:80/p", False),
        (_HERE, "https://prometheus.example:9090/prometheus", True),
        (_HERE, "http://prometheus.example.net:9090/prometheus", True),
        (_HERE, "http://prometheus.example:9091/prometheus", True),
    ],
    ids=["path", "case-of-host", "default-port-written-out", "scheme", "host", "port"],
)
async def test_only_a_change_of_scheme_host_or_port_drops_the_stored_credential(
    keyed: httpx.AsyncClient,
    tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
    before: str,
    after: str,
    dropped: bool,
) -> None:
    _resolve_every_name_to(monkeypatch, "10.0.0.9")
    sets = {"base_url": before, "auth_header": {"name": "X-Scope-OrgID", "value": "tenant-a"}}
    _ok(
        await keyed.put(
            "/api/v1/metrics/settings", json={"prometheus": sets}, headers=tenant.admin_auth()
        )
    )

    answer = _ok(
        await keyed.put(
            "/api/v1/metrics/settings",
            json={"prometheus": {"base_url": after}},
            headers=tenant.admin_auth(),
        )
    )

    assert answer["prometheus"]["auth_header_set"] is not dropped
    assert ("notices" in answer) is dropped


async def test_a_new_base_url_with_its_own_auth_header_keeps_that_one(
    keyed: httpx.AsyncClient, tenant: Tenant
) -> None:
    first = {"base_url": "http://10.0.0.9:9090", "auth_header": {"name": "A", "value": "a"}}
    second = {"base_url": "http://10.0.0.10:9090", "auth_header": {"name": "B", "value": "b"}}
    _ok(
        await keyed.put(
            "/api/v1/metrics/settings", json={"prometheus": first}, headers=tenant.admin_auth()
        )
    )

    answer = _ok(
        await keyed.put(
            "/api/v1/metrics/settings", json={"prometheus": second}, headers=tenant.admin_auth()
        )
    )

    assert answer["prometheus"]["auth_header_name"] == "B"
    assert answer["prometheus"]["auth_header_set"] is True
    assert "notices" not in answer


@pytest.mark.parametrize(
    ("base_url", "rule"),
    [
        ("http://169.254.169.254/", "169.254.169.254 is a cloud metadata address"),
        ("http://169.254.170.2/v2/credentials", "169.254.170.2 is a link-local address"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a cloud metadata address"),
        ("http://100.100.100.200/", "100.100.100.200 is a cloud metadata address"),
        ("http://[fe80::1]:9090", "fe80::1 is a link-local address"),
        (
            "http://[::ffff:169.254.169.254]:9090",
            "::ffff:169.254.169.254 carries the IPv4 address 169.254.169.254 (IPv4-mapped)",
        ),
        (
            "http://[64:ff9b::a9fe:a9fe]:9090",
            "64:ff9b::a9fe:a9fe carries the IPv4 address 169.254.169.254 (NAT64)",
        ),
        ("http://0.0.0.0:9090", "0.0.0.0 is an unspecified address"),
        ("http://127.0.0.1:9090", "127.0.0.1 is a loopback address, not in"),
        ("http://[::1]:9090", "::1 is a loopback address, not in"),
        ("http://2130706433:9090", "2130706433 resolves to 127.0.0.1, which is a loopback"),
    ],
)
async def test_a_base_url_whose_host_is_refused_is_a_400_naming_the_rule(
    database_url: str, db: Database, tenant: Tenant, base_url: str, rule: str
) -> None:
    async with _app(
        database_url, db, secret_key=SECRET_KEY, outbound_allowed_networks=DEFAULT_ALLOWED_NETWORKS
    ) as http:
        body = _error(
            await http.put(
                "/api/v1/metrics/settings",
                json={"prometheus": {"base_url": base_url}},
                headers=tenant.admin_auth(),
            ),
            400,
            "VALIDATION_ERROR",
        )
        shown = _ok(await http.get("/api/v1/metrics/settings", headers=tenant.auth()))

    assert [d["field"] for d in body["details"]] == ["prometheus.base_url"]
    assert rule in body["details"][0]["message"]
    assert body["error"].startswith("The metric settings are not valid: prometheus.base_url: ")
    assert shown["prometheus"] is None


async def test_a_host_name_resolving_to_the_metadata_address_is_a_400(
    keyless: httpx.AsyncClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    _resolve_every_name_to(monkeypatch, "169.254.169.254")

    body = _error(
        await keyless.put(
            "/api/v1/metrics/settings",
            json={"prometheus": {"base_url": "http://prometheus.attacker.example:9090"}},
            headers=tenant.admin_auth(),
        ),
        400,
        "VALIDATION_ERROR",
    )

    assert body["details"][0]["message"] == (
        "prometheus.attacker.example resolves to 169.254.169.254, which is a cloud metadata "
        "address: Trailmap never connects to one"
    )


# --- GET /api/v1/events/{id}/metrics from pushed points ------------------------------------


async def test_pushed_points_show_an_error_rate_increase_and_steady_throughput(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    change = _change_time()
    event_id = await _post_event(client, tenant.writer, change)
    errors_before, errors_after = _error_rates(seed=11)
    traffic_before, traffic_after = _same_traffic(seed=12)
    await _push(
        client,
        tenant.writer,
        [
            *_points("error_rate", change, errors_before, errors_after),
            *_points("throughput", change, traffic_before, traffic_after),
            *_points("p95_latency", change, [120.0 + i % 7 for i in range(60)], [130.0] * 3),
        ],
    )

    data = _ok(
        await _around(client, tenant.reader, event_id, "error_rate", "throughput", "p95_latency")
    )

    assert (data["service"], data["environment"], data["window"]) == (SERVICE, ENVIRONMENT, "2h")
    assert data["after"]["complete"] is True
    metrics = _by_name(data)
    error_rate = metrics["error_rate"]
    assert (error_rate["verdict"], error_rate["source"]) == ("increased", "pushed")
    assert error_rate["p_value"] < 0.01
    assert error_rate["before"]["points"] == error_rate["after"]["points"] == WINDOW_MINUTES
    assert error_rate["before"]["mean"] == pytest.approx(statistics.fmean(errors_before), rel=1e-4)
    assert error_rate["after"]["mean"] == pytest.approx(statistics.fmean(errors_after), rel=1e-4)
    assert error_rate["before"]["median"] == pytest.approx(
        statistics.median(errors_before), rel=1e-4
    )

    throughput = metrics["throughput"]
    assert (throughput["verdict"], throughput["source"]) == ("no significant change", "pushed")
    assert throughput["p_value"] > 0.5
    assert throughput["before"]["mean"] == throughput["after"]["mean"]

    latency = metrics["p95_latency"]
    assert latency["verdict"] == "not enough data"
    assert "only 3 points after the event" in latency["reason"]
    assert "at least 10" in latency["reason"]
    assert "error_rate increased" in data["summary"]


async def test_an_unknown_window_is_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    event_id = await _post_event(client, tenant.writer, _change_time())

    body = _error(
        await _around(client, tenant.reader, event_id, window="3h"), 400, "VALIDATION_ERROR"
    )

    assert "window" in str(body)


async def test_an_empty_metric_name_is_refused_naming_the_parameter(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    event_id = await _post_event(client, tenant.writer, _change_time())

    for names in ([""], ["  "], ["error_rate", ""]):
        body = _error(
            await _around(client, tenant.reader, event_id, *names), 400, "VALIDATION_ERROR"
        )
        assert body["details"][0]["field"] == "metrics", body
        assert "empty" in body["error"], body


async def test_an_unknown_event_is_not_found(client: httpx.AsyncClient, tenant: Tenant) -> None:
    missing = "6f1c1c4e-3b5d-4f6e-9a7b-2c8d9e0f1a2b"

    _error(await _around(client, tenant.reader, missing), 404, "NOT_FOUND")


async def test_another_organizations_event_is_not_found(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    other = await _other_tenant(db)
    change = _change_time()
    theirs = await _post_event(client, other.writer, change)
    before, after = _error_rates(seed=3)
    await _push(client, other.writer, _points("error_rate", change, before, after))

    _error(await _around(client, tenant.reader, theirs, "error_rate"), 404, "NOT_FOUND")
    assert (
        _ok(await _around(client, other.reader, theirs, "error_rate"))["metrics"][0]["verdict"]
        == "increased"
    )


# --- from spans, sent by the OpenTelemetry SDK to a real `trailmap serve` ------------------


def _spans_of_a_worsening_checkout(change: datetime) -> InMemorySpanExporter:
    """Two SERVER calls a minute for two hours before the change and two after: one call in
    40 fails before (2.5 %), one in 4 after (25 %)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": SERVICE, "deployment.environment.name": ENVIRONMENT}
        ),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop.checkout")
    call = 0
    for minute in _minutes(change, -WINDOW_MINUTES, WINDOW_MINUTES):
        for offset_s in (10, 40):
            start = minute + timedelta(seconds=offset_s)
            start_ns = clock.to_us(start) * 1000
            span = tracer.start_span(
                "POST /checkout",
                kind=SpanKind.SERVER,
                attributes={"http.request.method": "POST", "http.route": "/checkout"},
                start_time=start_ns,
            )
            failing = call % 40 == 0 if minute < change else call % 4 == 0
            if failing:
                span.set_status(StatusCode.ERROR, "payment provider timed out")
            span.end(end_time=start_ns + 5_000_000)
            call += 1
    provider.shutdown()
    return memory


def _export(base_url: str, token: str, memory: InMemorySpanExporter) -> None:
    exporter: SpanExporter = OTLPSpanExporter(
        endpoint=f"{base_url}/api/v1/otlp/v1/traces",
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    try:
        assert exporter.export(memory.get_finished_spans()) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()


async def _poll(fetch: Callable[[], Any], done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """`await fetch()` until `done` accepts its data or the deadline passes; the last data."""
    deadline = time.monotonic() + _POLL_TIMEOUT_S
    while True:
        data: dict[str, Any] = _ok(await fetch())
        if done(data) or time.monotonic() > deadline:
            return data
        await anyio.sleep(0.1)  # bounded by the deadline: ingestion commits on its own


async def test_spans_through_otlp_show_the_error_rate_increase_until_pushed_is_chosen(
    database_url: str, tenant: Tenant, tmp_path: Path
) -> None:
    change = _change_time()
    spans = _spans_of_a_worsening_checkout(change)
    with running_server(database_url, log_path=tmp_path / "server.log") as base_url:
        await anyio.to_thread.run_sync(_export, base_url, tenant.writer, spans)
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            event_id = await _post_event(http, tenant.writer, change)

            data = await _poll(
                lambda: _around(http, tenant.reader, event_id, "error_rate", "throughput"),
                lambda d: _by_name(d)["error_rate"]["verdict"] != "not enough data",
            )

            metrics = _by_name(data)
            error_rate = metrics["error_rate"]
            assert (error_rate["verdict"], error_rate["source"]) == ("increased", "spans")
            assert error_rate["p_value"] < 0.01
            # 480 calls over four hours: 10-minute points of 20 calls, twelve a side.
            assert error_rate["point_every"] == "10 min"
            assert error_rate["before"]["points"] == error_rate["after"]["points"] == 12
            assert error_rate["before"]["mean"] == pytest.approx(0.025)
            assert error_rate["after"]["mean"] == pytest.approx(0.25)
            throughput = metrics["throughput"]
            assert (throughput["verdict"], throughput["source"]) == (
                "no significant change",
                "spans",
            )
            assert throughput["before"]["mean"] == pytest.approx(2 / 60, rel=1e-4)

            _ok(
                await http.put(
                    "/api/v1/metrics/settings",
                    json={"sources": {"error_rate": "pushed"}},
                    headers=tenant.admin_auth(),
                )
            )
            chosen = _by_name(_ok(await _around(http, tenant.reader, event_id, "error_rate")))
            assert chosen["error_rate"]["verdict"] == "not enough data"
            assert chosen["error_rate"]["source"] == "pushed"


# --- from Prometheus -----------------------------------------------------------------------


async def test_prometheus_gives_the_same_verdict_as_the_same_points_pushed(
    keyed: httpx.AsyncClient, tenant: Tenant, db: Database, start_prometheus: StartPrometheus
) -> None:
    change = _change_time()
    before, after = _error_rates(seed=21)
    pushed = _points("error_rate", change, before, after)
    series = [(clock.to_us(datetime.fromisoformat(p["time"])), float(p["value"])) for p in pushed]
    prometheus = start_prometheus(
        to_openmetrics([("error_rate", {"service": SERVICE, "env": ENVIRONMENT}, series)]),
        basic_auth=True,
        lookback_delta="30s",
    )
    assert prometheus.auth_header is not None  # behind basic auth: the stored header opens it
    header_name, header_value = prometheus.auth_header
    # The same service in another organization reads the same points from Prometheus.
    other = await _other_tenant(db)
    settings = {
        "sources": {"error_rate": "prometheus"},
        "prometheus": {
            "base_url": prometheus.base_url,
            "auth_header": {"name": header_name, "value": header_value},
            "queries": {"error_rate": GAUGE},
            "timeout_seconds": 10,
        },
    }
    _ok(await keyed.put("/api/v1/metrics/settings", json=settings, headers=other.admin_auth()))
    await _push(keyed, tenant.writer, pushed)
    from_pushed = await _post_event(keyed, tenant.writer, change)
    from_prometheus = await _post_event(keyed, other.writer, change)

    (by_push,) = _ok(await _around(keyed, tenant.reader, from_pushed, "error_rate"))["metrics"]
    (by_prom,) = _ok(await _around(keyed, other.reader, from_prometheus, "error_rate"))["metrics"]

    assert (by_push["source"], by_prom["source"]) == ("pushed", "prometheus")
    assert by_prom["verdict"] == by_push["verdict"] == "increased"
    assert by_prom["p_value"] == pytest.approx(by_push["p_value"], rel=1e-9)
    assert by_prom["p_value"] < 0.01
    for side in ("before", "after"):
        assert by_prom[side] == by_push[side]
        assert by_prom[side]["points"] == WINDOW_MINUTES
    assert by_prom["before"]["mean"] == pytest.approx(statistics.fmean(before), rel=1e-4)
    assert by_prom["after"]["mean"] == pytest.approx(statistics.fmean(after), rel=1e-4)
    assert by_prom["reason"] == by_push["reason"]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed when the socket is: nothing listens there now


async def test_a_prometheus_that_is_down_costs_only_its_metric_and_no_time(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    change = _change_time()
    event_id = await _post_event(client, tenant.writer, change)
    traffic_before, traffic_after = _same_traffic(seed=5)
    await _push(client, tenant.writer, _points("throughput", change, traffic_before, traffic_after))
    base_url = f"http://127.0.0.1:{_closed_port()}"
    settings = {
        "sources": {"error_rate": "prometheus"},
        "prometheus": {
            "base_url": base_url,
            "queries": {"error_rate": GAUGE},
            "timeout_seconds": 2,
        },
    }
    _ok(await client.put("/api/v1/metrics/settings", json=settings, headers=tenant.admin_auth()))

    started = time.monotonic()
    answer = await _around(client, tenant.reader, event_id, "error_rate", "throughput")
    elapsed = time.monotonic() - started

    metrics = _by_name(_ok(answer))
    error_rate = metrics["error_rate"]
    assert (error_rate["verdict"], error_rate["source"]) == ("not enough data", "prometheus")
    assert error_rate["reason"] == (
        f"Trailmap could not get an answer from the Prometheus server at {base_url}: the "
        "connection was refused or closed, nothing answered within 2 seconds, or what "
        "answered was not HTTP."
    )
    throughput = metrics["throughput"]
    assert (throughput["verdict"], throughput["source"]) == ("no significant change", "pushed")
    assert elapsed < 2 + 3
