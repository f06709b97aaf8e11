"""`Trailmap` and `AsyncTrailmap` against a real server, and through a stand-in that answers
429 and 503 before it forwards."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from tests.sdk.support import Answer, LiveServer, new_source, stand_in
from trailmap_sdk import (
    ApiError,
    AsyncTrailmap,
    Event,
    EventRejected,
    RetriesExhausted,
    RetryPolicy,
    Trailmap,
    retry_after_seconds,
    wire,
)

# -- against the real server ---------------------------------------------------------------


def test_a_sent_deployment_is_stored_with_every_field(live: LiveServer) -> None:
    source = new_source()
    event = Event(
        type="deployment",
        source=source,
        subject="production",
        version="v1.4.2",
        service="checkout",
        description="checkout v1.4.2 to production",
        data={"commit": "abc123"},
    )
    with Trailmap(live.url, live.token) as client:
        result = client.send(event)
    assert result.ok
    assert result.attempts == 1
    assert [s.event_id for s in result.accepted] == [event.id]
    [stored] = live.events_from(source)
    assert stored["trailmap_id"] == result.accepted[0].id
    assert stored["id"] == event.id
    assert stored["type"] == "deployment"
    assert stored["subject"] == "production"
    assert stored["version"] == "v1.4.2"
    assert stored["service"] == "checkout"
    assert stored["description"] == "checkout v1.4.2 to production"
    assert stored["data"] == {"commit": "abc123", "description": "checkout v1.4.2 to production"}


def test_an_event_sent_twice_is_stored_once_and_reported_as_a_duplicate(
    live: LiveServer,
) -> None:
    event = Event(type="config-change", source=new_source())
    with Trailmap(live.url, live.token) as client:
        first = client.send(event)
        again = client.send(event)
    assert len(first.accepted) == 1
    assert again.accepted == ()
    assert [d.id for d in again.duplicates] == [first.accepted[0].id]
    assert len(live.events_from(event.source)) == 1


def test_a_batch_stores_the_valid_events_and_names_the_invalid_one_by_index(
    live: LiveServer,
) -> None:
    source = new_source()
    events: list[Event | dict[str, str]] = [
        Event(type="deployment", source=source, version="v1"),
        {"type": "deployment", "source": source, "time": "2026-01-01T00:00:00"},  # no zone
        Event(type="rollback", source=source, version="v0"),
    ]
    with Trailmap(live.url, live.token) as client:
        result = client.send_many(events)
    assert [s.index for s in result.accepted] == [0, 2]
    [rejected] = result.rejected
    assert rejected.index == 1
    assert rejected.code == "VALIDATION_ERROR"
    assert rejected.field == "time"
    assert not result.ok
    assert sorted(e["type"] for e in live.events_from(source)) == ["deployment", "rollback"]


def test_a_batch_of_which_nothing_is_valid_is_a_result_not_an_error(live: LiveServer) -> None:
    source = new_source()
    with Trailmap(live.url, live.token) as client:
        result = client.send_many([{"type": "x", "source": source, "time": "yesterday-ish"}] * 2)
    assert [r.index for r in result.rejected] == [0, 1]
    assert result.accepted == result.duplicates == ()


def test_more_than_a_thousand_events_go_in_several_requests_indexed_as_given(
    live: LiveServer,
) -> None:
    source = new_source()
    events = [Event(type="data-load", source=source, id=f"load-{n}") for n in range(1201)]
    with Trailmap(live.url, live.token) as client:
        result = client.send_many(events)
    assert result.ok
    assert [s.index for s in result.stored] == list(range(1201))
    assert [s.event_id for s in result.stored] == [e.id for e in events]


def test_a_single_invalid_event_raises_with_the_servers_details(live: LiveServer) -> None:
    with Trailmap(live.url, live.token) as client, pytest.raises(EventRejected) as raised:
        client.send({"type": "deployment", "source": "has spaces in it"})
    assert raised.value.status == 400
    assert raised.value.code == "VALIDATION_ERROR"
    assert "source" in raised.value.message
    assert raised.value.details[0]["field"] == "source"


def test_a_wrong_key_is_refused_once_and_never_retried(live: LiveServer) -> None:
    waits: list[float] = []
    with stand_in(live.url, []) as proxy:
        client = Trailmap(proxy.url, "tmk_not_a_real_key", sleep=waits.append)
        with client, pytest.raises(ApiError) as raised:
            client.send(Event(type="deployment", source=new_source()))
    assert raised.value.status == 401
    assert raised.value.code == "UNAUTHORIZED"
    assert len(proxy.requests) == 1
    assert waits == []


def test_the_key_is_sent_as_a_bearer_token_and_never_shown_in_the_clients_repr(
    live: LiveServer,
) -> None:
    with stand_in(live.url, []) as proxy, Trailmap(proxy.url, live.token) as client:
        client.send(Event(type="deployment", source=new_source()))
        assert live.token not in repr(client)
    assert proxy.requests[0]["headers"]["Authorization"] == f"Bearer {live.token}"
    assert proxy.requests[0]["headers"]["User-Agent"].startswith("trailmap-sdk-python/")


def test_url_and_key_default_to_the_environment(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAILMAP_URL", live.url)
    monkeypatch.setenv("TRAILMAP_API_KEY", live.token)
    source = new_source()
    with Trailmap() as client:
        assert client.send(Event(type="deployment", source=source)).ok
    assert len(live.events_from(source)) == 1


@pytest.mark.anyio
async def test_the_async_client_sends_one_event_and_a_batch(live: LiveServer) -> None:
    source = new_source()
    async with AsyncTrailmap(live.url, live.token) as client:
        one = await client.send(Event(type="deployment", source=source, version="v2"))
        many = await client.send_many(
            [Event(type="incident", source=source, severity="MAJOR") for _ in range(3)]
        )
    assert len(one.accepted) == 1
    assert len(many.accepted) == 3
    stored = live.events_from(source)
    assert sorted(e["type"] for e in stored) == ["deployment", "incident", "incident", "incident"]
    assert {e.get("severity") for e in stored if e["type"] == "incident"} == {"MAJOR"}


# -- retries, through the stand-in -----------------------------------------------------------


def test_a_429_with_retry_after_is_waited_out_then_the_event_is_stored(
    live: LiveServer,
) -> None:
    waits: list[float] = []
    source = new_source()
    with (
        stand_in(live.url, [Answer(429, {"Retry-After": "7"})]) as proxy,
        Trailmap(proxy.url, live.token, sleep=waits.append) as client,
    ):
        result = client.send(Event(type="deployment", source=source))
    assert result.attempts == 2
    assert len(proxy.requests) == 2
    # Retry-After is a floor; the jittered backoff of a first retry is at most 0.5 s.
    assert waits == [7.0]
    assert len(live.events_from(source)) == 1


def test_retry_after_as_an_http_date_is_honoured(live: LiveServer) -> None:
    waits: list[float] = []
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    with (
        stand_in(live.url, [Answer(429, {"Retry-After": later})]) as proxy,
        Trailmap(proxy.url, live.token, sleep=waits.append) as client,
    ):
        client.send(Event(type="deployment", source=new_source()))
    assert len(waits) == 1
    assert 28.0 <= waits[0] <= 30.0


def test_a_retry_after_beyond_the_cap_is_waited_only_up_to_the_cap(live: LiveServer) -> None:
    waits: list[float] = []
    policy = RetryPolicy(max_retries=2, max_retry_after=5.0)
    with (
        stand_in(live.url, [Answer(503, {"Retry-After": "3600"})]) as proxy,
        Trailmap(proxy.url, live.token, retry=policy, sleep=waits.append) as client,
    ):
        client.send(Event(type="deployment", source=new_source()))
    assert waits == [5.0]


def test_503_twice_then_stored_once_although_the_first_attempt_had_landed(
    live: LiveServer,
) -> None:
    waits: list[float] = []
    source = new_source()
    event = Event(type="deployment", source=source, version="v3")
    script = [Answer(503, land_first=True), Answer(503)]
    with (
        stand_in(live.url, script) as proxy,
        Trailmap(proxy.url, live.token, sleep=waits.append) as client,
    ):
        result = client.send(event)
    assert len(proxy.requests) == 3
    # Every attempt carried the id fixed before the first: the retry was a duplicate.
    assert {r["body"]["id"] for r in proxy.requests} == {event.id}
    assert result.accepted == ()
    assert [d.event_id for d in result.duplicates] == [event.id]
    assert result.attempts == 3
    # Full jitter: the n-th wait is somewhere in [0, 0.5 * 2**n].
    assert len(waits) == 2
    assert 0 <= waits[0] <= 0.5
    assert 0 <= waits[1] <= 1.0
    assert len(live.events_from(source)) == 1


def test_a_plain_mapping_gets_its_id_before_the_first_attempt(live: LiveServer) -> None:
    source = new_source()
    with (
        stand_in(live.url, [Answer(503, land_first=True)]) as proxy,
        Trailmap(proxy.url, live.token, sleep=lambda _s: None) as client,
    ):
        result = client.send({"type": "deployment", "source": source})
    first, second = (r["body"] for r in proxy.requests)
    assert first["id"] == second["id"]
    assert first["time"] == second["time"]
    assert len(result.duplicates) == 1
    assert len(live.events_from(source)) == 1


def test_the_client_gives_up_after_its_retries_with_the_last_answer(live: LiveServer) -> None:
    waits: list[float] = []
    with stand_in(live.url, [Answer(503)] * 3) as proxy:
        client = Trailmap(proxy.url, live.token, max_retries=2, sleep=waits.append)
        with client, pytest.raises(RetriesExhausted) as raised:
            client.send(Event(type="deployment", source=new_source()))
    assert len(proxy.requests) == 3
    assert len(waits) == 2  # no pointless wait after the last attempt
    assert str(raised.value) == "gave up after 3 attempts; last: 503 try again shortly"
    assert raised.value.last_error is not None
    assert raised.value.last_error.code == "UNAVAILABLE"


def test_a_server_that_cannot_be_reached_is_retried_then_reported() -> None:
    waits: list[float] = []
    with stand_in("http://127.0.0.1:9", []) as closed:
        url = closed.url  # nothing listens here once the stand-in is gone
    client = Trailmap(url, "tmk_x", max_retries=2, sleep=waits.append)
    with client, pytest.raises(RetriesExhausted, match="could not reach") as raised:
        client.send(Event(type="deployment", source="//ci/acme"))
    assert isinstance(raised.value.__cause__, httpx.ConnectError)
    assert len(waits) == 2


@pytest.mark.anyio
async def test_the_async_client_retries_429_and_503_as_the_sync_one_does(
    live: LiveServer,
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    source = new_source()
    script = [Answer(429, {"Retry-After": "2"}), Answer(503, land_first=True), Answer(503)]
    with stand_in(live.url, script) as proxy:
        async with AsyncTrailmap(proxy.url, live.token, sleep=sleep) as client:
            result = await client.send(Event(type="deployment", source=source))
    assert len(proxy.requests) == 4
    assert waits[0] == 2.0
    assert len(waits) == 3
    assert result.attempts == 4
    assert len(result.duplicates) == 1
    assert len(live.events_from(source)) == 1


# -- Retry-After, read ------------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_or_as_the_time_left_until_a_date() -> None:
    now = datetime(2026, 3, 10, 7, 27, 30, tzinfo=UTC).timestamp()
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Tue, 10 Mar 2026 07:28:00 GMT", now=now) == 30.0
    assert retry_after_seconds("Tue, 10 Mar 2026 07:00:00 GMT", now=now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("-5") is None
    assert retry_after_seconds(None) is None


def test_an_event_time_without_a_zone_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="time zone"):
        Event(type="deployment", source="//ci/acme", time=datetime(2026, 1, 1))  # noqa: DTZ001


def test_a_batch_is_split_by_count_and_by_size_and_a_huge_event_goes_alone() -> None:
    events = [{"id": str(n), "data": "x" * 100} for n in range(7)]
    by_count = list(wire.chunks(events, max_batch=3))
    assert [(c.offset, c.count) for c in by_count] == [(0, 3), (3, 3), (6, 1)]
    assert [e["id"] for e in json.loads(by_count[1].body)] == ["3", "4", "5"]
    by_size = list(wire.chunks(events, max_bytes=300))
    assert [(c.offset, c.count) for c in by_size] == [(0, 2), (2, 2), (4, 2), (6, 1)]
    assert all(len(c.body) <= 300 for c in by_size)
    huge = [{"id": "a"}, {"id": "b", "data": "x" * 1000}, {"id": "c"}]
    assert [(c.offset, c.count) for c in wire.chunks(huge, max_bytes=300)] == [
        (0, 1),
        (1, 1),
        (2, 1),
    ]
