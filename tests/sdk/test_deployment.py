"""`client.deployment(...)`: a start, then a success or a failure, on the real server."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sdk.support import Answer, LiveServer, new_source, stand_in
from trailmap_sdk import AsyncTrailmap, RetriesExhausted, RetryPolicy, Trailmap


class MigrationFailed(Exception):
    pass


def _oldest_first(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: e["data"]["status"] != "started")


def test_a_deployment_that_succeeds_reports_its_start_then_a_deployment(
    live: LiveServer,
) -> None:
    source = new_source()
    with Trailmap(live.url, live.token, source=source) as client:
        with client.deployment(
            service="checkout", version="v1.4.2", environment="production"
        ) as deploy:
            deploy.data["url"] = "https://ci.example.com/runs/42"
        assert deploy.errors == []
    started, done = _oldest_first(live.events_from(source))
    assert started["type"] == "deployment-started"
    assert started["id"] == f"{deploy.id}.started"
    assert started["description"] == "checkout v1.4.2 to production: started"
    assert done["type"] == "deployment"
    assert done["id"] == f"{deploy.id}.succeeded"
    assert done["description"] == "checkout v1.4.2 to production"
    for event in (started, done):
        assert event["service"] == "checkout"
        assert event["version"] == "v1.4.2"
        assert event["subject"] == "production"
        assert event["data"]["deployment_id"] == deploy.id
    assert done["data"]["status"] == "succeeded"
    assert done["data"]["url"] == "https://ci.example.com/runs/42"
    assert done["data"]["duration_seconds"] >= 0
    assert "severity" not in done


def test_a_deployment_that_raises_reports_a_failure_and_the_error_goes_on(
    live: LiveServer,
) -> None:
    source = new_source()
    with (
        Trailmap(live.url, live.token) as client,
        pytest.raises(MigrationFailed),
        client.deployment(
            service="payments", version="v7", environment="staging", source=source
        ) as deploy,
    ):
        raise MigrationFailed("column already exists; password=hunter2")
    started, failed = _oldest_first(live.events_from(source))
    assert started["type"] == "deployment-started"
    assert failed["type"] == "deployment"
    assert failed["severity"] == "MAJOR"
    assert failed["data"]["status"] == "failed"
    assert failed["data"]["deployment_id"] == deploy.id
    assert failed["data"]["error"]["type"] == "MigrationFailed"
    assert failed["description"] == "payments v7 to staging: failed (MigrationFailed)"
    # The type, never the message: a message may carry a secret.
    assert "hunter2" not in str(failed)


def test_a_deployment_goes_on_when_trailmap_cannot_be_told(live: LiveServer) -> None:
    policy = RetryPolicy(max_retries=0)
    ran = []
    with (
        stand_in(live.url, [Answer(503)] * 2) as proxy,
        Trailmap(proxy.url, live.token, retry=policy) as client,
        client.deployment(service="checkout", version="v2") as deploy,
    ):
        ran.append(True)
    assert ran == [True]
    assert [type(e) for e in deploy.errors] == [RetriesExhausted, RetriesExhausted]


def test_raise_errors_stops_a_deployment_that_trailmap_cannot_hear_of(
    live: LiveServer,
) -> None:
    policy = RetryPolicy(max_retries=0)
    ran = []
    with (
        stand_in(live.url, [Answer(503)]) as proxy,
        Trailmap(proxy.url, live.token, retry=policy) as client,
        pytest.raises(RetriesExhausted),
        client.deployment(service="checkout", raise_errors=True),
    ):
        ran.append(True)
    assert ran == []


@pytest.mark.anyio
async def test_the_async_deployment_reports_success_and_failure(live: LiveServer) -> None:
    source = new_source()
    async with AsyncTrailmap(live.url, live.token, source=source) as client:
        async with client.deployment(service="search", version="v1", environment="production"):
            pass
        with pytest.raises(TimeoutError):
            async with client.deployment(service="search", version="v2", environment="production"):
                raise TimeoutError
    events = live.events_from(source)
    by_version = {
        (e["version"], e["type"]) for e in events if e["data"]["deployment_id"] is not None
    }
    assert by_version == {
        ("v1", "deployment-started"),
        ("v1", "deployment"),
        ("v2", "deployment-started"),
        ("v2", "deployment"),
    }
    [failed] = [e for e in events if e["data"]["status"] == "failed"]
    assert failed["data"]["error"]["type"] == "TimeoutError"
