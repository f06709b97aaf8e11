"""Integrations from the command line: made with a service map (URL and secret printed once),
listed, their deliveries read, the secret rotated, removed."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from click.testing import Result

from tests.cli.test_commands import invoke
from tests.factories import make_org
from tests.git_server import make_repository, publish
from tests.integrations.support import SECRET_KEY, fixture_bytes, github_headers
from tests.kube_api import kubeconfig
from trailmap.app import create_app
from trailmap.graph.learn.declared import declared_sources
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        secret_key=SECRET_KEY,
        public_url="http://testserver",
    )


@pytest.fixture
async def server(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def _run(database_url: str, *args: str, secret_key: str | None = SECRET_KEY) -> Result:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAILMAP_PUBLIC_URL", "http://testserver")
        if secret_key is None:
            patch.delenv("TRAILMAP_SECRET_KEY", raising=False)
        else:
            patch.setenv("TRAILMAP_SECRET_KEY", secret_key)
        return await anyio.to_thread.run_sync(functools.partial(invoke, database_url, *args))


async def _cli(database_url: str, *args: str) -> list[str]:
    result = await _run(database_url, *args)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


async def test_an_integration_made_on_the_command_line_receives_signed_deliveries(
    database_url: str, db: Database, server: httpx.AsyncClient
) -> None:
    org = await make_org(db)
    [printed] = await _cli(
        database_url,
        "integration",
        "create",
        "--org",
        org.slug,
        "--kind",
        "github",
        "--name",
        "acme-github",
        "--service-map",
        "Codertocat/Hello-World=hello",
        "--set",
        "branch=trunk",
    )
    made = json.loads(printed)
    url, secret = made["webhook_url"], made["secret"]
    assert made["settings"] == {"services": {"Codertocat/Hello-World": "hello"}, "branch": "trunk"}
    assert url.startswith("http://testserver/api/v1/integrations/")
    assert url.endswith("/webhook")
    [listed] = [
        json.loads(line)
        for line in await _cli(database_url, "integration", "list", "--org", org.slug, "--json")
    ]
    assert listed["settings"]["services"] == {"Codertocat/Hello-World": "hello"}
    assert secret not in json.dumps(listed)
    body = fixture_bytes("github-webhooks", "ping.json")
    answer = await server.post(
        url, content=body, headers=github_headers(body, secret, "ping", "p1")
    )
    assert answer.status_code == 200, answer.text
    [line] = await _cli(database_url, "integration", "deliveries", listed["id"], "--org", org.slug)
    assert line.split("\t")[1:4] == ["p1", "ping", "ignored"]
    [new_secret] = await _cli(
        database_url,
        "integration",
        "rotate-secret",
        listed["id"],
        "--org",
        org.slug,
        "--overlap",
        "0",
    )
    refused = await server.post(url, content=body, headers=github_headers(body, secret, "ping"))
    accepted = await server.post(
        url, content=body, headers=github_headers(body, new_secret, "ping")
    )
    assert (refused.status_code, accepted.status_code) == (401, 200)
    [updated] = await _cli(
        database_url,
        "integration",
        "update",
        listed["id"],
        "--org",
        org.slug,
        "--status",
        "disabled",
        "--set",
        "branch=",
    )
    assert json.loads(updated)["status"] == "disabled"
    assert "branch" not in json.loads(updated)["settings"]
    disabled = await server.post(
        url, content=body, headers=github_headers(body, new_secret, "ping")
    )
    assert disabled.status_code == 404
    await _cli(database_url, "integration", "delete", listed["id"], "--org", org.slug)
    assert await _cli(database_url, "integration", "list", "--org", org.slug) == []
    gone = await server.post(url, content=body, headers=github_headers(body, new_secret, "ping"))
    assert gone.status_code == 404


async def test_without_a_secret_key_or_with_a_bad_service_map_the_command_says_why(
    database_url: str, db: Database
) -> None:
    org = await make_org(db)
    args = ("integration", "create", "--org", org.slug, "--kind", "gitlab", "--name", "lab")
    no_key = await _run(database_url, *args, secret_key=None)
    assert no_key.exit_code != 0
    assert "TRAILMAP_SECRET_KEY" in no_key.output
    bad_map = await _run(database_url, *args, "--service-map", "no-equals-sign")
    assert bad_map.exit_code != 0
    assert "owner/name=service" in bad_map.output
    unknown = await _run(database_url, *args, "--set", "colour=blue")
    assert unknown.exit_code != 0
    assert "settings.colour" in unknown.output


async def test_a_cluster_integration_is_made_from_a_kubeconfig_file_never_printed(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    org = await make_org(db)
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig("https://k8s.example.com", "cluster-token-not-printed"))
    [printed] = await _cli(
        database_url,
        "integration",
        "create",
        "--org",
        org.slug,
        "--kind",
        "kubernetes",
        "--name",
        "prod-cluster",
        "--kubeconfig-file",
        str(config),
        "--env-map",
        "shop=production",
        "--namespace",
        "shop",
        "--set",
        "cluster=prod",
    )
    made = json.loads(printed)
    assert "cluster-token-not-printed" not in printed
    assert made["kubeconfig_set"] is True
    assert made["settings"] == {
        "services": {},
        "cluster": "prod",
        "env_map": {"shop": "production"},
        "namespaces": ["shop"],
    }
    assert made["watch"]["watching"] is False


async def test_a_repository_is_indexed_on_the_command_line_and_forgotten_when_deleted(
    database_url: str, db: Database, tmp_path: Path
) -> None:
    org = await make_org(db, slug="acme")
    head = make_repository(
        tmp_path / "work",
        {"compose.yaml": "services:\n  api:\n    environment:\n      DB_HOST: db\n  db: {}\n"},
    )
    bare = publish(tmp_path / "work", tmp_path / "shop.git")
    made = json.loads(
        "\n".join(
            await _cli(
                database_url,
                *("integration", "create", "--org", "acme", "--kind", "repository"),
                *("--name", "shop", "--set", f"url={bare.as_uri()}"),
            )
        )
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAILMAP_REPOSITORY_PATHS", str(tmp_path))
        indexed = json.loads(
            "\n".join(await _cli(database_url, "integration", "index", made["id"], "--org", "acme"))
        )
    assert indexed["revision"] == head
    assert indexed["recorded"]["edges"] == 1
    (source,) = await declared_sources(db, org.id)
    assert (source["revision"], source["nodes"]) == (head, 2)

    refused = await _run(database_url, "integration", "index", made["id"], "--org", "acme")
    assert refused.exit_code == 1
    assert "TRAILMAP_REPOSITORY_PATHS" in refused.output

    await _cli(database_url, "integration", "delete", made["id"], "--org", "acme")
    assert await declared_sources(db, org.id) == []
