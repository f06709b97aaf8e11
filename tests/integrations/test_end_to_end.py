"""Each forge end to end, on SQLite and PostgreSQL: a real `trailmap serve`, a GitHub and a
GitLab integration, the upstream deployment payloads (their times moved to now) delivered as
the forges deliver them, and the official MCP client asking `query_events` what was deployed
today: both deployments, under the services the integrations map their repositories to."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.factories import make_key
from tests.integrations.support import (
    SECRET_KEY,
    fixture_bytes,
    github_headers,
    gitlab_headers,
    make_integration,
)
from tests.server import module_database, running_server
from trailmap.accounts import create_org
from trailmap.integrations.integrations import webhook_path
from trailmap.storage import Database, migrate

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Site:
    base_url: str
    reader: str
    github: tuple[str, str]  # webhook path, secret
    gitlab: tuple[str, str]


def _seed(url: str) -> tuple[str, tuple[str, str], tuple[str, str]]:
    async def seed() -> tuple[str, tuple[str, str], tuple[str, str]]:
        db = Database(url)
        try:
            migrate.upgrade(db)
            org = await create_org(db, "acme")
            hub, hub_secret = await make_integration(
                db,
                org,
                name="acme-github",
                settings={"services": {"Codertocat/Hello-World": "hello-web"}},
            )
            lab, lab_secret = await make_integration(
                db,
                org,
                kind="gitlab",
                name="acme-gitlab",
                settings={"services": {"root/test-deployment-webhooks": "deployer"}},
            )
            reader = await make_key(db, org, scope="read-only")
            return (
                reader,
                (webhook_path(hub.id), hub_secret),
                (webhook_path(lab.id), lab_secret),
            )
        finally:
            db.close()

    return asyncio.run(seed())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Site]:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_hooks") as (
        url,
        directory,
    ):
        reader, github, gitlab = _seed(url)
        env = {"TRAILMAP_SECRET_KEY": SECRET_KEY}
        with running_server(url, log_path=directory / "server.log", env=env) as base_url:
            yield Site(base_url, reader, github, gitlab)


def _github_deployment(now: datetime) -> bytes:
    payload = orjson.loads(
        fixture_bytes("github-webhooks", "deployment_status.created.success.json")
    )
    stamp = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    for part in ("deployment", "deployment_status"):
        payload[part]["created_at"] = payload[part]["updated_at"] = stamp
    return orjson.dumps(payload)


def _gitlab_deployment(now: datetime) -> bytes:
    payload = orjson.loads(fixture_bytes("gitlab-webhooks", "deployment.json"))
    payload["status_changed_at"] = now.strftime("%Y-%m-%d %H:%M:%S +0000")
    return orjson.dumps(payload)


async def _ask(site: Site, args: dict[str, Any]) -> dict[str, Any]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {site.reader}"})
    transport = streamable_http_client(f"{site.base_url}/mcp", http_client=http)
    async with http, Client(transport) as client:
        result = await client.call_tool("query_events", args)
    assert not result.is_error, result.content
    answer: dict[str, Any] | None = result.structured_content
    assert answer is not None
    return answer


async def test_what_was_deployed_today_answers_from_github_and_gitlab_deliveries(
    site: Site,
) -> None:
    # A minute ago, but never before today's midnight (UTC, the default zone).
    now = datetime.now(UTC).replace(microsecond=0)
    when = max(now - timedelta(minutes=1), now.replace(hour=0, minute=0, second=0))
    hub_body = _github_deployment(when)
    lab_body = _gitlab_deployment(when)
    async with httpx.AsyncClient(base_url=site.base_url) as http:
        path, secret = site.github
        hub = await http.post(
            path, content=hub_body, headers=github_headers(hub_body, secret, "deployment_status")
        )
        path, secret = site.gitlab
        lab_headers = gitlab_headers(secret, "Deployment Hook")
        lab = await http.post(path, content=lab_body, headers=lab_headers)
        again = await http.post(path, content=lab_body, headers=lab_headers)  # a redelivery
    assert hub.status_code == 200, hub.text
    assert lab.status_code == 200, lab.text
    assert hub.json()["data"]["outcome"] == lab.json()["data"]["outcome"] == "accepted"
    assert again.json()["data"]["outcome"] == "duplicate"
    answer = await _ask(site, {"from": "today", "type": ["deployment"]})
    deployed = {e["service"]: e for e in answer["events"]}
    assert set(deployed) == {"hello-web", "deployer"}, answer
    # The ids each delivery answered with are the timeline's own: the same events over REST.
    async with httpx.AsyncClient(base_url=site.base_url) as http:
        for answered, service in ((hub, "hello-web"), (lab, "deployer")):
            [made] = answered.json()["data"]["event_ids"]
            found = await http.get(
                f"/api/v1/events/{made}", headers={"Authorization": f"Bearer {site.reader}"}
            )
            assert found.status_code == 200, found.text
            assert found.json()["data"]["service"] == service
            assert found.json()["data"]["id"] == deployed[service]["id"]


async def test_an_event_the_mapping_does_not_read_is_ignored_with_its_reason_not_an_event(
    site: Site,
) -> None:
    path, secret = site.github
    body = fixture_bytes("github-webhooks", "ping.json")
    async with httpx.AsyncClient(base_url=site.base_url) as http:
        answer = await http.post(
            path, content=body, headers=github_headers(body, secret, "watch", "watch-1")
        )
        events = await http.get(
            "/api/v1/events?from=-1d&type=star", headers={"Authorization": f"Bearer {site.reader}"}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["outcome"] == "ignored"
    assert "watch" in answer.json()["data"]["reason"]
    assert events.json()["data"]["events"] == []
