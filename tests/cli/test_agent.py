"""`trailmap agent kubernetes` as a process: it watches a loopback Kubernetes API server and
pushes to a live Trailmap server, and a restart from its state file sends nothing old."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kube_api import KubeApi, kubeconfig
from tests.server import module_database, org_with_key, running_server, stop
from tests.upstream import UPSTREAM

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[tuple[str, str]]:
    """A Trailmap server process and a READ_WRITE key of its organization."""
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_agent") as (
        url,
        directory,
    ):
        key = org_with_key(url, "acme")
        with running_server(url, log_path=directory / "server.log") as base_url:
            yield base_url, key


def _deployment() -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(
        (UPSTREAM / "kubernetes" / "deployment.available.json").read_text()
    )
    obj["kind"] = "Deployment"
    return obj


def _rolled_out(revision: int, tag: str) -> dict[str, Any]:
    new = _deployment()
    new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = str(revision)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = f"guestbook:{tag}"
    return new


@asynccontextmanager
async def agent(
    cluster: KubeApi, base_url: str, key: str, folder: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    config = folder / "kubeconfig"
    config.write_text(kubeconfig(cluster.url, cluster.token))
    state = folder / "state.json"
    environment = {**os.environ, "TRAILMAP_AGENT_KEY": key, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "trailmap.cli.main",
        "agent",
        "kubernetes",
        "--url",
        base_url,
        "--key-env",
        "TRAILMAP_AGENT_KEY",
        "--kubeconfig",
        str(config),
        "--cluster",
        "kind-ci",
        "--env-map",
        "default=production",
        "--state-file",
        str(state),
    ]
    process = _start(command, environment, folder / "agent.log")
    try:
        for _ in range(400):
            assert process.poll() is None, (folder / "agent.log").read_text()
            if state.exists():
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the agent saved no state within 20 s")
        yield process
    finally:
        stop(process)


def _start(command: list[str], environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment)


async def _at_least(base_url: str, key: str, count: int) -> list[dict[str, Any]]:
    for _ in range(100):
        events = await _events(base_url, key)
        if len(events) >= count:
            return events
        await asyncio.sleep(0.1)
    pytest.fail(f"fewer than {count} events arrived within 10 s")


async def _events(base_url: str, key: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{base_url}/api/v1/events",
            params={
                "from": "-1000d",
                "source": "//kind-ci/apis/apps/v1/namespaces/default/deployments/guestbook-ui",
            },
            headers={"Authorization": f"Bearer {key}"},
        )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]["events"]
    return events


async def test_the_agent_pushes_a_rollout_and_a_restart_pushes_nothing_old(
    live: tuple[str, str], tmp_path: Path
) -> None:
    base_url, key = live
    cluster = KubeApi()
    cluster.load("Deployment", [_deployment()])
    await cluster.start()
    try:
        async with agent(cluster, base_url, key, tmp_path):
            await asyncio.sleep(0.3)
            assert await _events(base_url, key) == []  # the first list is known state
            await cluster.apply(_rolled_out(6, "0.3"))
            (event,) = await _at_least(base_url, key, 1)
            assert (event["type"], event["version"], event["subject"]) == (
                "deployment",
                "0.3",
                "production",
            )
            assert event["service"] == "guestbook-ui"
            # Stopped at once (SIGTERM): it saves its state on the way out.
        async with agent(cluster, base_url, key, tmp_path):
            await asyncio.sleep(1.0)
            assert len(await _events(base_url, key)) == 1
            await cluster.apply(_rolled_out(7, "0.4"))
            events = await _at_least(base_url, key, 2)
        assert [event["version"] for event in events] == ["0.4", "0.3"]
        log = (tmp_path / "agent.log").read_text()
        assert key not in log
        assert "sent 1 events: 1 stored" in log
        assert "already stored" in log
        assert "sent 1 events: 0 stored, 1 already stored" not in log  # nothing old re-sent
    finally:
        await cluster.stop()


def test_the_agent_refuses_to_start_without_its_key_in_the_environment(tmp_path: Path) -> None:
    from click.testing import CliRunner  # noqa: PLC0415

    from trailmap.cli.main import cli  # noqa: PLC0415

    result = CliRunner().invoke(
        cli,
        ["agent", "kubernetes", "--url", "http://127.0.0.1:9", "--state-file", str(tmp_path / "s")],
        env={"TRAILMAP_API_KEY": ""},
    )
    assert result.exit_code == 2
    assert "set TRAILMAP_API_KEY" in result.output


async def test_a_batch_the_server_refuses_for_good_is_reported_and_not_retried(
    live: tuple[str, str],
) -> None:
    from trailmap.cli.agent import Remote, remote_sink  # noqa: PLC0415

    base_url, key = live
    lines: list[str] = []
    sink = remote_sink(Remote(url=base_url, api_key=key, attempts=2), lines.append)
    no_zone = {
        "specversion": "1.0",
        "id": "k8s-refused",
        "type": "deployment",
        "source": "//kind-ci/refused",
        "time": "2026-01-01T00:00:00",
    }
    await sink([no_zone])  # returns: retrying cannot make it valid
    assert lines
    assert lines[-1].startswith("1 events refused: 400")


@pytest.mark.parametrize("choice", [[], ["--all", "--cluster", "prod"]], ids=["neither", "both"])
def test_the_eks_agent_takes_named_clusters_or_all_of_them(
    choice: list[str], tmp_path: Path
) -> None:
    from click.testing import CliRunner  # noqa: PLC0415

    from trailmap.cli.main import cli  # noqa: PLC0415

    result = CliRunner().invoke(
        cli,
        [
            *("agent", "eks", "--url", "http://127.0.0.1:9", "--region", "eu-west-1"),
            *("--state-dir", str(tmp_path), *choice),
        ],
        env={"TRAILMAP_API_KEY": "tmk_x"},
    )
    assert result.exit_code == 2
    assert "--cluster, or give --all" in result.output


def test_a_bad_namespace_mapping_is_refused_naming_the_option(tmp_path: Path) -> None:
    from click.testing import CliRunner  # noqa: PLC0415

    from trailmap.cli.main import cli  # noqa: PLC0415

    result = CliRunner().invoke(
        cli,
        [
            *("agent", "kubernetes", "--url", "http://127.0.0.1:9", "--env-map", "production"),
            *("--state-file", str(tmp_path / "s")),
        ],
        env={"TRAILMAP_API_KEY": "tmk_x"},
    )
    assert result.exit_code == 2
    assert "--env-map" in result.output
    assert "NAMESPACE=ENVIRONMENT" in result.output
