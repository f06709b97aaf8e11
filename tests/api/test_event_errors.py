"""Every error code of the events API over HTTP, each with its status, its headers and the
one error shape `{"success": false, "error": ..., "code": ..., "details": [...]}`."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.api.test_error_shape import assert_error_shape
from tests.conftest import Tenant
from tests.factories import event, make_key, make_org
from trailmap.accounts import create_key, revoke_key
from trailmap.accounts.tokens import mint_token
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Connection, Database

pytestmark = pytest.mark.anyio

EVENTS = "/api/v1/events"


def expect(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = assert_error_shape(response)
    assert body["code"] == code
    return body


def fields(body: dict[str, Any]) -> list[str | None]:
    return [detail.get("field") for detail in body["details"]]


async def stored_count(client: httpx.AsyncClient, tenant: Tenant) -> int:
    listed = await client.get(f"{EVENTS}?from=-1d&limit=100", headers=tenant.auth(tenant.reader))
    assert listed.status_code == 200, listed.text
    return len(listed.json()["data"]["events"])


# -- VALIDATION_ERROR 400 ----------------------------------------------------------------


async def test_a_bad_field_is_named_in_the_details(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(EVENTS, json=event(type=None), headers=tenant.auth())
    body = expect(response, 400, "VALIDATION_ERROR")
    assert fields(body) == ["type"]
    assert body["details"][0]["index"] == 0
    assert "type is required" in body["error"]


async def test_every_bad_field_of_one_event_is_listed(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    bad = event(time="2026-11-20T10:00:00", severity="HIGH", subject="s" * 51)
    body = expect(
        await client.post(EVENTS, json=bad, headers=tenant.auth()), 400, "VALIDATION_ERROR"
    )
    assert sorted(f for f in fields(body) if f) == ["severity", "subject", "time"]


async def test_malformed_json_is_refused_with_the_body_named(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(
        EVENTS,
        content=b'{"specversion": "1.0", "type": ',
        headers={**tenant.auth(), "Content-Type": "application/json"},
    )
    body = expect(response, 400, "VALIDATION_ERROR")
    assert fields(body) == ["body"]
    assert "not valid JSON" in body["error"]


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
async def test_numbers_json_does_not_have_are_refused_not_stored_as_null(
    client: httpx.AsyncClient, tenant: Tenant, value: bytes
) -> None:
    raw = (
        b'{"specversion": "1.0", "type": "deployment", "source": "//x/y", "time": "NOW", '
        b'"data": {"n": ' + value + b"}}"
    )
    response = await client.post(
        EVENTS, content=raw, headers={**tenant.auth(), "Content-Type": "application/json"}
    )
    body = expect(response, 400, "VALIDATION_ERROR")
    assert fields(body) == ["body"]


async def test_an_empty_body_is_refused_saying_what_to_send(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for content in (b"", b"   \n\t "):
        response = await client.post(
            EVENTS, content=content, headers={**tenant.auth(), "Content-Type": "application/json"}
        )
        body = expect(response, 400, "VALIDATION_ERROR")
        assert fields(body) == ["body"]
        assert "empty" in body["error"]


async def test_an_empty_batch_is_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = expect(
        await client.post(EVENTS, json=[], headers=tenant.auth()), 400, "VALIDATION_ERROR"
    )
    assert "at least one event" in body["error"]


async def test_a_batch_over_1000_events_is_refused_whole(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [event(id=f"e-{i}") for i in range(1001)]
    response = await client.post(EVENTS, json=batch, headers=tenant.auth())
    body = expect(response, 400, "VALIDATION_ERROR")
    assert fields(body) == ["body"]
    assert "at most 1000" in body["error"]
    assert "1001" in body["error"]
    assert await stored_count(client, tenant) == 0


async def test_a_limit_outside_1_to_100_is_refused_naming_limit(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for limit in ("0", "101", "abc", "-1", "1.5", ""):
        response = await client.get(f"{EVENTS}?limit={limit}", headers=tenant.auth(tenant.reader))
        body = expect(response, 400, "VALIDATION_ERROR")
        assert fields(body) == ["limit"], limit
        assert body["error"].startswith("limit: ")
    for limit in ("1", "100"):
        response = await client.get(f"{EVENTS}?limit={limit}", headers=tenant.auth(tenant.reader))
        assert response.status_code == 200, response.text


async def test_from_after_to_is_refused_saying_to_swap_them(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.get(f"{EVENTS}?from=-1h&to=-2h", headers=tenant.auth(tenant.reader))
    body = expect(response, 400, "VALIDATION_ERROR")
    assert fields(body) == ["from"]
    assert "swap them" in body["error"]


async def test_an_unreadable_time_is_refused_naming_the_bound(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for path in (EVENTS, f"{EVENTS}/summary"):
        for name in ("from", "to"):
            response = await client.get(
                f"{path}?{name}=last+tuesday", headers=tenant.auth(tenant.reader)
            )
            body = expect(response, 400, "VALIDATION_ERROR")
            assert fields(body) == [name]
            assert "-30m" in body["error"]


async def test_an_unknown_timezone_is_refused_with_examples(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for path in (EVENTS, f"{EVENTS}/summary", f"{EVENTS}/{uuid.uuid4()}"):
        for zone in ("Mars/Olympus_Mons", "../../etc/passwd", "Europe/Paris/"):
            response = await client.get(
                f"{path}?timezone={zone}", headers=tenant.auth(tenant.reader)
            )
            body = expect(response, 400, "VALIDATION_ERROR")
            assert fields(body) == ["timezone"]
            assert "Europe/Paris" in body["error"]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def test_a_forged_cursor_is_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    forged = [
        "garbage",
        _b64("v1:123:not-a-uuid"),
        _b64(f"v2:123:{uuid.uuid4()}"),
        _b64(f"v1:-5:{uuid.uuid4()}"),
        _b64(f"v1:123:{uuid.uuid4()}' OR 1=1 --"),
        _b64(f"v1:{'9' * 25}:{uuid.uuid4()}"),
        # Fits the cursor's 19 digits but not a 64-bit integer.
        _b64(f"v1:{'9' * 19}:{uuid.uuid4()}"),
        _b64(f"v1:{2**63}:{uuid.uuid4()}"),
        "%FF%FE",
    ]
    for cursor in forged:
        response = await client.get(f"{EVENTS}?cursor={cursor}", headers=tenant.auth(tenant.reader))
        body = expect(response, 400, "VALIDATION_ERROR")
        assert fields(body) == ["cursor"], cursor
        assert "next_cursor" in body["error"]


async def test_an_unknown_severity_filter_is_refused_with_the_allowed_values(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.get(f"{EVENTS}?severity=MAJOR,HIGH", headers=tenant.auth(tenant.reader))
    body = expect(response, 400, "VALIDATION_ERROR")
    assert fields(body) == ["severity"]
    assert "LOW, MINOR, MAJOR, CRITICAL" in body["error"]


async def test_a_nul_character_in_a_filter_is_refused_not_a_server_error(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for name in ("type", "source", "subject", "service", "search"):
        response = await client.get(f"{EVENTS}?{name}=a%00b", headers=tenant.auth(tenant.reader))
        body = expect(response, 400, "VALIDATION_ERROR")
        assert fields(body) == [name]
        assert "NUL" in body["error"]


# -- UNAUTHORIZED 401 --------------------------------------------------------------------


def expect_unauthorized(response: httpx.Response) -> dict[str, Any]:
    body = expect(response, 401, "UNAUTHORIZED")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'realm="trailmap"' in challenge
    return body


async def test_a_request_without_a_key_is_unauthorized_and_told_how_to_send_one(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for response in (
        await client.get(EVENTS),
        await client.post(EVENTS, json=event()),
        await client.get(f"{EVENTS}/summary"),
    ):
        body = expect_unauthorized(response)
        assert "Authorization: Bearer" in body["error"]
    assert await stored_count(client, tenant) == 0


async def test_a_malformed_key_is_unauthorized(client: httpx.AsyncClient) -> None:
    for header in (
        "Bearer not-a-key",
        "Bearer tmk_" + "A" * 49,
        "Bearer tma_" + "A" * 49,
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "tmk_abc",
    ):
        expect_unauthorized(await client.get(EVENTS, headers={"Authorization": header}))


async def test_a_token_with_a_wrong_checksum_is_refused_before_any_lookup(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    broken = tenant.reader[:-1] + ("A" if tenant.reader[-1] != "A" else "B")
    body = expect_unauthorized(await client.get(EVENTS, headers=tenant.auth(broken)))
    assert "copied whole" in body["error"]


async def test_a_well_formed_but_unknown_key_is_unauthorized(client: httpx.AsyncClient) -> None:
    response = await client.get(EVENTS, headers={"Authorization": f"Bearer {mint_token()}"})
    body = expect_unauthorized(response)
    assert "not known" in body["error"]


async def test_a_revoked_key_is_refused_on_the_very_next_call(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    key, token = await create_key(
        db, tenant.org.slug, name="soon revoked", scope="READ_WRITE", created_by="tests"
    )
    assert (await client.get(EVENTS, headers=tenant.auth(token))).status_code == 200
    await revoke_key(db, key.id)
    body = expect_unauthorized(await client.get(EVENTS, headers=tenant.auth(token)))
    assert "revoked" in body["error"]
    expect_unauthorized(await client.post(EVENTS, json=event(), headers=tenant.auth(token)))
    assert await stored_count(client, tenant) == 0


async def test_an_expired_key_is_refused(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    key, token = await create_key(
        db,
        tenant.org.slug,
        name="short lived",
        scope="READ_ONLY",
        created_by="tests",
        expires_in=timedelta(days=1),
    )
    assert (await client.get(EVENTS, headers=tenant.auth(token))).status_code == 200

    def expire(conn: Connection) -> None:
        conn.exec_driver_sql(f"UPDATE api_keys SET expires_us = 1 WHERE id = '{key.id}'")  # noqa: S608 - our own uuid

    db.write_sync(expire)
    body = expect_unauthorized(await client.get(EVENTS, headers=tenant.auth(token)))
    assert "expired" in body["error"]


async def test_a_key_in_the_query_string_is_refused_even_when_valid(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for name in ("api_key", "apikey", "key", "token", "access_token"):
        response = await client.get(f"{EVENTS}?{name}={tenant.reader}")
        body = expect_unauthorized(response)
        assert "never in the query string" in body["error"]
        assert "rotate" in body["error"]
        # Even alongside a valid header: the key in the URL is already exposed.
        with_header = await client.post(
            f"{EVENTS}?{name}={tenant.writer}", json=event(), headers=tenant.auth()
        )
        expect_unauthorized(with_header)
    assert await stored_count(client, tenant) == 0


# -- FORBIDDEN 403 -----------------------------------------------------------------------


async def test_a_read_only_key_may_not_push_events(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(EVENTS, json=event(), headers=tenant.auth(tenant.reader))
    body = expect(response, 403, "FORBIDDEN")
    assert "READ_WRITE" in body["error"]
    assert await stored_count(client, tenant) == 0


async def test_a_read_only_key_is_refused_before_its_body_is_judged(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(
        EVENTS, content=b"not json", headers={**tenant.auth(tenant.reader), "Content-Type": "x/y"}
    )
    expect(response, 403, "FORBIDDEN")


# -- NOT_FOUND 404 -----------------------------------------------------------------------


async def test_an_unknown_event_id_is_not_found(client: httpx.AsyncClient, tenant: Tenant) -> None:
    unknown = str(uuid.uuid4())
    body = expect(
        await client.get(f"{EVENTS}/{unknown}", headers=tenant.auth(tenant.reader)),
        404,
        "NOT_FOUND",
    )
    assert unknown in body["error"]


async def test_an_odd_event_id_is_not_found(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for event_id in ("x" * 37, "%00", "%F0%9F%92%A5", "1' OR '1'='1", "%E2%80%AE" * 12):
        response = await client.get(f"{EVENTS}/{event_id}", headers=tenant.auth(tenant.reader))
        expect(response, 404, "NOT_FOUND")


async def test_another_organizations_event_is_as_unknown_as_one_that_does_not_exist(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    other = await make_org(db)
    other_key = await make_key(db, other)
    sent = await client.post(
        EVENTS, json=event(id="theirs"), headers={"Authorization": f"Bearer {other_key}"}
    )
    assert sent.status_code == 201, sent.text
    theirs = sent.json()["data"]["accepted"][0]["id"]
    assert (
        await client.get(f"{EVENTS}/{theirs}", headers={"Authorization": f"Bearer {other_key}"})
    ).status_code == 200

    unknown = str(uuid.uuid4())
    foreign = await client.get(f"{EVENTS}/{theirs}", headers=tenant.auth(tenant.reader))
    missing = await client.get(f"{EVENTS}/{unknown}", headers=tenant.auth(tenant.reader))
    expect(foreign, 404, "NOT_FOUND")
    expect(missing, 404, "NOT_FOUND")
    assert foreign.json() == {
        **missing.json(),
        "error": missing.json()["error"].replace(unknown, theirs),
    }
    assert dict(foreign.headers) == dict(missing.headers)
    assert await stored_count(client, tenant) == 0


async def test_an_unknown_route_is_not_found_and_points_at_the_api(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = expect(
        await client.get("/api/v1/evnets", headers=tenant.auth(tenant.reader)), 404, "NOT_FOUND"
    )
    assert "/api/v1" in body["error"]


# -- PAYLOAD_TOO_LARGE 413 ---------------------------------------------------------------


@pytest.fixture
async def small_client(database_url: str, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a 2 KiB body limit, over the same database as `client`."""
    settings = Settings(
        database_url=database_url, max_body_bytes=2048, retention_purge_interval_seconds=0
    )
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


class _Body:
    """A request body sent in chunks, remembering how many chunks the server pulled."""

    def __init__(self, chunks: int, size: int = 1024) -> None:
        self.chunks = chunks
        self.size = size
        self.pulled = 0

    async def stream(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield b" " * self.size


async def test_a_body_under_the_limit_is_accepted_by_the_small_app(
    small_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await small_client.post(EVENTS, json=event(), headers=tenant.auth())
    assert response.status_code == 201, response.text


async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(
    small_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = _Body(chunks=64)
    response = await small_client.post(
        EVENTS,
        content=body.stream(),
        headers={
            **tenant.auth(),
            "Content-Type": "application/json",
            "Content-Length": str(64 * 1024),
        },
    )
    problem = expect(response, 413, "PAYLOAD_TOO_LARGE")
    assert "2048 bytes" in problem["error"]
    assert "65536" in problem["error"]
    assert body.pulled == 0


async def test_a_chunked_body_without_a_length_is_cut_off_once_over_the_limit(
    small_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = _Body(chunks=64)
    response = await small_client.post(
        EVENTS,
        content=body.stream(),
        headers={**tenant.auth(), "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    problem = expect(response, 413, "PAYLOAD_TOO_LARGE")
    assert "fewer events" in problem["error"]
    assert body.pulled <= 3


async def test_a_body_over_the_limit_stores_nothing(
    small_client: httpx.AsyncClient, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    batch = [event(id=f"big-{i}") for i in range(40)]
    response = await small_client.post(EVENTS, json=batch, headers=tenant.auth())
    expect(response, 413, "PAYLOAD_TOO_LARGE")
    assert await stored_count(client, tenant) == 0


# -- UNSUPPORTED_MEDIA_TYPE 415 ----------------------------------------------------------


_RAW_EVENT = b'{"specversion": "1.0", "type": "t", "source": "s", "time": "NOW"}'


async def test_a_body_that_is_not_declared_json_is_unsupported(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for content_type in ("text/plain", "application/xml", "multipart/form-data", None):
        headers = tenant.auth()
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = await client.post(EVENTS, content=_RAW_EVENT, headers=headers)
        body = expect(response, 415, "UNSUPPORTED_MEDIA_TYPE")
        assert "application/json" in body["error"]
        assert (content_type or "no Content-Type header") in body["error"]
    assert await stored_count(client, tenant) == 0


async def test_every_json_media_type_is_accepted(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for i, content_type in enumerate(
        (
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
        )
    ):
        raw = _RAW_EVENT.replace(b'"NOW"', b'"NOW", "id": "%d"' % i)
        response = await client.post(
            EVENTS, content=raw, headers={**tenant.auth(), "Content-Type": content_type}
        )
        assert response.status_code == 201, (content_type, response.text)


# -- QUOTA_EXCEEDED 429 ------------------------------------------------------------------


async def _free_org_key(db: Database) -> dict[str, str]:
    org = await make_org(db, plan="free")
    return {"Authorization": f"Bearer {await make_key(db, org)}"}


async def test_the_event_after_a_free_plans_100_a_day_is_refused_with_retry_after(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await _free_org_key(db)
    hundred = [event(id=f"q-{i}") for i in range(100)]
    first = await client.post(EVENTS, json=hundred, headers=auth)
    assert first.status_code == 201, first.text
    assert first.json()["data"]["counts"]["accepted"] == 100

    response = await client.post(EVENTS, json=event(id="q-101"), headers=auth)
    body = expect(response, 429, "QUOTA_EXCEEDED")
    assert int(response.headers["retry-after"]) > 0
    assert int(response.headers["retry-after"]) <= 86_401
    assert "100 events a day" in body["error"]
    assert "midnight UTC" in body["error"]


async def test_a_repeat_costs_no_quota_even_when_the_quota_is_used_up(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await _free_org_key(db)
    batch = [event(id=f"q-{i}") for i in range(100)]
    assert (await client.post(EVENTS, json=batch, headers=auth)).status_code == 201
    again = await client.post(EVENTS, json=event(id="q-7"), headers=auth)
    assert again.status_code == 200, again.text
    assert again.json()["data"]["counts"] == {"accepted": 0, "duplicates": 1, "rejected": 0}


async def test_in_a_batch_crossing_the_quota_only_the_items_over_it_are_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    auth = await _free_org_key(db)
    first = [event(id=f"q-{i}") for i in range(97)]
    assert (await client.post(EVENTS, json=first, headers=auth)).status_code == 201

    crossing = [event(id=f"r-{i}") for i in range(6)]
    crossing.insert(2, event(id="q-0"))  # a duplicate: free, and reported as one
    crossing.insert(4, event(type=None, id="bad"))  # invalid whatever the quota
    response = await client.post(EVENTS, json=crossing, headers=auth)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [a["index"] for a in data["accepted"]] == [0, 1, 3]
    assert [d["index"] for d in data["duplicates"]] == [2]
    rejected = {r["index"]: r for r in data["rejected"]}
    assert set(rejected) == {4, 5, 6, 7}
    assert rejected[4]["code"] == "VALIDATION_ERROR"
    assert rejected[4]["field"] == "type"
    for index in (5, 6, 7):
        assert rejected[index]["code"] == "QUOTA_EXCEEDED"
        assert "100 events a day" in rejected[index]["message"]

    listed = await client.get(f"{EVENTS}?from=-1h&limit=100", headers=auth)
    stored = {e["event_id"] for e in listed.json()["data"]["events"]}
    assert {"r-0", "r-1", "r-2"} <= stored
    assert not {"r-3", "r-4", "r-5", "bad"} & stored
    assert len(stored) == 100


# -- UNAVAILABLE 503 ---------------------------------------------------------------------


@pytest.fixture
def dead_database() -> Iterator[tuple[Settings, Database]]:
    """A PostgreSQL URL where nothing listens; not parametrized over backends."""
    url = "postgresql://postgres@127.0.0.1:1/nothing"
    database = Database(url)
    try:
        yield Settings(database_url=url, retention_purge_interval_seconds=0), database
    finally:
        database.close()


async def test_a_database_that_does_not_answer_gives_503_with_retry_after_never_500(
    dead_database: tuple[Settings, Database],
) -> None:
    settings, database = dead_database
    transport = httpx.ASGITransport(app=create_app(settings, database=database))
    auth = {"Authorization": f"Bearer {mint_token()}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        responses = [
            await http.get("/readyz"),
            await http.get(EVENTS, headers=auth),
            await http.post(EVENTS, json=event(), headers=auth),
            await http.get(f"{EVENTS}/{uuid.uuid4()}", headers=auth),
        ]
        health = await http.get("/healthz")
    for response in responses:
        body = expect(response, 503, "UNAVAILABLE")
        assert int(response.headers["retry-after"]) > 0
        assert "retry" in body["error"]
    assert health.status_code == 200
